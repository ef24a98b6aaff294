"""One job's decision, written where its launcher's parent can read it back: ran, skipped as done, running
elsewhere, not retried, configuration error. The cell writes it; the sweep summary (harness/sweep.py) reads it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

OUTCOME_FILE = "outcome.json"
# Outcome statuses a job can report without a ledger record of this sweep.
DONE_BEFORE, RUNNING_ELSEWHERE, NOT_RETRIED, CONFIG_ERROR, ERROR, PLANNED = (
    "done_before", "running_elsewhere", "not_retried", "config_error", "error", "planned")
# Written by the launcher, not the job: the job ended (failed, cancelled, killed) without writing an outcome.
JOB_ENDED = "job_ended"


@dataclass
class Outcome:
    status: str  # a ledger status (the cell ran) or one of the statuses above
    cell: str
    run_key: str | None = None
    ledger: str | None = None
    detail: str = ""
    # The configured objective metric (NaN for a cell that did not complete); what the task function returns.
    objective: float | None = None
    plan: dict | None = None
    # The process that ran the job, and the GPU it was bound to (hydra/launcher=local_gpus).
    pid: int | None = None
    gpu: str | None = None


def write_outcome(job_dir: Path, outcome: Outcome) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / f".{OUTCOME_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(asdict(outcome), allow_nan=True), encoding="utf-8")
    os.replace(tmp, job_dir / OUTCOME_FILE)


def read_outcome(job_dir: Path) -> Outcome | None:
    try:
        return Outcome(**json.loads((job_dir / OUTCOME_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
