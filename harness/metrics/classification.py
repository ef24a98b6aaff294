"""Classification: accuracy and macro-F1 of answers that are a label of the set, and nothing else.

A model asked for "one department from the list" is credited only when its answer IS a label. `LabelParser`
accepts the label after normalising:

- case and runs of whitespace ("home   office" is "Home Office");
- quotes, markdown emphasis, brackets and punctuation around the answer ('"Garden."', "**Kitchen**");
- an optional short lead-in of at most three words and a colon ("Department: Kitchen", "Answer: kitchen").

Anything else is unparseable: a sentence that mentions a label ("The product belongs to the
"libhtml-truncate-perl" package." is not `perl`), an echoed product name that contains one ("golang-xyz" is not
`golang`), two labels, or a label followed by an explanation. Crediting mentions would reward a model for
repeating the question. Unparseable answers count as wrong; they are never dropped from the denominator.

The label set is the constructor's `labels` (in a sweep: the dataset's labels, from `labels.json` beside it,
which the departments recipe writes, the same list every prompt shows), or, with no labels given, the
distinct references.

Macro-F1 averages per-label F1 = 2TP / (2TP + FP + FN) over the labels of the set that occur among the
references or the parsed predictions (a label with neither has no defined F1 and is left out; with the
default label set every label occurs). An unparseable answer is a false negative for its gold label and a
false positive for none. This equals scikit-learn's `f1_score(..., labels=those, average="macro")`. Its 95%
interval is a bootstrap over eval examples: resample the examples, recompute macro-F1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.core.labels import LABELS_FILE, read_labels
from harness.core.stats import bootstrap_statistic
from harness.metrics import MetricResult, register_metric
from harness.metrics.keys import higher, lower

# Stripped from both ends of an answer before the exact comparison: quotes, markdown, brackets, punctuation.
_EDGE = " \t\r\n\"'`*_#>[](){}.,;:!?"
# "Department:", "The answer:", "Predicted label:": at most three words before a colon.
_LEAD_IN = re.compile(r"\s*(?:[^\W\d_]+\s+){0,2}[^\W\d_]+\s*:\s*")


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


class LabelParser:
    """Maps an answer to the one label it is (see the module docstring), or None (unparseable)."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
        if not self.labels:
            raise ValueError("classification: the label set is empty")
        self._exact: dict[str, str] = {}
        for label in self.labels:  # "Toys (Kids)" matches as written and as "Toys (Kids" after edge-stripping
            self._exact.setdefault(_normal(label), label)
            self._exact.setdefault(_normal(label.strip(_EDGE)), label)

    def _match(self, text: str) -> str | None:
        return self._exact.get(_normal(text)) or self._exact.get(_normal(text.strip(_EDGE)))

    def parse(self, text: str) -> str | None:
        found = self._match(text)
        if found is not None:
            return found
        lead_in = _LEAD_IN.match(text.strip(_EDGE.replace(":", "")))
        if lead_in is None:
            return None
        return self._match(text.strip(_EDGE.replace(":", ""))[lead_in.end():])


def classification_scores(parsed: Sequence[str | None], references: Sequence[str],
                          labels: Sequence[str]) -> tuple[dict[str, float], list[float]]:
    """Corpus values (accuracy, macro_f1, unparseable_rate) and per-sample correctness of parsed labels."""
    correct = [1.0 if p is not None and p == r else 0.0 for p, r in zip(parsed, references, strict=True)]
    n = len(references)
    values = {
        "accuracy": sum(correct) / n if n else 0.0,
        "macro_f1": macro_f1(*_encode(parsed, references, labels), len(labels)),
        "unparseable_rate": sum(p is None for p in parsed) / n if n else 0.0,
    }
    return values, correct


def _encode(parsed: Sequence[str | None], references: Sequence[str], labels: Sequence[str]):
    """Labels as integers 0..L-1; an unparseable answer is -1, a reference outside the set is L (no label's)."""
    index = {label: i for i, label in enumerate(labels)}
    predicted = np.array([index.get(p, len(labels)) if p is not None else -1 for p in parsed], dtype=int)
    gold = np.array([index.get(r, len(labels)) for r in references], dtype=int)
    return predicted, gold


def macro_f1(predicted, gold, n_labels: int) -> float:
    """Mean F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + gold counts) over labels that occur on either side."""
    size = n_labels + 1
    true_pos = np.bincount(gold[predicted == gold], minlength=size)[:n_labels]
    predicted_counts = np.bincount(predicted[predicted >= 0], minlength=size)[:n_labels]
    gold_counts = np.bincount(gold, minlength=size)[:n_labels]
    occurring = (predicted_counts + gold_counts) > 0
    if not occurring.any():
        return 0.0
    return float(np.mean(2 * true_pos[occurring] / (predicted_counts + gold_counts)[occurring]))


def macro_f1_interval(parsed: Sequence[str | None], references: Sequence[str], labels: Sequence[str],
                      confidence: float = 0.95, seed: int = 0) -> dict:
    """Macro-F1 with a bootstrap interval over eval examples (resampled, then macro-F1 recomputed)."""
    predicted, gold = _encode(parsed, references, labels)
    low, high = bootstrap_statistic(len(gold), lambda idx: macro_f1(predicted[idx], gold[idx], len(labels)),
                                    confidence=confidence, seed=seed)
    return {"mean": macro_f1(predicted, gold, len(labels)), "low": low, "high": high, "n": len(gold)}


@register_metric("accuracy", keys={
    "accuracy": higher("share of answers that are exactly the gold label"),
    "macro_f1": higher("macro-averaged F1 over the label set"),
    "unparseable_rate": lower("share of answers that are not a label at all"),
})
class Accuracy:
    """Accuracy, macro-F1 and unparseable rate of labels parsed from free-text predictions.

    per_sample: "accuracy" (1 correct / 0 wrong or unparseable) and "unparseable_rate" (1 / 0), whose means
    are the corpus values of the same names; macro-F1 has no per-sample form, so its interval (`intervals`)
    comes from resampling examples and recomputing it.
    """

    name: str

    def __init__(self, labels: Sequence[str] | None = None) -> None:
        self.labels = list(labels) if labels is not None else None

    @classmethod
    def from_dataset(cls, dataset) -> Accuracy:
        """The dataset's full label set (labels.json: a label absent from eval still parses), the same list
        its prompts show."""
        labels = getattr(dataset, "labels", None)
        if labels is None and (Path(dataset.dir) / LABELS_FILE).is_file():
            labels = read_labels(Path(dataset.dir) / LABELS_FILE)
        return cls(labels)

    def label_set(self, references: Sequence[str]) -> list[str]:
        if self.labels is None:
            return list(dict.fromkeys(r.strip() for r in references))
        labels = list(dict.fromkeys(label.strip() for label in self.labels))
        unknown = sorted({r.strip() for r in references} - set(labels))
        if unknown:
            raise ValueError(f"classification: references {unknown} are not in the label set {labels}")
        return labels

    def parse(self, predictions: Sequence[str], references: Sequence[str]) -> list[str | None]:
        parser = LabelParser(self.label_set(references))
        return [parser.parse(p) for p in predictions]

    def score(self, predictions: list[str], references: list[str]) -> MetricResult:
        labels = self.label_set(references)
        parser = LabelParser(labels)
        parsed = [parser.parse(p) for p in predictions]
        gold = [r.strip() for r in references]
        values, correct = classification_scores(parsed, gold, parser.labels)
        return MetricResult(values=values, per_sample={
            "accuracy": correct, "unparseable_rate": [1.0 if p is None else 0.0 for p in parsed]},
            intervals={"macro_f1": macro_f1_interval(parsed, gold, parser.labels)})
