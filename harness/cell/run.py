"""One cell of a sweep, from config to RunRecord. A failure becomes a `failed` record; the sweep goes on."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
import traceback
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import harness
from harness.cell.base_keeper import BaseKeeper
from harness.cell.checkpoints import checkpoint_area
from harness.cell.checkpoints import discard as discard_checkpoints
from harness.cell.checks import check_before_load, dataset_lengths
from harness.cell.cost import PeakMemory, cost_report, train_flops_per_token
from harness.cell.models import merged_copy_possible, merged_eval_model, select_device
from harness.cell.predict import generate, release_accelerator_memory, render_prompts
from harness.cell.preflight import PreflightRefusal, preflight
from harness.cell.provenance import eval_set_hash, git_sha, library_versions, now
from harness.cell.rag import Retrieved, retrieve_contexts
from harness.cell.tracking import make_tracker
from harness.cell.train import TrainContext, TrainResult, get_trainer
from harness.core.claims import Holder
from harness.core.claims import acquire as acquire_claim
from harness.core.config import ConfigError, JudgeBackend, RunConfig
from harness.core.data import (
    Dataset,
    prompt_fingerprint,
    prompt_messages,
)
from harness.core.failures import Interrupted, failure_kind, recorded_failure_kind
from harness.core.ledger import (
    COMPLETED,
    DETERMINISTIC,
    FAILED,
    INTERRUPTED,
    JUDGED_METRICS,
    SKIPPED,
    TRANSIENT,
    Ledger,
    RunRecord,
    run_key,
    semantic_config,
)
from harness.core.outcome import DONE_BEFORE, NOT_RETRIED, RUNNING_ELSEWHERE, Outcome
from harness.core.progress import progress_bar
from harness.core.redact import redact, redact_text
from harness.core.stages import ADAPTER, BASE, PREDICTIONS, StageStore, adapter_key, predictions_key
from harness.core.stats import metric_cis
from harness.metrics import score_all
from harness.metrics.judge import Judge
from harness.metrics.ragas import JudgedSample, applicable_metrics, score_ragas

log = logging.getLogger("harness")


def cell_key(cfg: RunConfig, config: dict) -> tuple[str, dict, Dataset]:
    """The run key of a cell, the config it hashes, and the dataset it read to hash the data files (with
    every check that needs no model: see check_before_load)."""
    dataset = check_before_load(cfg)
    key_config = semantic_config(config)
    return run_key(key_config, dataset.file_hashes, harness.__version__), key_config, dataset


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
    results = Path(cfg.results_dir)
    ledger = Ledger(results / "runs.jsonl")
    key, key_config, dataset = cell_key(cfg, config)
    cell = f"{cfg.model.name}/{cfg.method.name} [{key}]"
    outcome = partial(Outcome, cell=cell, run_key=key, ledger=str(ledger.path))
    if not cfg.force and (done := ledger.completed(key)):
        log.info("%s: skipped, already completed in %s (run %s); force=true re-runs it", cell, ledger.path, done["run_id"])
        return outcome(DONE_BEFORE, detail=f"run {done['run_id']}", objective=objective_value(cfg, done))
    if reason := not_retried_reason(cfg, ledger.history(key)):
        log.warning("%s: not retried: %s", cell, reason)
        return outcome(NOT_RETRIED, detail=reason, objective=objective_value(cfg, None))

    claim = acquire_claim(results, key, cfg.sweep_id)
    if isinstance(claim, Holder):
        log.info("%s: skipped, running elsewhere: claimed by %s", cell, claim.describe())
        return outcome(RUNNING_ELSEWHERE, detail=f"claimed by {claim.describe()}", objective=objective_value(cfg, None))
    with claim:
        # Another sweep may have finished the cell between our look at the ledger and our claim.
        if not cfg.force and (done := ledger.completed(key)):
            log.info("%s: skipped, completed meanwhile by run %s", cell, done["run_id"])
            return outcome(DONE_BEFORE, detail=f"run {done['run_id']}", objective=objective_value(cfg, done))
        record = _run_claimed(cfg, ledger, key, key_config, dataset, cell, bases or BaseKeeper())
    return outcome(record.status, detail=record.error_type or "", objective=objective_value(cfg, record))


def _run_claimed(cfg: RunConfig, ledger: Ledger, key: str, key_config: dict, dataset: Dataset,
                 cell: str, bases: BaseKeeper) -> RunRecord:
    results = Path(cfg.results_dir)
    judge = None
    if "ragas" in cfg.data.metrics and cfg.judge.backend != JudgeBackend.none:
        judge = Judge(cfg.judge, Path(cfg.cache_dir))
        if cfg.judge.check_on_start:
            judge.check()  # before any GPU time is spent on a cell it cannot score; reads the Ollama digest too

    estimate, refusal = None, None
    if cfg.preflight:
        try:
            estimate = preflight(cfg, lengths=dataset_lengths(cfg, dataset))
        except PreflightRefusal as exc:
            estimate, refusal = exc.estimate, exc

    tracker = make_tracker(cfg.tracker, results)
    record = RunRecord(
        run_key=key,
        run_id=uuid.uuid4().hex[:12],
        status=FAILED,
        started_at=now(),
        finished_at="",
        sweep_id=cfg.sweep_id,
        model=cfg.model.name,
        method=cfg.method.name,
        data=cfg.data.name,
        hardware=cfg.hardware.name,
        config=redact(key_config),
        data_hashes=dataset.file_hashes,
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
    if refusal is not None:
        # Not a crash and not a result: the cell cannot run on this hardware as configured. It is
        # re-checked (cheaply) by every sweep, so a changed setting or preset gets its chance.
        record.status, record.error, record.error_type = SKIPPED, str(refusal), "PreflightRefusal"
        record.finished_at = now()
        ledger.append(record)
        # Its W&B run too, so the refusal shows where the sweep is read.
        _safely("start the tracker", tracker.start, f"{cfg.model.name}-{cfg.method.name}-{key[:6]}", cfg.sweep_id,
                record.config, [cfg.model.name, cfg.method.name, cfg.data.name], record.run_id)
        _safely("finish the tracker", tracker.finish, record, [], None)
        log.warning("%s: skipped by preflight: %s", cell, refusal)
        return record
    _safely("start the tracker", tracker.start, f"{cfg.model.name}-{cfg.method.name}-{key[:6]}", cfg.sweep_id,
            record.config, [cfg.model.name, cfg.method.name, cfg.data.name], record.run_id)
    log.info("%s: starting", cell)
    rows: list[dict] = []
    adapter_dir = None
    try:
        rows, adapter_dir = _execute(cfg, dataset, record, results / "runs" / key, key_config, bases, judge)
        record.status = COMPLETED
        log.info("%s: completed %s", cell, _summary(record))
    except Exception as exc:  # a cell's failure must not take the sweep down
        record.error = redact_text(f"{exc}\n{traceback.format_exc()}")
        record.error_type = type(exc).__name__
        record.failure_kind = failure_kind(exc)
        log.error("%s: failed at %s: %s: %s (%s)", cell, record.failed_stage, type(exc).__name__,
                  redact_text(str(exc)), record.failure_kind)
    except (KeyboardInterrupt, Interrupted, SystemExit) as exc:
        # Ctrl-C, Slurm's SIGTERM, or submitit's exit to requeue: not the cell's fault and not a result.
        what = str(exc) if isinstance(exc, Interrupted) else (
            "interrupted by SIGINT" if isinstance(exc, KeyboardInterrupt) else f"stopped by exit {exc.code}")
        record.status, record.error_type, record.failure_kind = INTERRUPTED, type(exc).__name__, TRANSIENT
        record.error = f"{what} during {record.failed_stage or 'setup'}"
        log.warning("%s: %s; recorded as interrupted, the next sweep re-runs it", cell, record.error)
        raise
    finally:
        record.finished_at = now()
        ledger.append(record)
        if record.status != INTERRUPTED:  # an interrupted process should stop now, not upload
            _safely("finish the tracker", tracker.finish, record, rows, adapter_dir)
        _release_memory()
    return record


def _execute(cfg: RunConfig, dataset: Dataset, record: RunRecord, run_dir: Path, key_config: dict,
             bases: BaseKeeper, judge=None) -> tuple[list[dict], Path | None]:
    """Produce the predictions (load → retrieve → train → predict; or re-use a stored stage) → score → cost.
    `record.failed_stage` says where an exception came from; `record.stages` which stages ran or were re-used."""
    run_dir.mkdir(parents=True, exist_ok=True)
    store = StageStore(Path(cfg.results_dir))
    # force=true re-runs everything; an injected failure must meet the stage it names.
    reuse = not cfg.force and not cfg.fail_at and not cfg.crash_at
    akey = adapter_key(key_config, dataset.file_hashes, harness.__version__)
    pkey = predictions_key(key_config, dataset.file_hashes, harness.__version__, akey)
    record.stages = {ADAPTER: {"key": akey, "ran": False} if akey else None, PREDICTIONS: {"key": pkey, "ran": False}}
    eval_records = dataset.eval[: cfg.eval.num_examples] if cfg.eval.num_examples else dataset.eval
    produced = store.load(PREDICTIONS, pkey) if reuse else None
    if produced is not None:
        record.stages[PREDICTIONS]["reused_from"] = produced["run_id"]
        if akey:
            record.stages[ADAPTER]["reused_from"] = produced["run_id"]
        log.info("predictions re-used from run %s (stage %s): no model is loaded", produced["run_id"], pkey)
    else:
        produced = _produce(cfg, dataset, record, run_dir, eval_records, store, akey if reuse else None, bases)
        record.stages[PREDICTIONS]["ran"] = True
        store.save(PREDICTIONS, pkey, produced)

    record.failed_stage = "score"
    _inject_failure(cfg, "score")
    predictions = produced["predictions"]
    references = [r.answer for r in eval_records]
    plain = [name for name in cfg.data.metrics if name not in JUDGED_METRICS]

    with progress_bar("score", total=len(plain), unit="metric", enabled=cfg.progress) as advance:
        scores = {}
        for name in plain:
            scores.update(score_all([name], predictions, references, dataset))
            advance(1)
    record.train, record.retrieval, record.prompt = produced["train"], produced["retrieval"], produced["prompt"]
    record.metrics = {k: v for result in scores.values() for k, v in result.values.items()}
    if record.retrieval.get("recall_at_k") is not None:
        record.metrics[f"recall@{cfg.retrieval.top_k}"] = record.retrieval["recall_at_k"]
    record.metric_samples = len(references)
    record.eval_set = eval_set_hash(eval_records)
    record.metrics_ci = metric_cis(scores, cfg.qlora.seed)
    judged = None
    if "ragas" in cfg.data.metrics:
        judged = _judge_ragas(cfg, judge, eval_records, predictions, produced["chunks"], record)

    rows = []
    for i, (r, prediction) in enumerate(zip(eval_records, predictions, strict=True)):
        row = {"id": r.id, "question": r.question, "reference": r.answer, "prediction": prediction,
               "generated_tokens": produced["generated_tokens"][i]}
        row.update({k: v[i] for result in scores.values() for k, v in result.per_sample.items()})
        if judged is not None:
            row.update({k: v[i] for k, v in judged.per_sample.items()})
            row.update({f"{k}_error": v[i] for k, v in judged.errors.items() if v[i] is not None})
        rows.append(row)
    record.predictions_file = str(write_predictions(run_dir, record.run_id, rows))

    adapter_dir = Path(produced["adapter_dir"]) if produced["adapter_dir"] else None
    record.adapter_dir = str(adapter_dir) if adapter_dir else None
    # What producing these predictions cost when it ran (re-used stages keep the figures of the run that made
    # them), priced at this cell's hardware preset.
    timing = produced["timing"]
    peak = PeakMemory(timing["peak_device"])
    peak.peak_bytes = timing["peak_bytes"]
    record.cost = cost_report(
        cfg.hardware, load_s=timing["load_s"], train_s=timing["train_s"], train_tokens=timing["train_tokens"],
        eval_s=timing["generate_s"], eval_examples=len(eval_records),
        eval_generated_tokens=sum(produced["generated_tokens"]), peak=peak, adapter_dir=adapter_dir,
        train_flops_per_token=timing["train_flops_per_token"], prep_s=timing["prep_s"],
    ).to_dict()
    record.cost.update(produced["model"], eval_batch_size=timing["eval_batch_size"],
                       eval_oom_retries=timing["eval_oom_retries"])
    record.failed_stage = None
    return rows, adapter_dir


def _produce(cfg: RunConfig, dataset: Dataset, record: RunRecord, run_dir: Path, eval_records, store,
             akey: str | None, bases: BaseKeeper) -> dict:
    """Load (or take the base the process holds) → retrieve → train (or load a stored adapter) → predict:
    everything a predictions stage holds. The base goes back to `bases` without its adapter, or is freed."""
    work_start = time.perf_counter()
    with PeakMemory(select_device(cfg.hardware)) as peak:
        record.failed_stage = "load"
        _inject_failure(cfg, "load")
        with progress_bar(f"load {cfg.model.name}", total=1, unit="model", enabled=cfg.progress) as advance:
            loaded, record.stages[BASE] = bases.load(cfg, record.run_id)
            advance(1)
        try:
            done = _on_base(cfg, dataset, record, run_dir, eval_records, store, akey, bases, loaded)
        except BaseException:
            bases.discard()
            raise
        bases.give_back(loaded, done.model, keep=cfg.keep_base_loaded)
        done.model = None  # the keeper holds the base now, or it is freed with the cell's last reference
        if done.trained is not None:
            done.trained.model = None
    predicted, trained, train_record, retrieved = done.predicted, done.trained, done.train_record, done.retrieved
    work_s = time.perf_counter() - work_start
    train_s = trained.train_s if trained and record.stages[ADAPTER].get("ran") else 0.0
    stored_train_s = train_record.get("train_s", 0.0) if trained else 0.0
    return {
        "run_id": record.run_id,
        "predictions": predicted.predictions,
        "generated_tokens": predicted.generated_tokens,
        "train": train_record,
        "retrieval": retrieved.report if retrieved is not None else {},
        "chunks": retrieved.chunks if retrieved is not None else None,
        "prompt": done.prompt,
        "adapter_dir": str(trained.adapter_dir) if trained else None,
        "model": {"device": loaded.device, "dtype": loaded.dtype, "quantized_4bit": loaded.quantized_4bit},
        "timing": {
            "load_s": loaded.load_s, "train_s": stored_train_s, "generate_s": predicted.generate_s,
            "train_tokens": train_record.get("train_tokens", 0) if trained else 0,
            "train_flops_per_token": train_record.get("flops_per_token"),
            # Everything from load to the last prediction that is not load, train() or generation itself.
            "prep_s": max(0.0, work_s - record.stages[BASE]["load_s"] - train_s - predicted.generate_s),
            "peak_bytes": peak.peak_bytes, "peak_device": peak.device,
            "eval_batch_size": predicted.batch_size, "eval_oom_retries": predicted.oom_retries,
        },
    }


@dataclass
class _OnBase:
    predicted: object  # harness.cell.predict.PredictResult
    trained: object | None  # harness.cell.train.TrainResult
    train_record: dict
    retrieved: Retrieved | None
    prompt: dict
    model: object  # what generated: the base, the base with an adapter, or a merged copy


def _on_base(cfg: RunConfig, dataset: Dataset, record: RunRecord, run_dir: Path, eval_records, store,
             akey: str | None, bases: BaseKeeper, loaded) -> _OnBase:
    """Retrieve → train (or load a stored adapter) → predict, on the loaded base."""
    trained, train_record = None, {}
    model = loaded.model
    retrieved: Retrieved | None = None
    if cfg.method.retrieval:
        record.failed_stage = "retrieve"
        retrieved = retrieve_contexts(cfg, dataset, eval_records)
    contexts = retrieved.contexts if retrieved is not None else None
    if cfg.method.trainer:
        record.failed_stage = "train"
        _inject_failure(cfg, "train")
        stored = store.load(ADAPTER, akey)
        if stored is not None:
            trained = _stored_adapter(loaded, stored)
            train_record = stored["train"]
            record.stages[ADAPTER]["reused_from"] = stored["run_id"]
            log.info("adapter re-used from run %s (stage %s): nothing is trained", stored["run_id"], akey)
        else:
            trained = get_trainer(cfg.method.trainer)(TrainContext(cfg, loaded, dataset, run_dir, contexts,
                                                                   checkpoints=checkpoint_area(run_dir)))
            train_record = _train_record(cfg, trained)
            if akey is not None:
                trained.adapter_dir = _save_adapter_stage(store, akey, trained, train_record, record.run_id)
            record.stages[ADAPTER]["ran"] = True
        discard_checkpoints(checkpoint_area(run_dir))  # the adapter is stored: nothing is left to resume
        model = trained.model
        if loaded.quantized_4bit:
            train_record["eval_model"] = "adapter_on_4bit"
            if cfg.eval.merge_adapter:
                del model  # _merged_for_eval frees the 4-bit model before it loads the 16-bit copy
                model = _merged_for_eval(cfg, trained, loaded, train_record, bases, record.stages[BASE])
    record.failed_stage = "predict"
    _inject_failure(cfg, "predict")
    conversations = [
        prompt_messages(r, cfg.data, cfg.model, contexts[r.id] if contexts is not None else None, dataset.labels)
        for r in eval_records
    ]
    prompt = {
        "template_sha256": prompt_fingerprint(cfg.data, cfg.method.retrieval, dataset.labels),
        "first_eval_id": eval_records[0].id,
        "first_eval_prompt": render_prompts(loaded.tokenizer, conversations[:1])[0],
    }
    predicted = generate(model, loaded.tokenizer, conversations, cfg.eval, progress=cfg.progress)
    return _OnBase(predicted, trained, train_record, retrieved, prompt, model)


def _train_record(cfg: RunConfig, trained) -> dict:
    return {
        "steps": trained.steps,
        "train_s": trained.train_s,
        "train_tokens": trained.train_tokens,
        "tokens_per_s": trained.tokens_per_s,
        "first_loss": trained.first_loss,
        "final_loss": trained.final_loss,
        "trainable_params": trained.trainable_params,
        "total_params": trained.total_params,
        "examples": trained.examples,
        "examples_dropped_by_truncation": trained.examples_given - trained.examples,
        "losses": trained.losses,
        # What training ended with; differs from qlora.* only after out-of-memory retries (listed).
        "batch_size": trained.batch_size,
        "grad_accum": trained.grad_accum,
        "oom_retries": trained.oom_retries,
        # Preempted and resumed: the checkpoint step it resumed from, and every attempt (train_s counts them all).
        "resumed_from_step": trained.resumed_from_step,
        "attempts": trained.attempts,
        "flops_per_token": train_flops_per_token(cfg, trained),
    }


def _save_adapter_stage(store, akey: str, trained, train_record: dict, run_id: str) -> Path:
    """Move the trained adapter into its stage; later cells with the same adapter key load it from there."""

    folder = store.save(ADAPTER, akey, {"run_id": run_id, "train": train_record},
                        fill=lambda staging: shutil.move(str(trained.adapter_dir), str(staging / "adapter")))
    return folder / "adapter"


def _stored_adapter(loaded, stored: dict):
    """The stored adapter on the freshly loaded base, as a TrainResult with the figures of the run that trained it."""
    from peft import PeftModel  # deferred, heavy: only a cell with an adapter imports it


    adapter_dir = Path(stored["folder"]) / "adapter"
    model = PeftModel.from_pretrained(loaded.model, adapter_dir)
    model.eval()
    train = stored["train"]
    return TrainResult(model, adapter_dir, train["train_s"], train["steps"], train["train_tokens"],
                       train["trainable_params"], train["total_params"])


def write_predictions(run_dir: Path, run_id: str, rows: list[dict]) -> Path:
    """The run's per-example rows (question, reference, prediction, per-sample scores) as JSON lines."""
    path = run_dir / f"predictions-{run_id}.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def _judge_ragas(cfg: RunConfig, judge, eval_records, predictions: list[str], chunks: dict[str, list[str]] | None,
                 record: RunRecord):
    """RAGAS metrics by the cell's judge; without one (judge=none) they are recorded as skipped, not as 0.
    A judge that went away since the cell started fails each sample with its reason; nothing else is lost."""
    if judge is None:
        record.judge = {"backend": "none", "skipped": "ragas: no judge configured (judge=none)"}
        log.info("ragas metrics skipped: judge=none (set judge=ollama judge.model=NAME to score them)")
        return None
    names = applicable_metrics(cfg.judge.ragas_metrics, retrieves=chunks is not None)
    samples = [
        JudgedSample(r.id, r.question, prediction, r.answer,
                     chunks[r.id] if chunks is not None else ([r.context] if r.context else []))
        for r, prediction in zip(eval_records, predictions, strict=True)
    ]
    judged = score_ragas(judge, samples, names, cfg.retrieval.embedding_model)
    record.metrics.update(judged.values)
    record.metrics_ci.update(metric_cis({"ragas": judged}, cfg.qlora.seed))
    record.judge = {**redact(judge.settings()), "metrics": judged.accounting, "judge_s": round(judged.judge_s, 3),
                    **judge.stats.to_dict()}
    for name, acc in judged.accounting.items():
        if acc["failed"]:
            log.warning("%s: judge failed on %d of %d samples (%s); they are left out of its mean, not scored 0",
                        name, acc["failed"], len(samples), ", ".join(f"{k}: {v}" for k, v in acc["reasons"].items()))
    return judged


def _merged_for_eval(cfg: RunConfig, trained, loaded, train_record: dict, bases: BaseKeeper, base_stage: dict):
    """The model to evaluate after 4-bit training: a merged 16-bit copy where it fits (the 4-bit model is freed
    first, also by the process's keeper, its adapter being on disk, so the two never share the memory), else the
    4-bit model with its adapter. The reload time counts as loading."""
    if not merged_copy_possible(cfg.model, cfg.hardware, loaded):
        return trained.model
    start = time.perf_counter()
    trained.model = loaded.model = None
    bases.discard()
    _release_memory()
    loaded.model = merged_eval_model(cfg.model, cfg.hardware, loaded, trained.adapter_dir)
    reload_s = time.perf_counter() - start
    loaded.load_s += reload_s
    base_stage["load_s"] = round(base_stage["load_s"] + reload_s, 3)
    train_record["eval_model"] = "merged_16bit"
    return loaded.model


def _inject_failure(cfg: RunConfig, stage: str) -> None:
    if cfg.crash_at == stage:
        log.error("crash_at=%s: killing this process (SIGKILL), as the out-of-memory killer would", stage)
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.fail_at == stage:
        raise RuntimeError(f"injected failure at {stage} (fail_at={stage})")


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


def _release_memory() -> None:
    release_accelerator_memory()


