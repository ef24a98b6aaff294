"""Log levels of the libraries a cell uses: set in the task function, so that every process that runs cells
(the basic launcher's, joblib's workers, submitit's jobs) hides the same noise, and in every entry point.

Third-party progress bars and INFO chatter are off unless asked for (`-v` on the leaderboard,
TUNEBENCH_VERBOSE=1 for a sweep): transformers' `Loading weights ... 272/272` bar, its GGUF loader's
`Converting and de-quantizing GGUF tensors` bar, huggingface_hub's download bars, sentence-transformers' INFO
lines, wandb's `Adding directory to artifact` bury what the harness reports. transformers reads its progress-bar
switch when it is imported, so entry points call this first thing.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

NOISY_LOGGERS = ("wandb", "sentence_transformers", "transformers", "huggingface_hub", "matplotlib", "PIL", "urllib3")


def quiet_libraries(verbose: bool | None = None) -> None:
    """`verbose` None: TUNEBENCH_VERBOSE decides."""
    if verbose is None:
        verbose = os.environ.get("TUNEBENCH_VERBOSE", "") not in ("", "0")
    if not verbose:
        quiet_third_party()
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


def quiet_third_party() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # hub downloads and transformers' loading bar
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if "transformers" in sys.modules:  # imported already: its switch was read, flip it
        # deferred, heavy: only a cell that loads a model imports it
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def gguf_bars_obey_the_switch() -> None:
    """transformers' GGUF loader draws its `Converting and de-quantizing GGUF tensors` bar with tqdm itself, past
    the progress-bar switch its other bars obey (the one quiet_third_party turns off): hand it transformers'
    switchable tqdm. Called before a GGUF is converted (harness/cell/models.py)."""
    from transformers import modeling_gguf_pytorch_utils as gguf_loader  # deferred, heavy: GGUF conversion only
    from transformers.utils import logging as transformers_logging  # deferred, heavy: GGUF conversion only

    gguf_loader.tqdm = transformers_logging.tqdm
