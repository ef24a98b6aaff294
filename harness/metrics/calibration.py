"""Metrics of label scores (eval.scoring=choices): per-character normalised choice accuracy, and calibration.

- `accuracy_norm`: argmax of each label's summed log-probability divided by its length in characters
  (lm-evaluation-harness's `acc_norm`); it undoes the summed score's preference for short labels.
- `calibration`: with p the softmax over an example's label scores and y its one-hot gold label,
  - Brier score: mean over examples of sum_k (p_k - y_k)^2 (0 perfect, 2 certain and wrong); a per-example
    score, so its interval is the bootstrap of a mean.
  - ECE (expected calibration error): examples binned by confidence max_k p_k into 15 equal-width bins on [0, 1]
    (lowest bin closed on both sides, others (a, b]); sum over bins of |bin share| x |accuracy - mean
    confidence| in the bin. Not a per-example mean: its interval resamples examples and recomputes it.
  Both are lower-is-better. A model that is right but always 99% sure has a low ECE only if it is right 99% of
  the time; a model whose first choice is often wrong but whose second is usually right keeps a Brier score
  well below that of a confidently wrong one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.core.stats import bootstrap_statistic
from harness.metrics import LabelScores, MetricResult, register_metric
from harness.metrics.keys import higher, lower

ECE_BINS = 15
# Scored for every choice-scored cell, whatever data.metrics lists (they read what only choice scoring has).
CHOICE_METRICS = ("accuracy_norm", "calibration")


def _gold_index(labels: Sequence[str], references: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({r.strip() for r in references} - set(index))
    if unknown:
        raise ValueError(f"choice metrics: references {unknown} are not among the scored labels {list(labels)}")
    return np.array([index[r.strip()] for r in references], dtype=int)


def brier_per_example(probabilities: np.ndarray, gold: np.ndarray) -> np.ndarray:
    onehot = np.zeros_like(probabilities)
    onehot[np.arange(len(gold)), gold] = 1.0
    return ((probabilities - onehot) ** 2).sum(axis=1)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Equal-width bins on [0, 1]; a confidence on an edge goes to the bin below it (1.0 to the last bin)."""
    if len(confidence) == 0:
        return 0.0
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


@register_metric("accuracy_norm", keys={
    "accuracy_norm": higher("choice accuracy with each label's log-likelihood divided by its length in characters"),
})
class AccuracyNorm:
    """Per-character normalised choice accuracy; per_sample: 1 correct / 0 wrong."""

    name: str
    needs_label_scores = True

    def score(self, predictions: list[str], references: list[str], label_scores: LabelScores) -> MetricResult:
        gold = _gold_index(label_scores.labels, references)
        lengths = np.array([len(label) for label in label_scores.labels], dtype=float)
        chosen = (np.asarray(label_scores.logliks, dtype=float) / lengths).argmax(axis=1)
        correct = (chosen == gold).astype(float)
        return MetricResult(values={"accuracy_norm": float(correct.mean())},
                            per_sample={"accuracy_norm": correct.tolist()})


@register_metric("calibration", keys={
    "brier": lower("multi-class Brier score of the label probabilities (0 perfect, 2 certain and wrong)",
                   0.0, 2.0),
    "ece": lower(f"expected calibration error of the most likely label ({ECE_BINS} equal-width bins)"),
})
class Calibration:
    """Brier score and ECE of the softmax over label scores; per_sample: each example's Brier score."""

    name: str
    needs_label_scores = True

    def score(self, predictions: list[str], references: list[str], label_scores: LabelScores) -> MetricResult:
        probabilities = label_scores.probabilities()
        gold = _gold_index(label_scores.labels, references)
        brier = brier_per_example(probabilities, gold)
        confidence = probabilities.max(axis=1)
        correct = (probabilities.argmax(axis=1) == gold).astype(float)
        ece = expected_calibration_error(confidence, correct)
        low, high = bootstrap_statistic(len(gold), lambda idx: expected_calibration_error(confidence[idx],
                                                                                          correct[idx]))
        return MetricResult(values={"brier": float(brier.mean()), "ece": ece},
                            per_sample={"brier": brier.tolist()},
                            intervals={"ece": {"mean": ece, "low": low, "high": high, "n": len(gold)}})
