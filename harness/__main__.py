"""`python -m harness [-m] key=value ...`: run one cell, or a sweep with -m (Hydra multirun)."""

import os
import sys

# Before any Hugging Face import: no telemetry threads phoning the hub from a sweep.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

import logging  # noqa: E402
import warnings  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from harness import config  # noqa: E402, F401  (registers the schema)
from harness.run import OUTCOME, run_from_hydra  # noqa: E402


# bitsandbytes warns on CPU that its optional 4-bit CPU kernels are absent (CPU cells never use 4-bit), and
# rouge-score logs its tokenizer choice at INFO for every call: neither helps a user reading a sweep's log.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
logging.getLogger("absl").setLevel(logging.WARNING)
# faiss logs each CPU-specific build it tries before the one that loads.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
# instructor logs every failed judge attempt at ERROR; the harness counts them per metric and reports once.
logging.getLogger("instructor").setLevel(logging.CRITICAL)
# peft still calls the old name of transformers' activation checkpointing API; nothing for a user to do.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_from_hydra(cfg)


if __name__ == "__main__":
    from harness.argv_guard import guard_argv

    guard_argv()  # secrets, escaping paths and config mistakes end here, before Hydra writes anything
    main()
    done = OUTCOME
    where = f" (ledger: {done.ledger}; table: python -m harness.leaderboard --ledger {done.ledger})" if done.ledger else ""
    print(
        f"tunebench: {len(done.completed)} completed, {len(done.skipped)} skipped, {len(done.failed)} failed"
        + (f", {len(done.refused)} refused by the memory preflight" if done.refused else "")
        + where,
        file=sys.stderr,
    )
    sys.exit(1 if done.failed else 0)
