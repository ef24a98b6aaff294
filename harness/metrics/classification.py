"""Classification: read a label out of a free-text answer, then accuracy and macro-F1 over the label set.

A model asked for "one department from the list" may answer "Kitchen", "kitchen.", "**Kitchen**" or "This
belongs in Kitchen". `parse_label` maps such an answer to a label of the set:

1. exact match, ignoring case and runs of whitespace (and quotes/markdown/punctuation around the answer);
2. else the one label mentioned as a whole word or phrase (case-insensitive); where mentions overlap the
   longest wins ("Home Office" hides the "Home" inside it), and two different labels mentioned separately
   make the answer unparseable (we do not guess which one the model meant);
3. else unparseable.

Unparseable answers count as wrong; they are never dropped from the denominator.

The label set is the constructor's `labels` (in a sweep: `labels.json` beside the dataset, which the
departments recipe writes), or, with no labels given, the distinct references. With the latter, a prediction naming a label that happens not to
occur in the eval split reads as unparseable rather than as that label; it is wrong either way.

Macro-F1 averages per-label F1 = 2TP / (2TP + FP + FN) over the labels of the set that occur among the
references or the parsed predictions (a label with neither has no defined F1 and is left out; with the
default label set every label occurs). An unparseable answer is a false negative for its gold label and a
false positive for none. This equals scikit-learn's `f1_score(..., labels=those, average="macro")`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from harness.metrics import MetricResult, register_metric

LABELS_FILE = "labels.json"
# Stripped from both ends of an answer before the exact comparison: quotes, markdown, brackets, punctuation.
_EDGE = " \t\r\n\"'`*_#>[](){}.,;:!?"


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def _mention_pattern(label: str) -> re.Pattern:
    """The label as a whole word or phrase: any whitespace between its words, no word character either side."""
    words = [re.escape(word) for word in label.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


class LabelParser:
    """Maps free text to one label of a fixed set, or None (unparseable)."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
        if not self.labels:
            raise ValueError("classification: the label set is empty")
        self._exact = {_normal(label): label for label in self.labels}
        self._patterns = [(label, _mention_pattern(label)) for label in self.labels]

    def parse(self, text: str) -> str | None:
        exact = self._exact.get(_normal(text)) or self._exact.get(_normal(text.strip(_EDGE)))
        if exact is not None:
            return exact
        spans = [(m.start(), m.end(), label) for label, pattern in self._patterns for m in pattern.finditer(text)]
        # A mention inside a longer mention of another label does not count ("Home" in "Home Office").
        kept = {label for start, end, label in spans
                if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)}
        return kept.pop() if len(kept) == 1 else None


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    return LabelParser(labels).parse(text)


def classification_scores(parsed: Sequence[str | None], references: Sequence[str],
                          labels: Sequence[str]) -> tuple[dict[str, float], list[float]]:
    """Corpus values (accuracy, macro_f1, unparseable_rate) and per-sample correctness of parsed labels."""
    correct = [1.0 if p is not None and p == r else 0.0 for p, r in zip(parsed, references, strict=True)]
    f1s = []
    for label in labels:
        tp = sum(1 for p, r in zip(parsed, references) if p == label and r == label)
        fp = sum(1 for p, r in zip(parsed, references) if p == label and r != label)
        fn = sum(1 for p, r in zip(parsed, references) if p != label and r == label)
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    n = len(references)
    values = {
        "accuracy": sum(correct) / n if n else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "unparseable_rate": sum(p is None for p in parsed) / n if n else 0.0,
    }
    return values, correct


@register_metric("accuracy")
class Accuracy:
    """Accuracy, macro-F1 and unparseable rate of labels parsed from free-text predictions.

    per_sample: "accuracy" (1 correct / 0 wrong or unparseable) and "unparseable_rate" (1 / 0), whose means
    are the corpus values of the same names; macro-F1 has no per-sample form.
    """

    name: str

    def __init__(self, labels: Sequence[str] | None = None) -> None:
        self.labels = list(labels) if labels is not None else None

    @classmethod
    def from_dataset(cls, dataset) -> Accuracy:
        """The full label set from the dataset's labels.json (so a label absent from eval still parses)."""
        path = Path(dataset.dir) / LABELS_FILE
        if not path.is_file():
            return cls()
        try:
            labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: expected {{\"labels\": [...]}} ({exc})") from None
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ValueError(f"{path}: \"labels\" must be a list of strings")
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
        values, correct = classification_scores(parsed, [r.strip() for r in references], parser.labels)
        return MetricResult(values=values, per_sample={
            "accuracy": correct, "unparseable_rate": [1.0 if p is None else 0.0 for p in parsed]})


def fit_predict_tfidf(train_texts: Sequence[str], train_labels: Sequence[str], eval_texts: Sequence[str],
                      seed: int = 0) -> list[str]:
    """A non-LLM reference point: TF-IDF (word 1-2 grams) + logistic regression, fit on train, labels for eval."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if len(train_texts) != len(train_labels):
        raise ValueError("tfidf baseline: train texts and labels differ in length")
    if len(set(train_labels)) < 2:
        raise ValueError(f"tfidf baseline: training needs two or more labels (got {sorted(set(train_labels))})")
    if not eval_texts:
        raise ValueError("tfidf baseline: no eval examples")
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(max_iter=1000, random_state=seed),
    )
    model.fit(list(train_texts), list(train_labels))
    return [str(p) for p in model.predict(list(eval_texts))]


def tfidf_baseline(train_texts: Sequence[str], train_labels: Sequence[str], eval_texts: Sequence[str],
                   eval_labels: Sequence[str], labels: Sequence[str] | None = None, seed: int = 0) -> dict[str, float]:
    """The baseline's accuracy, macro-F1 and unparseable rate, by the same `Accuracy` metric (same label set
    rules) as the models, so the numbers compare. `python -m harness.baseline` writes it as a ledger row."""
    if len(eval_texts) != len(eval_labels):
        raise ValueError("tfidf baseline: eval texts and labels differ in length")
    predicted = fit_predict_tfidf(train_texts, train_labels, eval_texts, seed)
    return Accuracy(labels).score(predicted, list(eval_labels)).values
