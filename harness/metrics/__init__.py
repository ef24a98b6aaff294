"""Metric registry: sweeps name metrics in config (`data.metrics`), so each family registers itself by name here."""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from harness.core.registry import Registry
from harness.metrics.keys import KeySpec, declare


@dataclass
class MetricResult:
    """Corpus figures (0..1) plus per-example scores, kept for bootstrap CIs."""

    values: dict[str, float]
    per_sample: dict[str, list[float]]
    # Bootstrap intervals a metric computes itself, for a corpus figure that is no mean of per-sample scores
    # but can be recomputed on resampled examples (macro-F1): {key: {mean, low, high, n}}.
    intervals: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelScores:
    """What choice scoring (eval.scoring=choices) knows beyond the chosen label: every label's summed
    log-probability for every example, in `labels` order."""

    labels: list[str]
    logliks: list[list[float]]

    def probabilities(self) -> np.ndarray:
        """Softmax over each example's label scores: the model's belief spread over the label set."""
        scores = np.asarray(self.logliks, dtype=float)
        scores = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)


class Metric(Protocol):
    name: str

    def score(self, predictions: list[str], references: list[str]) -> MetricResult: ...


METRICS: Registry[Callable[[], Metric]] = Registry("metric", option="data.metrics")


def register_metric(name: str, keys: dict[str, KeySpec]) -> Callable[[type[Any]], type[Any]]:
    """Class decorator: register a metric under `name` (also set as its `name`), with the direction and range
    of every corpus key it produces (see harness/metrics/keys.py); duplicates are bugs."""

    def decorator(cls: type[Any]) -> type[Any]:
        if not keys:
            raise ValueError(f"metric {name!r} must declare the keys it produces and which way is better")
        METRICS.add(name, cls)  # first: a duplicate name is refused before anything is declared
        cls.name = name
        cls.keys = dict(keys)
        declare(keys)
        return cls

    return decorator


def get_metric(name: str, dataset: Any = None) -> Metric:
    """The named metric; given the run's dataset, a metric class with a `from_dataset` classmethod reads what
    it needs from it (the label set, the catalog's product ids) instead of guessing from the references."""
    factory = METRICS.get(name)
    if dataset is not None and hasattr(factory, "from_dataset"):
        return factory.from_dataset(dataset)
    return factory()


def needs_label_scores(name: str) -> bool:
    """Whether the named metric reads label probabilities, which only eval.scoring=choices produces."""
    return bool(getattr(METRICS.get(name), "needs_label_scores", False))


def score_all(names: list[str], predictions: list[str], references: list[str],
              dataset: Any = None, label_scores: LabelScores | None = None) -> dict[str, MetricResult]:
    """Score with every named metric; inputs are checked once here so metrics can assume aligned data. A metric
    that reads label probabilities (`needs_label_scores`) gets `label_scores`, and cannot be scored without."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("cannot score an empty list of predictions")
    metrics = [get_metric(name, dataset) for name in names]  # resolve all names before any (slow) scoring
    results = {}
    for metric in metrics:
        if getattr(metric, "needs_label_scores", False):
            if label_scores is None or len(label_scores.logliks) != len(predictions):
                raise ValueError(f"metric {metric.name!r} needs every example's label probabilities, which only "
                                 "eval.scoring=choices produces")
            result = metric.score(predictions, references, label_scores)
        else:
            result = metric.score(predictions, references)
        results[metric.name] = result
        undeclared = sorted(set(result.values) - set(type(metric).keys))
        if undeclared:  # a ranking would not know which way is better
            raise ValueError(f"metric {metric.name!r} produced undeclared key(s) {undeclared}; declare them in "
                             f"register_metric({metric.name!r}, keys=...)")
    return results


PER_SAMPLE_SUFFIX = "_per_sample"
MODULES_DIR = Path(__file__).parent / "modules"


class LocalEvaluateMetric:
    """Metric backed by the bundled `evaluate` module modules/<name>/<name>.py, so it works offline.

    The module returns corpus figures under plain keys and per-example lists under `<key>_per_sample`.
    """

    name: str

    @cached_property
    def _module(self) -> Any:
        import evaluate  # deferred: pulls in datasets/pyarrow, too heavy for importing the registry

        # keep_in_memory avoids Arrow cache files and file locks under HF_METRICS_CACHE.
        return evaluate.load(str(MODULES_DIR / self.name), keep_in_memory=True)

    def score(self, predictions: list[str], references: list[str]) -> MetricResult:
        out = self._module.compute(predictions=predictions, references=references)
        return MetricResult(
            values={k: float(v) for k, v in out.items() if not k.endswith(PER_SAMPLE_SUFFIX)},
            per_sample={
                k.removesuffix(PER_SAMPLE_SUFFIX): [float(x) for x in v]
                for k, v in out.items()
                if k.endswith(PER_SAMPLE_SUFFIX)
            },
        )


# Imported last: the submodules register themselves using the names defined above.
from harness.metrics import bleu, calibration, classification, ngram, recommendation, rouge, semantic  # noqa: E402, F401, I001
