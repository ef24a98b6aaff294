"""Train once, evaluate many: a cell's stage results, each keyed by what decides it, stored under
`results/stages/` and re-used by any cell that needs the same one.

- adapter: what trains it: the model, the trainer, the LoRA/training keys (seed included), the 4-bit settings,
  the hardware preset, the prompt format, retrieval settings when training prompts use them, the training data
  (every dataset file but the eval split) and the harness version.
- predictions: the adapter (or, for a method that does not train, the model and how it is loaded) plus the
  evaluation settings (eval.scoring and eval.fewshot among them), retrieval, the prompt format and the eval data;
  with eval.fewshot > 0 also the train data and the seed the shots are drawn with. The eval batch size, thread counts,
  progress and prices do not enter: they change how fast or how dear, not what is generated.
- scores are not stored: they are recomputed from the stored predictions (cheap; an LLM judge's replies come
  from its own cache), so adding a metric to a finished sweep loads no model.

A stage is written into a temporary folder and renamed into place, so a reader sees a whole stage or none, and
two cells that produce the same stage at once both leave a valid one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from harness.core.ledger import without_added_defaults

ADAPTER, PREDICTIONS = "adapter", "predictions"
# Not stored: a base model loaded once per process and kept for the next cell (harness/cell/base_keeper.py).
BASE = "base"
META = "stage.json"
# Hardware keys that change the price or the speed of a cell, not what it computes.
HARDWARE_COST_ONLY = ("device_name", "memory_gb", "peak_tflops_bf16", "usd_per_hour", "price_source", "price_date",
                      "num_threads")
# qlora keys that decide how the base model is loaded (a method that does not train still loads it so).
QLORA_LOADING = ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant")
# Evaluation keys that do not change what is generated.
EVAL_SPEED_ONLY = ("batch_size",)
# Prompt format: what every prompt of a cell is made of besides its record.
DATA_PROMPT = ("task", "system_prompt", "prompt_template", "rag_prompt_template", "max_train_examples")


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without(group: dict | None, keys) -> dict:
    return {k: v for k, v in (group or {}).items() if k not in keys}


def adapter_key(config: dict, data_hashes: dict[str, str], version: str) -> str | None:
    """None for a method that trains nothing."""
    method = config.get("method") or {}
    if not method.get("trainer"):
        return None
    data = config.get("data") or {}
    payload = {
        "model": config.get("model"), "trainer": method.get("trainer"), "qlora": config.get("qlora"),
        "hardware": _without(config.get("hardware"), HARDWARE_COST_ONLY),
        "prompt": {k: data.get(k) for k in DATA_PROMPT},
        "retrieval": config.get("retrieval") if method.get("retrieval") else None,
        "data": {name: digest for name, digest in data_hashes.items() if name != data.get("eval_file")},
        "code": version,
    }
    return _digest(payload)


def predictions_key(config: dict, data_hashes: dict[str, str], version: str, adapter: str | None) -> str:
    method, data = config.get("method") or {}, config.get("data") or {}
    retrieves = bool(method.get("retrieval"))
    fewshot = (config.get("eval") or {}).get("fewshot") or 0
    payload = {
        "adapter": adapter,
        "model": config.get("model"),
        "loading": {k: (config.get("qlora") or {}).get(k) for k in QLORA_LOADING},
        # The test model built in code draws its weights from the seed: there the seed decides the base.
        "weights_seed": (config.get("qlora") or {}).get("seed")
        if str((config.get("model") or {}).get("source")) == "tiny_random" else None,
        "hardware": _without(config.get("hardware"), HARDWARE_COST_ONLY),
        "eval": _without(without_added_defaults(config).get("eval"), EVAL_SPEED_ONLY),
        "prompt": {k: data.get(k) for k in DATA_PROMPT},
        "retrieval": config.get("retrieval") if retrieves else None,
        "data": {name: digest for name, digest in data_hashes.items()
                 if name != data.get("train_file") and (retrieves or name != data.get("corpus_file"))},
        "code": version,
    }
    if fewshot:  # the shots are drawn from the train split with the cell's seed
        payload["fewshot"] = {"train": data_hashes.get(data.get("train_file")),
                              "seed": (config.get("qlora") or {}).get("seed")}
    return _digest(payload)


class StageStore:
    def __init__(self, results_dir: Path) -> None:
        self.root = Path(results_dir) / "stages"

    def folder(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def load(self, kind: str, key: str | None) -> dict | None:
        """The stage's metadata (with `folder`), or None when it was never completed."""
        if key is None:
            return None
        path = self.folder(kind, key) / META
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return {**meta, "folder": str(path.parent)} if isinstance(meta, dict) else None

    def save(self, kind: str, key: str, meta: dict, fill=None) -> Path:
        """Write a stage whole: `fill(folder)` adds its files, then the metadata, then one rename."""
        final = self.folder(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        staging.mkdir()
        try:
            if fill is not None:
                fill(staging)
            (staging / META).write_text(json.dumps(meta, ensure_ascii=False, default=str), encoding="utf-8")
            try:
                os.rename(staging, final)
            except OSError:  # another cell completed the same stage first: theirs is as good as ours
                if not (final / META).is_file():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return final
