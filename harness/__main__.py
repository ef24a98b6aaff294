"""`python -m harness [-m] key=value ...`: run one cell, or a sweep with -m (Hydra multirun).

The end-of-sweep summary and the exit status come from the ledger (harness.sweep.SweepReport, a Hydra
callback), so they are right under every launcher. Each invocation gets its own sweep id (timestamp plus a
random suffix), passed to every job as the override `sweep_id=...`: two sweeps started in the same second
never share an id or a folder.
"""

import os
import secrets
import signal
import sys
from datetime import datetime

# Before any Hugging Face import: no telemetry threads phoning the hub from a sweep.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

from harness.argv_guard import guard_argv  # noqa: E402
from harness.core.logs import quiet_libraries  # noqa: E402

if __name__ == "__main__":
    # Before the imports below, which pull in transformers, peft and trl (seconds): a mistake costs only the
    # guard's own imports. Secrets, escaping paths and config mistakes end here, before Hydra writes anything.
    quiet_libraries()
    guard_argv()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from harness.cell.base_keeper import BaseKeeper  # noqa: E402
from harness.core import (
    config,  # noqa: E402, F401  (registers the schema)
    gpus,  # noqa: E402, F401  (registers ${tunebench_gpus:...} for conf/hydra/launcher/local_gpus.yaml)
)
from harness.core.failures import Interrupted, interrupt_exit_code  # noqa: E402
from harness.task import run_from_hydra  # noqa: E402


def main() -> None:
    # Lives as long as this process: under the basic launcher every cell of a sweep runs here, and consecutive
    # cells on the same base model share one load (a launcher that pickles the task function gets it empty).
    bases = BaseKeeper()

    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def task(cfg: DictConfig) -> float | None:
        return run_from_hydra(cfg, bases)

    task()


# Hydra flags that print something and exit: no sweep runs, so no sweep id.
PRINT_ONLY_FLAGS = {"-h", "--help", "--hydra-help", "--version", "--info", "-i", "--cfg", "-c", "--shell-completion",
                    "-sc"}


def new_sweep_id() -> str:
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}-{secrets.token_hex(3)}"


def with_sweep_id(argv: list[str]) -> list[str]:
    """The command line with `sweep_id=<new id>` added, unless the user named one or only asked Hydra to print
    something (--cfg, --help, --info). It goes right after the last override: argparse takes overrides as one
    run of positional arguments."""
    args = argv[1:]
    if any(arg.split("=", 1)[0].lstrip("+") == "sweep_id" for arg in args):
        return argv
    if any(arg.split("=", 1)[0] in PRINT_ONLY_FLAGS for arg in args):
        return argv
    overrides = [i for i, arg in enumerate(args) if "=" in arg and not arg.startswith("-")]
    at = overrides[-1] + 1 if overrides else len(args)
    return [argv[0], *args[:at], f"sweep_id={new_sweep_id()}", *args[at:]]


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


if __name__ == "__main__":
    sys.argv = with_sweep_id(sys.argv)
    # In the launching process (jobs install their own handlers around a cell): SIGTERM ends it cleanly too.
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        main()
    except (KeyboardInterrupt, Interrupted) as exc:
        code = interrupt_exit_code(exc)
        print(f"tunebench: {exc if isinstance(exc, Interrupted) else 'interrupted by SIGINT'}; a cell that was running "
              "is recorded as `interrupted`, and the same command resumes the sweep (finished cells are skipped)",
              file=sys.stderr)
        sys.exit(code)
