"""One cell of a sweep, from config to RunRecord: claim it → run its pipeline (harness/cell/pipeline.py) → append
its record to the ledger → show it to the tracker. A failure becomes a `failed` record; the sweep goes on."""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from functools import partial
from pathlib import Path
from typing import NamedTuple

import harness
from harness.cell.base_keeper import BaseKeeper
from harness.cell.checkpoints import checkpoint_area
from harness.cell.checkpoints import discard as discard_checkpoints
from harness.cell.checks import check_before_load, dataset_lengths, label_shape, tokenizer_before_weights
from harness.cell.context import CellContext
from harness.cell.cost import usd
from harness.cell.pipeline import run_pipeline
from harness.cell.predict import release_freed_memory
from harness.cell.preflight import MemoryEstimate, PreflightRefusal, preflight
from harness.cell.provenance import git_sha, library_versions, now
from harness.cell.pruning import CellPruned
from harness.cell.tracking import Tracker, make_tracker
from harness.cell.truncation import PAIR_TRAINERS, check_truncation
from harness.core.claims import Holder
from harness.core.claims import acquire as acquire_claim
from harness.core.config import ConfigError, JudgeBackend, RunConfig
from harness.core.data import Dataset
from harness.core.failures import Interrupted, failure_kind, recorded_failure_kind
from harness.core.ledger import (
    COMPLETED,
    DETERMINISTIC,
    FAILED,
    INTERRUPTED,
    PRUNED,
    SKIPPED,
    TRANSIENT,
    Ledger,
    RunRecord,
    run_key,
    semantic_config,
)
from harness.core.outcome import DONE_BEFORE, NOT_RETRIED, RUNNING_ELSEWHERE, Outcome
from harness.core.precision import cell_precision, keyed_precision
from harness.core.redact import redact, redact_text
from harness.core.validation import validation_report
from harness.metrics.judge import Judge

log = logging.getLogger("harness")


class KeyedCell(NamedTuple):
    key: str  # the run key
    config: dict  # the semantic config it hashes
    dataset: Dataset  # the data it read to hash the data files


def cell_key(cfg: RunConfig, config: dict) -> KeyedCell:
    """The run key of a cell, the config it hashes, and the dataset it read to hash the data files (with
    every check that needs no model: see check_before_load)."""
    dataset = check_before_load(cfg)
    key_config = keyed_precision(semantic_config(config), cell_precision(cfg))
    return KeyedCell(run_key(key_config, dataset.file_hashes, harness.__version__), key_config, dataset)


def objective_value(cfg: RunConfig, record: dict | RunRecord | None) -> float | None:
    if not cfg.objective:
        return None
    metrics = (record.metrics if isinstance(record, RunRecord) else record.get("metrics", {})) if record else {}
    status = record.status if isinstance(record, RunRecord) else (record or {}).get("status")
    value = metrics.get(cfg.objective) if status == COMPLETED else None
    return float(value) if value is not None else float("nan")


def not_retried_reason(cfg: RunConfig, history: list[dict]) -> str | None:
    """Why the cell's last failure will not be run again, or None when it may run."""
    if cfg.force or cfg.retry_failed or not history:
        return None
    last = history[-1]
    if recorded_failure_kind(last) != DETERMINISTIC:
        return None
    first_line = (last.get("error") or "").strip().splitlines()[:1]
    return (f"failed before at {last.get('failed_stage') or '?'} with {last.get('error_type')}"
            f"{': ' + first_line[0][:160] if first_line else ''} (run {last.get('run_id')}, sweep "
            f"{last.get('sweep_id')}); a failure of that kind repeats, so it is not re-run: fix the setting, or "
            f"retry_failed=true")


def run_cell(cfg: RunConfig, config: dict, bases: BaseKeeper | None = None) -> Outcome:
    """Run the cell unless the ledger has it done, its last failure repeats, or another sweep holds its claim."""
    results = Path(cfg.results_dir)
    ledger = Ledger(results / "runs.jsonl")
    cell = cell_key(cfg, config)
    label = cell_label(cfg, cell.key)
    for warning in cell.dataset.warnings:
        log.warning("%s: %s", label, warning)
    outcome = partial(Outcome, cell=label, run_key=cell.key, ledger=str(ledger.path))
    if not cfg.force and (done := ledger.completed(cell.key)):
        log.info("%s: skipped, already completed in %s (run %s); force=true re-runs it", label, ledger.path,
                 done["run_id"])
        return outcome(DONE_BEFORE, detail=f"run {done['run_id']}", objective=objective_value(cfg, done))
    if reason := not_retried_reason(cfg, ledger.history(cell.key)):
        log.warning("%s: not retried: %s", label, reason)
        return outcome(NOT_RETRIED, detail=reason, objective=objective_value(cfg, None))

    # Counted before the claim, so a refusal leaves no claims folder; the preflight re-uses the tokenizer.
    tokenizer = tokenizer_before_weights(cfg) if cfg.preflight or cfg.method.trainer in PAIR_TRAINERS else None
    if tokenizer is not None:
        check_truncation(cfg, cell.dataset, tokenizer)

    claim = acquire_claim(results, cell.key, cfg.sweep_id)
    if isinstance(claim, Holder):
        log.info("%s: skipped, running elsewhere: claimed by %s", label, claim.describe())
        return outcome(RUNNING_ELSEWHERE, detail=f"claimed by {claim.describe()}", objective=objective_value(cfg, None))
    with claim:
        # Another sweep may have finished the cell between our look at the ledger and our claim.
        if not cfg.force and (done := ledger.completed(cell.key)):
            log.info("%s: skipped, completed meanwhile by run %s", label, done["run_id"])
            return outcome(DONE_BEFORE, detail=f"run {done['run_id']}", objective=objective_value(cfg, done))
        record = _run_claimed(cfg, ledger, cell, bases or BaseKeeper(), tokenizer)
    return outcome(record.status, detail=record.error_type or "", objective=objective_value(cfg, record))


def cell_label(cfg: RunConfig, key: str) -> str:
    """How log lines and the sweep summary name a cell."""
    return f"{cfg.model.name}/{cfg.method.name} [{key}]"


def _run_claimed(cfg: RunConfig, ledger: Ledger, cell: KeyedCell, bases: BaseKeeper, tokenizer=None) -> RunRecord:
    """The claimed cell's record, appended to the ledger whatever happens: completed, failed, skipped by the
    memory preflight, or interrupted (then the interrupt goes on up)."""
    label = cell_label(cfg, cell.key)
    judge = _judge(cfg)
    estimate, refusal = None, None
    if cfg.preflight:
        try:
            estimate = preflight(cfg, lengths=dataset_lengths(cfg, cell.dataset, tokenizer),
                                 choices=label_shape(cfg, cell.dataset, tokenizer))
        except PreflightRefusal as exc:
            estimate, refusal = exc.estimate, exc
    tracker = make_tracker(cfg.tracker, Path(cfg.results_dir))
    record = new_record(cfg, cell, estimate)
    if refusal is not None:
        # Not a crash and not a result: the cell cannot run on this hardware as configured. It is
        # re-checked (cheaply) by every sweep, so a changed setting or preset gets its chance.
        record.status, record.error, record.error_type = SKIPPED, str(refusal), "PreflightRefusal"
        record.finished_at = now()
        ledger.append(record)
        _start_tracker(tracker, cfg, record)  # so the refusal shows where the sweep is read
        _safely("finish the tracker", tracker.finish, record, [], None)
        log.warning("%s: skipped by preflight: %s", label, refusal)
        return record
    _start_tracker(tracker, cfg, record)
    log.info("%s: starting", label)
    rows: list[dict] = []
    started = time.perf_counter()
    try:
        rows = run_pipeline(CellContext(cfg, cell.dataset, record, cell.config, bases, judge))
        record.status = COMPLETED
        log.info("%s: completed %s", label, _summary(record))
    except CellPruned as exc:
        # What it cost counts: a search is judged by the compute its pruned trials spent too.
        spent = time.perf_counter() - started
        record.status, record.error = PRUNED, str(exc)
        record.train = {"pruned_at_step": exc.step, "intermediate": exc.report}
        if cell.dataset.validation:
            record.train["validation"] = validation_report(cell.dataset, cfg.qlora.seed)
        record.cost = {"total_s": round(spent, 3), "usd_total": usd(spent, cfg.hardware)}
        discard_checkpoints(checkpoint_area(Path(cfg.results_dir) / "runs" / record.run_key))
        log.info("%s: %s", label, exc)
    except Exception as exc:  # a cell's failure must not take the sweep down
        record.error = redact_text(f"{exc}\n{traceback.format_exc()}")
        record.error_type = type(exc).__name__
        record.failure_kind = failure_kind(exc)
        log.error("%s: failed at %s: %s: %s (%s)", label, record.failed_stage, type(exc).__name__,
                  redact_text(str(exc)), record.failure_kind)
    except (KeyboardInterrupt, Interrupted, SystemExit) as exc:
        # Ctrl-C, Slurm's SIGTERM, or submitit's exit to requeue: not the cell's fault and not a result.
        what = str(exc) if isinstance(exc, Interrupted) else (
            "interrupted by SIGINT" if isinstance(exc, KeyboardInterrupt) else f"stopped by exit {exc.code}")
        record.status, record.error_type, record.failure_kind = INTERRUPTED, type(exc).__name__, TRANSIENT
        record.error = f"{what} during {record.failed_stage or 'setup'}"
        log.warning("%s: %s; recorded as interrupted, the next sweep re-runs it", label, record.error)
        raise
    finally:
        record.finished_at = now()
        ledger.append(record)
        if record.status != INTERRUPTED:  # an interrupted process should stop now, not upload
            adapter_dir = Path(record.adapter_dir) if record.status == COMPLETED and record.adapter_dir else None
            _safely("finish the tracker", tracker.finish, record, rows, adapter_dir)
        release_freed_memory()
    return record


def new_record(cfg: RunConfig, cell: KeyedCell, estimate: MemoryEstimate | None) -> RunRecord:
    """The cell's record as it starts: `failed` until the pipeline says otherwise."""
    record = RunRecord(
        run_key=cell.key,
        run_id=uuid.uuid4().hex[:12],
        status=FAILED,
        started_at=now(),
        finished_at="",
        sweep_id=cfg.sweep_id,
        model=cfg.model.name,
        method=cfg.method.name,
        data=cfg.data.name,
        hardware=cfg.hardware.name,
        config=redact(cell.config),
        data_hashes=cell.dataset.file_hashes,
        versions=library_versions(),
        git_sha=git_sha(),
    )
    if estimate is not None:
        record.preflight = {
            "estimated_peak_gb": round(estimate.total_gb, 3),
            "available_gb": round(estimate.available_gb, 3),
            "terms_gb": {k: round(v, 3) for k, v in estimate.terms().items()},
            "sequence_lengths": estimate.breakdown["sequence_lengths"],
        }
        if "choice_labels" in estimate.breakdown:
            record.preflight["choice_labels"] = estimate.breakdown["choice_labels"]
    return record


def _judge(cfg: RunConfig) -> Judge | None:
    """The cell's LLM judge, checked before any GPU time is spent on a cell it cannot score (judge.check_on_start);
    None unless the data's metrics include ragas and a judge is configured."""
    if "ragas" not in cfg.data.metrics or cfg.judge.backend == JudgeBackend.none:
        return None
    judge = Judge(cfg.judge, Path(cfg.cache_dir))
    if cfg.judge.check_on_start:
        judge.check()  # reads the Ollama digest too
    return judge


def _start_tracker(tracker: Tracker, cfg: RunConfig, record: RunRecord) -> None:
    _safely("start the tracker", tracker.start, f"{cfg.model.name}-{cfg.method.name}-{record.run_key[:6]}",
            cfg.sweep_id, record.config, [cfg.model.name, cfg.method.name, cfg.data.name], record.run_id)


def _summary(record: RunRecord) -> str:
    metrics = " ".join(f"{k}={v:.3f}" for k, v in record.metrics.items())
    return f"{metrics} | ${record.cost.get('usd_total', 0):.5f} | {record.cost.get('total_s', 0):.1f}s"


def _safely(what: str, fn, *args) -> None:
    """Tracking is a view of the ledger: its failure is reported but never loses a result."""
    try:
        fn(*args)
    except ConfigError:
        raise
    except Exception as exc:
        log.warning("could not %s: %s: %s", what, type(exc).__name__, redact_text(str(exc)))
