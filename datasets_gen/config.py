"""Typed schema of `python -m datasets_gen`, whose config root is datasets_gen/conf/ (config.yaml and the backend/,
recipe/ groups): its own, beside the package, so the harness's `python -m harness --help` lists only the harness's.

The `recipe` section is a plain mapping here: each recipe validates its own parameters with its own
dataclass (`Recipe.Params`), so adding a recipe is one module and one YAML, not an edit of this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from harness.core.config import MAX_SEED, ConfigError, require_finite, require_safe_name

CONF_DIR = Path(__file__).resolve().parent / "conf"


class BackendKind(str, Enum):
    ollama = "ollama"
    local = "local"


@dataclass
class BackendConfig:
    kind: BackendKind = BackendKind.ollama
    # Ollama: a model tag (llama3:8b). local: a harness model config name (conf/model/<name>.yaml).
    model: str = "llama3:8b"
    # Ollama only. None: $OLLAMA_HOST, else http://127.0.0.1:11434.
    host: str | None = None
    concurrency: int = 4
    timeout_s: float = 300.0
    retries: int = 3
    backoff_s: float = 2.0
    temperature: float = 0.7
    num_ctx: int = 8192
    # Most tokens one reply may have (Ollama's num_predict; max_new_tokens in-process).
    num_predict: int = 512
    # local only: prompts generated together, and the harness hardware preset to run on.
    batch_size: int = 4
    hardware: str = "cpu"

    def __post_init__(self) -> None:
        for key in ("concurrency", "num_predict", "batch_size", "num_ctx"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"backend.{key}: must be > 0 (got {getattr(self, key)})")
        require_finite(self, "backend")
        for key, ok, rule in (("retries", self.retries >= 0, ">= 0"), ("timeout_s", self.timeout_s > 0, "> 0"),
                              ("backoff_s", self.backoff_s >= 0, ">= 0"),
                              ("temperature", self.temperature >= 0, ">= 0")):
            if not ok:
                raise ConfigError(f"backend.{key}: must be {rule} (got {getattr(self, key)})")
        if self.num_predict >= self.num_ctx:
            raise ConfigError(f"backend.num_predict: {self.num_predict} leaves no room for the prompt in "
                              f"backend.num_ctx={self.num_ctx}; lower num_predict or raise num_ctx")


@dataclass
class QualityConfig:
    min_words: int = 2
    max_words: int = 400
    # Near-duplicates: word 3-gram Jaccard similarity at or above this drops the later record.
    near_duplicate_threshold: float = 0.8
    # Leakage report: an eval question whose 3-gram overlap with some train question is at or above this is flagged.
    leakage_threshold: float = 0.5
    # doc_qa: the share of an answer's content words that must occur in its chunk (0 turns the check off).
    min_answer_support: float = 0.6

    refusal_patterns: list[str] = field(
        default_factory=lambda: [
            r"\bas an ai\b",
            r"\bi(?:'m| am) (?:sorry|unable|not able)\b",
            r"\bi can(?:not|'t) (?:help|assist|answer|provide)\b",
            r"\blanguage model\b",
        ]
    )

    def __post_init__(self) -> None:
        for key in ("near_duplicate_threshold", "leakage_threshold", "min_answer_support"):
            if not 0.0 <= getattr(self, key) <= 1.0:  # nan fails this too
                raise ConfigError(f"quality.{key}: must be in [0, 1] (got {getattr(self, key)})")
        if self.min_words < 0:
            raise ConfigError(f"quality.min_words: must be >= 0 (got {self.min_words})")
        if self.max_words < self.min_words:
            raise ConfigError(f"quality.max_words: {self.max_words} is below quality.min_words={self.min_words}, so "
                              "every record would be dropped; raise max_words or lower min_words")
        for pattern in self.refusal_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"quality.refusal_patterns: {pattern!r} is not a regular expression ({exc}); "
                                  "escape special characters with a backslash") from None


@dataclass
class GenConfig:
    backend: BackendConfig = field(default_factory=BackendConfig)
    recipe: Any = MISSING
    quality: QualityConfig = field(default_factory=QualityConfig)
    # A documents folder (doc_qa) or a catalog file (.csv / .jsonl) for the catalog recipes.
    input: str = MISSING
    # Dataset folder to write (train.jsonl, eval.jsonl, corpus.jsonl, card.json); also holds the checkpoints.
    output: str = MISSING
    name: str = MISSING
    seed: int = 42
    eval_fraction: float = 0.2
    # Use only the first N items (chunks, products): a quick trial before paying for a full run.
    limit: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        require_safe_name(self.name, "name")  # the default output folder is data/<name>
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed: must be in [0, {MAX_SEED}] (got {self.seed})")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction: must be in (0, 1) (got {self.eval_fraction})")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"limit: must be > 0 or null (got {self.limit})")


ConfigStore.instance().store(name="gen_schema", node=GenConfig)
