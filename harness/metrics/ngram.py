"""Character n-gram similarity (chrF): robust to tokenisation and morphology, unlike word-level BLEU."""

from harness.metrics import LocalEvaluateMetric, register_metric
from harness.metrics.keys import higher


@register_metric("ngram", keys={"chrf": higher("corpus chrF (character n-gram F-score), 0..1")})
class NGram(LocalEvaluateMetric):
    """Corpus chrF (sacrebleu defaults) on a 0..1 scale; per-sample sentence chrF."""
