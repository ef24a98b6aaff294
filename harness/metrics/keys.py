"""Which way is better, and on what scale, for every figure a run record carries.

Every key a ranking, a floor, a ceiling, a comparison or a plot may use is declared here or by the metric
that produces it (`register_metric(name, keys=...)`): a metric's corpus keys, the judged RAGAS keys, the
retrieval recall, and the cost / latency / memory figures. Nothing ranks on a key that declares no direction:
an `unparseable_rate` of 73% must never read as "better" than 0%.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from harness.core.stats import SAMPLE_MEAN_SUFFIX


class Better(str, Enum):
    higher = "higher"
    lower = "lower"


@dataclass(frozen=True)
class KeySpec:
    better: Better
    # The range a value lies in (None: unbounded on that side); shown in reports, used to check floors.
    low: float | None = 0.0
    high: float | None = 1.0
    description: str = ""
    # Where a record keeps the value: "metrics" (quality) or "cost" (time, money, memory).
    section: str = "metrics"

    @property
    def higher_is_better(self) -> bool:
        return self.better == Better.higher

    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def range_text(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{low}..{high}"


def higher(description: str = "", low: float | None = 0.0, high: float | None = 1.0, section: str = "metrics"):
    return KeySpec(Better.higher, low, high, description, section)


def lower(description: str = "", low: float | None = 0.0, high: float | None = 1.0, section: str = "metrics"):
    return KeySpec(Better.lower, low, high, description, section)


KEYS: dict[str, KeySpec] = {}
# Keys named by a pattern (recall@3, recall@5, ...): checked after the exact names.
PATTERNS: list[tuple[re.Pattern, KeySpec]] = []


def declare(keys: dict[str, KeySpec]) -> None:
    for name, spec in keys.items():
        if name in KEYS and KEYS[name] != spec:
            raise ValueError(f"metric key {name!r} is declared twice with different directions")
        KEYS[name] = spec


def declare_pattern(pattern: str, spec: KeySpec) -> None:
    PATTERNS.append((re.compile(pattern), spec))


def cost_figures() -> list[str]:
    """The declared cost / time / memory keys (a record keeps them under `cost`)."""
    return [name for name, spec in KEYS.items() if spec.section == COST]


def spec_of(name: str) -> KeySpec | None:
    """The declared direction and range of a key (a `<key>_sample_mean` interval name maps to its key)."""
    name = name.removesuffix(SAMPLE_MEAN_SUFFIX)
    if name in KEYS:
        return KEYS[name]
    for pattern, spec in PATTERNS:
        if pattern.fullmatch(name):
            return spec
    return None


COST = "cost"
declare({
    "usd_per_1k_generations": lower("$ to serve 1000 answers at the measured rate", None, None, COST),
    "usd_total": lower("$ for the whole cell (load, train, eval)", None, None, COST),
    "usd_train": lower("$ of training", None, None, COST),
    "usd_eval": lower("$ of evaluation", None, None, COST),
    "total_s": lower("wall seconds of the cell", None, None, COST),
    "train_s": lower("wall seconds of training", None, None, COST),
    "eval_s": lower("wall seconds of generation", None, None, COST),
    "load_s": lower("wall seconds of loading", None, None, COST),
    "eval_latency_s_per_example": lower("seconds per answer", None, None, COST),
    "peak_memory_gb": lower("peak memory of the cell", None, None, COST),
    "adapter_mb": lower("size of the trained adapter", None, None, COST),
    "eval_tokens_per_s": higher("generated tokens per second", None, None, COST),
    "train_tokens_per_s": higher("non-padding training tokens per second", None, None, COST),
    "mfu": higher("model FLOPs utilisation of training", 0.0, 1.0, COST),
})
# Judged by an LLM (harness/metrics/ragas.py): higher is better on 0..1 for all four.
declare({name: higher(f"RAGAS {name.replace('_', ' ')} (LLM judge)") for name in
         ("faithfulness", "answer_relevancy", "context_precision", "context_recall")})
declare_pattern(r"recall@\d+", higher("share of questions whose gold source is among the top-k retrieved chunks"))
