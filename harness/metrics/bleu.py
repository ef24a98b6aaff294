"""BLEU: the standard n-gram precision metric for generation, via sacrebleu for comparable scores."""

from harness.metrics import LocalEvaluateMetric, register_metric


@register_metric("bleu")
class Bleu(LocalEvaluateMetric):
    """Corpus BLEU on a 0..1 scale; per-sample sentence BLEU (sacrebleu default smoothing)."""
