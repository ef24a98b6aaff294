"""One loaded base model for consecutive cells of one process.

Loading a 7B base is minutes of a GPU's time; a sweep that trains three adapters on it (seeds, LoRA ranks,
methods) would pay it three times. A `BaseKeeper` lives as long as the process that runs cells (the entry
point makes one for Hydra's basic launcher, which runs every cell of a sweep in that process): it hands a cell
the base it holds when the cell loads it the same way (`loading_key`), and takes it back afterwards with the
cell's LoRA adapter removed (peft's `unload()`, which restores the original layers without merging anything),
in the state a fresh load leaves it. A cell that loads differently (another model, 4-bit vs 16-bit, another
compute dtype) frees the held base before it loads its own, so two bases never share the memory.

What a cell reports does not depend on what ran before it in the process: its predictions are the same
(tests/test_base_keeper.py compares a sweep with and without re-use), and its `load_s` cost is the load time
of the base it used, so a cell is as dear on the leaderboard whether it came first in a sweep or third. The
time this cell really spent loading is in `record.stages["base"]`.

Not kept:
- after a cell fails (its base may hold a half-attached adapter, or CUDA memory in an unknown state);
- when 4-bit training is evaluated on a merged 16-bit copy (eval.merge_adapter): the 4-bit base is freed
  before the copy loads, as in a standalone cell, so the cell's peak memory is the one it would have alone;
- a 4-bit base that bitsandbytes repacked for its CPU kernel (hardware=cpu_qlora on an AVX512-BF16 CPU): the
  repacking re-quantizes constants, so that base no longer computes what a fresh load does;
- with `keep_base_loaded=false`, or under a launcher that runs each cell in a fresh process or unpickles the
  task function per cell (joblib, submitit): a keeper crosses a pickle empty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.cell.models import LoadedModel, half_dtype, load_model, select_device
from harness.cell.predict import release_freed_memory
from harness.core.config import ModelSource, RunConfig, loads_in_4bit, uses_gradient_checkpointing

log = logging.getLogger("harness")


def loading_key(cfg: RunConfig) -> str:
    """What decides the base model a cell gets from `load_model`: the model, where it is cached, the device and
    dtype, the 4-bit settings (k-bit preparation also enables gradient checkpointing at load), and, for the tiny
    model built in code, the seed its random weights come from. LoRA, training and evaluation settings do not
    enter: they act on the loaded base, not on how it is loaded."""
    four_bit = loads_in_4bit(cfg.hardware, cfg.qlora)
    payload = {
        "model": dataclasses.asdict(cfg.model),
        "cache_dir": str(Path(cfg.cache_dir).expanduser()),
        "accelerator": cfg.hardware.accelerator,
        "half_dtype": str(half_dtype(cfg.hardware)),
        "four_bit": four_bit and {
            "quant_type": cfg.qlora.bnb_4bit_quant_type,
            "double_quant": cfg.qlora.bnb_4bit_use_double_quant,
            "gradient_checkpointing": uses_gradient_checkpointing(cfg.hardware, cfg.qlora),
        },
        "seed": cfg.qlora.seed if cfg.model.source == ModelSource.tiny_random else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class _Held:
    key: str
    loaded: LoadedModel
    loaded_by: str  # the run id of the cell that loaded it
    # What training changes on the base besides the adapter (a fresh load has none of it); put back when the
    # base comes back: gradient checkpointing, the config's use_cache, and the model object's own attributes,
    # e.g. accelerate's autocast wrapper around `forward` (left in place, it changes the logits of the next cell).
    gradient_checkpointing: bool
    use_cache: bool | None
    attributes: dict


class BaseKeeper:
    def __init__(self) -> None:
        self._held: _Held | None = None

    def __getstate__(self) -> dict:
        return {"_held": None}  # a launcher pickling the task function must never carry a model along

    def load(self, cfg: RunConfig, run_id: str) -> tuple[LoadedModel, dict]:
        """The cell's base model, and what its record says about it: {key, ran, reused_from, load_s}. The
        LoadedModel is the cell's own (it may replace `.model`); the model object in it is shared with the
        keeper until `give_back` or `discard`."""
        key = loading_key(cfg)
        held = self._held
        if held is not None and held.key == key:
            select_device(cfg.hardware)  # this cell's thread count
            held.loaded.model.eval()
            log.info("base model %s re-used, loaded by run %s: nothing is loaded", cfg.model.name, held.loaded_by)
            return dataclasses.replace(held.loaded), {"key": key, "ran": False, "reused_from": held.loaded_by,
                                                      "load_s": 0.0}
        self.discard()
        loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, Path(cfg.cache_dir).expanduser())
        config = getattr(loaded.model, "config", None)
        self._held = _Held(key, loaded, run_id, bool(getattr(loaded.model, "is_gradient_checkpointing", False)),
                           getattr(config, "use_cache", None), dict(vars(loaded.model)))
        return dataclasses.replace(loaded), {"key": key, "ran": True, "load_s": round(loaded.load_s, 3)}

    def give_back(self, loaded: LoadedModel, model, keep: bool = True) -> None:
        """The cell is done with `model` (the base, or the base with a LoRA adapter attached): remove the
        adapter and keep the base for the next cell, or free it when `keep` is false or the cell replaced it
        (a merged evaluation copy)."""
        held = self._held
        if held is None or loaded.model is not held.loaded.model or not keep:
            self.discard()
            return
        base = _without_adapter(model)
        if base is not held.loaded.model:  # not the base this keeper handed out: never keep what we cannot vouch for
            self.discard()
            return
        if _repacked_for_cpu(base):
            log.info("base model not kept: bitsandbytes repacked its 4-bit weights for the CPU kernel, which is "
                     "lossy; the next cell loads it afresh")
            self.discard()
            return
        _restore(base, held)
        log.debug("base model kept for the next cell (loading key %s)", held.key)

    @contextmanager
    def discarded_on_failure(self) -> Iterator[None]:
        """A cell's work on the base: if it fails, the held base is freed (it may hold a half-attached adapter,
        or CUDA memory in an unknown state)."""
        try:
            yield
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Free the held base: its memory goes at once if nothing else refers to the model, else when the cell's
        own references go (run.py releases accelerator memory after every cell)."""
        if self._held is not None:
            self._held = None

            release_freed_memory()


def _without_adapter(model):
    """The base under a peft model, its LoRA layers replaced by the original ones (nothing merged)."""
    from peft import PeftModel  # deferred, heavy: only a cell with an adapter imports it

    if isinstance(model, PeftModel):
        return model.unload()
    return model


# Left as they are: torch.nn.Module's own bookkeeping (submodules, parameters, hook tables: peft's unload and the
# calls above keep them right; `training` is set by eval()) and the handles of the input-require-grads hook.
_NOT_RESTORED = frozenset(vars(torch.nn.Module())) | {"_require_grads_hook", "_require_grads_hooks"}


def _restore(base, held: _Held) -> None:
    """Undo what training left on the base that a fresh load would not have."""
    if getattr(base, "is_gradient_checkpointing", False) and not held.gradient_checkpointing:
        base.gradient_checkpointing_disable()
    if getattr(base, "_require_grads_hook", None) is not None and not held.gradient_checkpointing:
        base.disable_input_require_grads()
    if held.use_cache is not None:
        base.config.use_cache = held.use_cache
    attributes = vars(base)
    for name in [name for name in attributes if name not in held.attributes and name not in _NOT_RESTORED]:
        del attributes[name]
    for name, value in held.attributes.items():
        if name not in _NOT_RESTORED:
            attributes[name] = value
    base.eval()
    base.zero_grad(set_to_none=True)


def _repacked_for_cpu(model) -> bool:
    """bitsandbytes repacks a 4-bit layer for its CPU kernel at the first inference forward (on CPUs with
    AVX512-BF16), re-quantizing the double-quant constants in bf16; its inverse does not give the loaded values
    back, and a base so changed computes slightly differently from a fresh load. (Never on CUDA.)"""
    return any(getattr(getattr(getattr(module, "weight", None), "quant_state", None), "packing_format_for_cpu", False)
               for module in model.modules())
