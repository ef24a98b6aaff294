"""ROUGE: recall-oriented overlap, the usual summarisation metric."""

from harness.metrics import LocalEvaluateMetric, register_metric


@register_metric("rouge")
class Rouge(LocalEvaluateMetric):
    """Mean per-sample ROUGE-1/2/L F1 with stemming, as HF evaluate's rouge (use_aggregator=False, then mean)."""
