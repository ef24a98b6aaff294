"""What every step of a cell's pipeline shares (`CellContext`, built once per cell), and the `stage` helper that
says in the cell's record which step it was in when it failed."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import harness
from harness.core.config import RunConfig
from harness.core.data import Dataset, QARecord, fewshot_examples
from harness.core.ledger import RunRecord
from harness.core.precision import Precision, cell_precision
from harness.core.stages import StageStore, adapter_key, predictions_key
from harness.metrics.judge import Judge

if TYPE_CHECKING:
    # For the annotation only: base_keeper imports torch, and python -m harness.baseline (which writes its
    # predictions through harness.cell.scoring, hence this module) refuses a bad option before torch loads.
    from harness.cell.base_keeper import BaseKeeper

log = logging.getLogger(__name__)


@contextmanager
def stage(record: RunRecord, name: str, fail_at: str | None = None, crash_at: str | None = None) -> Iterator[None]:
    """One step of the cell: while it runs, `record.failed_stage` names it, so an exception (or an interrupt)
    raised inside leaves it there for the ledger; when the step completes, the name it had before comes back.
    `fail_at` (config key fail_at, for tests) makes the step named by it fail as it starts; `crash_at` kills the
    process there instead (SIGKILL, as the out-of-memory killer would), leaving no record at all."""
    before = record.failed_stage
    record.failed_stage = name
    if crash_at == name:
        log.error("crash_at=%s: killing this process (SIGKILL), as the out-of-memory killer would", name)
        os.kill(os.getpid(), signal.SIGKILL)
    if fail_at == name:
        raise RuntimeError(f"injected failure at {name} (fail_at={name})")
    yield
    record.failed_stage = before


@dataclass
class CellContext:
    """One cell's settings, data, record and helpers, and what follows from them, for every step of the pipeline."""

    cfg: RunConfig
    dataset: Dataset
    record: RunRecord
    # The cell's semantic config (harness.core.ledger.semantic_config): what its stage keys are computed from.
    key_config: InitVar[dict]
    # Lent by the process: a base model kept for its next cell (see base_keeper.py).
    bases: BaseKeeper
    judge: Judge | None = None
    run_dir: Path = field(init=False)
    eval_records: list[QARecord] = field(init=False)
    # eval.fewshot: the train examples every eval prompt shows first ([] zero-shot).
    shots: list[QARecord] = field(init=False)
    store: StageStore = field(init=False)
    adapter_key: str | None = field(init=False)  # None: the method trains nothing
    predictions_key: str = field(init=False)
    precision: Precision = field(init=False)  # what the cell computes in (hardware.precision resolved)
    # force=true runs every stage again; so does an injected failure or crash, which must meet the stage it names.
    reuse: bool = field(init=False)

    def __post_init__(self, key_config: dict) -> None:
        cfg, hashes = self.cfg, self.dataset.file_hashes
        self.run_dir = Path(cfg.results_dir) / "runs" / self.record.run_key
        self.run_dir.mkdir(parents=True, exist_ok=True)  # training writes there, then the per-example rows
        self.eval_records = self.dataset.eval[: cfg.eval.num_examples] if cfg.eval.num_examples else self.dataset.eval
        self.shots = fewshot_examples(self.dataset.train, self.dataset.eval, cfg.eval.fewshot, cfg.qlora.seed,
                                      self.dataset.labels)
        self.store = StageStore(Path(cfg.results_dir))
        self.precision = cell_precision(cfg)
        self.adapter_key = adapter_key(key_config, hashes, harness.__version__)
        self.predictions_key = predictions_key(key_config, hashes, harness.__version__, self.adapter_key)
        self.reuse = not cfg.force and not cfg.fail_at and not cfg.crash_at

    def stage(self, name: str):
        """`with ctx.stage("train"):` see `stage`."""
        return stage(self.record, name, self.cfg.fail_at, self.cfg.crash_at)
