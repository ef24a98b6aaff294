"""BLEU: the standard n-gram precision metric for generation, via sacrebleu for comparable scores."""

from harness.metrics import LocalEvaluateMetric, register_metric
from harness.metrics.keys import higher


@register_metric("bleu", keys={"bleu": higher("corpus BLEU (sacrebleu), 0..1")})
class Bleu(LocalEvaluateMetric):
    """Corpus BLEU on a 0..1 scale; per-sample sentence BLEU (sacrebleu default smoothing)."""
