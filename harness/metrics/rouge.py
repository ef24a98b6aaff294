"""ROUGE: recall-oriented overlap, the usual summarisation metric."""

from harness.metrics import LocalEvaluateMetric, register_metric
from harness.metrics.keys import higher


@register_metric("rouge", keys={key: higher(f"mean per-example {key} F1") for key in ("rouge1", "rouge2", "rougeL")})
class Rouge(LocalEvaluateMetric):
    """Mean per-sample ROUGE-1/2/L F1 with stemming, as HF evaluate's rouge (use_aggregator=False, then mean)."""
