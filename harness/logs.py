"""Log levels of the libraries a cell uses: set in the task function, so that every process that runs cells
(the basic launcher's, joblib's workers, submitit's jobs) hides the same noise."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    # Before any Hugging Face import: no telemetry threads phoning the hub from a sweep.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    # bitsandbytes warns on CPU that its optional 4-bit CPU kernels (fetched from a hub) are absent: hardware=cpu_qlora
    # runs its built-in CPU path instead, other CPU presets never use 4-bit. And rouge-score logs its tokenizer choice at INFO for every call: neither helps a user reading a sweep's log.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.WARNING)
    # faiss logs each CPU-specific build it tries before the one that loads.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    # instructor logs every failed judge attempt at ERROR; the harness counts them per metric and reports once.
    logging.getLogger("instructor").setLevel(logging.CRITICAL)
    # peft still calls the old name of transformers' activation checkpointing API; nothing for a user to do.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message="`gradient_checkpointing_enable` is deprecated", category=FutureWarning)
