"""Bootstrap confidence intervals over per-example metric scores (numpy only, seeded, deterministic).

Every interval here is an interval for a MEAN of per-example scores. For metrics whose corpus figure is
itself that mean (ROUGE) the interval is about the reported number. For corpus-level metrics that are not
a mean of per-example scores (corpus BLEU, corpus chrF pool n-gram counts over the whole eval set) the
interval is about the mean of sentence-level scores instead, so it is named `<metric>_sample_mean`
(see `ci_name`) and the corpus figure is reported as is, without an interval.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("harness")

# Corpus figures that are not the mean of their per-sample scores.
CORPUS_NOT_SAMPLE_MEAN = frozenset({"bleu", "chrf"})
SAMPLE_MEAN_SUFFIX = "_sample_mean"
# Resampled means are computed in blocks of at most this many drawn indices, to bound memory.
_BLOCK = 2_000_000


def ci_name(key: str, corpus: float | None = None, sample_mean: float | None = None) -> str:
    """The name under which a per-sample key's interval is reported.

    `key` itself when the corpus figure is the mean of the per-sample scores, else `<key>_sample_mean`:
    always for the known corpus-level metrics (BLEU, chrF), and for any other metric whose corpus value
    visibly differs from the per-sample mean.
    """
    if key in CORPUS_NOT_SAMPLE_MEAN:
        return key + SAMPLE_MEAN_SUFFIX
    if corpus is not None and sample_mean is not None and abs(corpus - sample_mean) > 1e-6:
        return key + SAMPLE_MEAN_SUFFIX
    return key


def _as_array(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: need a non-empty list of numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: contains NaN or infinite values")
    return array


def _check(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1 (got {n_resamples})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement, same size) of `values`."""
    rng = np.random.default_rng(seed)
    n = values.size
    block = max(1, _BLOCK // n)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def _percentiles(means: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(values: list[float], n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and its percentile-bootstrap confidence interval."""
    _check(n_resamples, confidence)
    array = _as_array(values, "bootstrap_ci")
    low, high = _percentiles(_resampled_means(array, n_resamples, seed), confidence)
    return float(array.mean()), low, high


def bootstrap_statistic(n: int, statistic, n_resamples: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of any statistic of n examples that is no mean of per-example scores
    (macro-F1): `statistic(indices)` recomputes it on one resample of example indices."""
    _check(n_resamples, confidence)
    if n < 1:
        raise ValueError("bootstrap_statistic: need at least one example")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_resamples)], dtype=float)
    return _percentiles(values, confidence)


def paired_bootstrap(a: list[float], b: list[float], n_resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Paired bootstrap of the mean difference b - a, with a[i] and b[i] scored on the same example i.

    Example indices are resampled jointly (equivalently: the per-example differences are resampled).
    Returns mean_a, mean_b, mean_diff (observed b - a), low/high (percentile CI of the difference),
    p_value (two-sided: twice the share of resampled differences on the other side of zero from the
    observed one, capped at 1) and n.
    """
    _check(n_resamples, confidence)
    first, second = _as_array(a, "paired_bootstrap a"), _as_array(b, "paired_bootstrap b")
    if first.size != second.size:
        raise ValueError(f"paired_bootstrap: a has {first.size} values but b has {second.size}; "
                         "a paired test needs scores on the same examples")
    diffs = second - first
    observed = float(diffs.mean())
    boot = _resampled_means(diffs, n_resamples, seed)
    low, high = _percentiles(boot, confidence)
    other_side = np.mean(boot <= 0) if observed >= 0 else np.mean(boot >= 0)
    return {
        "mean_a": float(first.mean()),
        "mean_b": float(second.mean()),
        "mean_diff": observed,
        "low": low,
        "high": high,
        "p_value": float(min(1.0, 2.0 * other_side)),
        "n": int(diffs.size),
    }


def verdict(result: dict, confidence: float = 0.95, higher_is_better: bool = True) -> str:
    """One line from a paired_bootstrap result (b - a): which run is better in the metric's direction, if the
    interval excludes zero; otherwise no difference, whatever the sign of the observed one."""
    if result["low"] > 0:
        return "B better" if higher_is_better else "A better"
    if result["high"] < 0:
        return "A better" if higher_is_better else "B better"
    return f"no significant difference at {confidence:.0%}"


def metric_cis(scores: dict, seed: int, confidence: float = 0.95) -> dict[str, dict]:
    """A bootstrap CI of the mean of every per-sample metric key (see harness/core/stats.py for the naming), over
    the samples that were scored: a judge's failures (None) are not in the interval, and `n` says so."""
    out = {}
    for result in scores.values():
        for key, scored in result.per_sample.items():
            values = [v for v in scored if v is not None]
            if not values:
                continue
            try:
                mean, low, high = bootstrap_ci(values, confidence=confidence, seed=seed)
            except ValueError as exc:  # e.g. NaN scores: no interval, but the run's result stands
                log.warning("no confidence interval for %s: %s", key, exc)
                continue
            name = ci_name(key, result.values.get(key), mean)
            out[name] = {"mean": mean, "low": low, "high": high, "n": len(values)}
        out.update(getattr(result, "intervals", {}))  # figures no per-sample mean gives (macro-F1)
    return out
