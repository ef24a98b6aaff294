"""Character n-gram similarity (chrF): robust to tokenisation and morphology, unlike word-level BLEU."""

from harness.metrics import LocalEvaluateMetric, register_metric


@register_metric("ngram")
class NGram(LocalEvaluateMetric):
    """Corpus chrF (sacrebleu defaults) on a 0..1 scale; per-sample sentence chrF."""
