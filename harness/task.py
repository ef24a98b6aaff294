"""The Hydra task: one job of a sweep, in whichever process its launcher runs it. `run_from_hydra` is the task
itself (plan the cell or run it); `job_outcome` is what every job does around it."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harness.cell.base_keeper import BaseKeeper
from harness.cell.plan import plan_cell
from harness.cell.run import run_cell
from harness.core.config import ConfigError, to_run_config
from harness.core.data import DataError
from harness.core.failures import Interrupted, signals_interrupt
from harness.core.gpus import pin_gpu
from harness.core.ledger import INTERRUPTED
from harness.core.logs import quiet_libraries
from harness.core.outcome import CONFIG_ERROR, ERROR, Outcome, write_outcome
from harness.core.redact import redact_text

log = logging.getLogger("harness")


def job_outcome(task: Callable[[DictConfig, BaseKeeper | None], Outcome]) -> Callable[..., float | None]:
    """What every job does around its task, in the spirit of lightning-hydra-template's `task_wrapper`: quiet the
    libraries, name the sweep, pin the job's GPU, turn a user mistake into a plain one-line message (never a
    traceback), and write what the job decided to its folder's outcome.json for the sweep summary. The wrapped
    job returns the configured objective metric (NaN for a cell that did not complete), for optimising sweepers."""

    @functools.wraps(task)
    def job(cfg: DictConfig, bases: BaseKeeper | None = None) -> float | None:
        quiet_libraries()
        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN"
        if not cfg.sweep_id:  # `python -m harness` always passes one; other entry points get the folder's name
            cfg.sweep_id = Path(hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir).name
        cell = f"{cfg.model.name}/{cfg.method.name}"
        gpu = pin_gpu(int(hydra_cfg.job.num or 0)) if multirun else None  # before anything initialises CUDA
        try:
            outcome = task(cfg, bases)
        except (ConfigError, DataError) as exc:
            log.error("%s: configuration error, nothing ran: %s", cell, exc)
            outcome = Outcome(CONFIG_ERROR, cell, detail=str(exc), objective=float("nan"))
        except Interrupted as exc:
            if _in_launching_process(hydra_cfg):
                raise  # the entry point stops the sweep: exit 130 / 143
            # A job process of its own (submitit, Slurm): the record is written; end the job cleanly, no traceback.
            outcome = Outcome(INTERRUPTED, cell, detail=str(exc), objective=float("nan"))
        except Exception as exc:  # before the cell's own record exists (e.g. the judge's server is unreachable)
            log.error("%s: nothing ran: %s: %s", cell, type(exc).__name__, redact_text(str(exc)))
            outcome = Outcome(ERROR, cell, detail=f"{type(exc).__name__}: {redact_text(str(exc))}",
                              objective=float("nan"))
        outcome.gpu, outcome.pid = gpu, os.getpid()
        write_outcome(Path(hydra_cfg.runtime.output_dir), outcome)
        return outcome.objective

    return job


@job_outcome
def run_from_hydra(cfg: DictConfig, bases: BaseKeeper | None = None) -> Outcome:
    """The Hydra task: plan the cell (plan=...) or run it. `bases` keeps a loaded base model for the next cell the
    same process runs (None: each cell loads its own)."""
    run_cfg = to_run_config(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    if run_cfg.plan != "false":
        return plan_cell(run_cfg, config, list(HydraConfig.get().overrides.task))
    with signals_interrupt():
        return run_cell(run_cfg, config, bases)


def _in_launching_process(hydra_cfg) -> bool:
    """A single run, or a sweep under Hydra's basic launcher: the cell runs in the process the user started."""
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "")
    return hydra_cfg.mode is None or hydra_cfg.mode.name != "MULTIRUN" or target.endswith("BasicLauncher")
