"""One cell's work, in the order it happens: load → retrieve → train → predict → score → cost.

`run_pipeline` is the whole story on one screen; the steps below it do one thing each. Steps pass typed records:
the `CellContext` (harness/cell/context.py), the base model being worked on (`BaseInUse`), the adapter training left
(`Adapter`), and what scoring needs (`Produced`, harness/cell/produced.py), which is also the predictions stage a
later cell with the same key re-uses instead of loading a model. Each step runs in `ctx.stage(name)`, which names
it in the record if it fails.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.cell.answering import answer
from harness.cell.checkpoints import checkpoint_area
from harness.cell.checkpoints import discard as discard_checkpoints
from harness.cell.context import CellContext
from harness.cell.cost import PeakMemory, train_flops_per_token
from harness.cell.models import LoadedModel, merged_copy_possible, merged_eval_model, select_device
from harness.cell.predict import PredictResult, release_freed_memory, render_prompts
from harness.cell.produced import LoadedAs, Produced, Timing
from harness.cell.pruning import training_watch
from harness.cell.rag import Retrieved, retrieve_contexts
from harness.cell.scoring import cell_cost, score
from harness.cell.train import TrainContext, TrainResult, get_trainer
from harness.core.data import prompt_fingerprint, prompt_messages
from harness.core.progress import progress_bar
from harness.core.stages import ADAPTER, BASE, PREDICTIONS
from harness.core.validation import validation_report

log = logging.getLogger("harness")


def run_pipeline(ctx: CellContext) -> list[dict]:
    """Fill `ctx.record` with the cell's results and return its per-example rows. Predictions an earlier run
    stored under the same key are scored again without loading a model."""
    produced = stored_predictions(ctx)
    if produced is None:
        with PeakMemory(select_device(ctx.cfg.hardware)) as peak, ctx.bases.discarded_on_failure():
            with ctx.stage("load"):
                base = load_base(ctx, peak)
            retrieved, adapter = None, None
            if ctx.cfg.method.retrieval:
                with ctx.stage("retrieve"):
                    retrieved = retrieve_contexts(ctx.cfg, ctx.dataset, ctx.eval_records)
            if ctx.cfg.method.trainer:
                with ctx.stage("train"):
                    adapter = train(ctx, base, retrieved)
            with ctx.stage("predict"):
                predicted = predict(ctx, base, retrieved)
                give_back(ctx, base)
                produced = produced_here(ctx, base, adapter, retrieved, predicted)
                store_predictions(ctx, produced)
    with ctx.stage("score"):  # costing the cell is part of scoring it
        rows = score(ctx, produced)
        ctx.record.cost = cell_cost(ctx, produced)
    return rows


@dataclass
class BaseInUse:
    """The base model a cell works on, from its load until it goes back to the process's keeper, and what that
    work measures: its peak memory and its wall time."""

    loaded: LoadedModel  # the cell's own record of it (a merged 16-bit copy replaces its model)
    # What generates: the base, the base with the cell's adapter, or the merged copy. None once given back.
    model: torch.nn.Module | None
    peak: PeakMemory
    started: float  # time.perf_counter() before the load


@dataclass
class Adapter:
    """What the train step leaves: the adapter on disk, and what the record says about its training."""

    folder: Path
    record: dict  # RunRecord.train: the figures of the run that trained it
    # trainer.train() time in this process: 0 for an adapter re-used from the stage store; a resumed cell's
    # earlier attempts are counted in record["train_s"], not here.
    train_s: float
    # A resumed cell's earlier attempts' time before their training (loading, preparing): counted as prep.
    earlier_setup_s: float = 0.0


def stored_predictions(ctx: CellContext) -> Produced | None:
    """The predictions an earlier run stored under this cell's predictions key, if any; notes the stage keys in
    the record either way."""
    ctx.record.stages = {ADAPTER: {"key": ctx.adapter_key, "ran": False} if ctx.adapter_key else None,
                         PREDICTIONS: {"key": ctx.predictions_key, "ran": False}}
    meta = ctx.store.load(PREDICTIONS, ctx.predictions_key) if ctx.reuse else None
    if meta is None:
        return None
    try:
        produced = Produced.from_dict(meta)
    except ValueError as exc:
        log.warning("predictions stage %s is incomplete (%s): they are produced again", meta["folder"], exc)
        return None
    ctx.record.stages[PREDICTIONS]["reused_from"] = produced.run_id
    if ctx.adapter_key:
        ctx.record.stages[ADAPTER]["reused_from"] = produced.run_id
    log.info("predictions re-used from run %s (stage %s): no model is loaded", produced.run_id, ctx.predictions_key)
    return produced


def load_base(ctx: CellContext, peak: PeakMemory) -> BaseInUse:
    """The base model: the one the process's keeper holds if it was loaded the same way, else a fresh load."""
    started = time.perf_counter()
    with progress_bar(f"load {ctx.cfg.model.name}", total=1, unit="model", enabled=ctx.cfg.progress) as advance:
        loaded, ctx.record.stages[BASE] = ctx.bases.load(ctx.cfg, ctx.record.run_id)
        advance(1)
    return BaseInUse(loaded, loaded.model, peak, started)


def train(ctx: CellContext, base: BaseInUse, retrieved: Retrieved | None) -> Adapter:
    """The method's adapter on the base: trained, or loaded from the stage an earlier run stored under this cell's
    adapter key. After 4-bit training, evaluation runs on a merged 16-bit copy where one fits."""
    stored = ctx.store.load(ADAPTER, ctx.adapter_key if ctx.reuse else None)
    if stored is not None:
        trained = _stored_adapter(base.loaded, stored)
        train_record = stored["train"]
        ctx.record.stages[ADAPTER]["reused_from"] = stored["run_id"]
        log.info("adapter re-used from run %s (stage %s): nothing is trained", stored["run_id"], ctx.adapter_key)
    else:
        contexts = retrieved.contexts if retrieved is not None else None
        watch = training_watch(ctx.cfg, base.loaded.tokenizer, ctx.dataset, contexts)
        trained = get_trainer(ctx.cfg.method.trainer)(TrainContext(ctx.cfg, base.loaded, ctx.dataset, ctx.run_dir,
                                                                    contexts, checkpoints=checkpoint_area(ctx.run_dir),
                                                                    watch=watch, cell_started=base.started))
        train_record = _train_record(ctx, trained)
        if ctx.dataset.validation:
            train_record["validation"] = validation_report(ctx.dataset, ctx.cfg.qlora.seed)
        if watch is not None:
            train_record["intermediate"] = watch.report()
        if ctx.reuse:  # force=true and injected failures store nothing
            trained.adapter_dir = _save_adapter_stage(ctx, trained, train_record)
        ctx.record.stages[ADAPTER]["ran"] = True
    discard_checkpoints(checkpoint_area(ctx.run_dir))  # the adapter is stored: nothing is left to resume
    base.model = trained.model
    if base.loaded.quantized_4bit:
        train_record["eval_model"] = "adapter_on_4bit"
        if ctx.cfg.eval.merge_adapter:
            _merge_for_eval(ctx, base, trained, train_record)
    if not ctx.record.stages[ADAPTER]["ran"]:
        return Adapter(trained.adapter_dir, train_record, 0.0)
    here_s = trained.train_s if trained.train_s_here is None else trained.train_s_here
    return Adapter(trained.adapter_dir, train_record, here_s, trained.earlier_setup_s)


def predict(ctx: CellContext, base: BaseInUse, retrieved: Retrieved | None) -> PredictResult:
    """Generated answers, or (eval.scoring=choices) the most likely label with every label's log-likelihood."""
    conversations = _conversations(ctx, retrieved, ctx.eval_records)
    return answer(base.model, base.loaded.tokenizer, conversations, ctx.dataset.labels, ctx.cfg.eval, ctx.precision,
                  ctx.cfg.progress)


def give_back(ctx: CellContext, base: BaseInUse) -> None:
    """The base goes back to the keeper without the cell's adapter, or is freed with the cell's last reference."""
    ctx.bases.give_back(base.loaded, base.model, keep=ctx.cfg.keep_base_loaded)
    base.model = base.loaded.model = None


def produced_here(ctx: CellContext, base: BaseInUse, adapter: Adapter | None, retrieved: Retrieved | None,
                  predicted: PredictResult) -> Produced:
    """What this cell's own steps produced, with what producing it cost."""
    loaded, train = base.loaded, adapter.record if adapter else {}
    work_s = time.perf_counter() - base.started
    first = ctx.eval_records[0]
    prompt = {
        "template_sha256": prompt_fingerprint(ctx.cfg.data, ctx.cfg.method.retrieval, ctx.dataset.labels),
        "first_eval_id": first.id,
        "first_eval_prompt": render_prompts(loaded.tokenizer, _conversations(ctx, retrieved, [first]))[0],
        # How answers were obtained (eval.scoring) and which train examples every prompt showed (eval.fewshot).
        "scoring": ctx.cfg.eval.scoring,
        "fewshot_ids": [shot.id for shot in ctx.shots],
    }
    timing = Timing(
        load_s=loaded.load_s, train_s=train.get("train_s", 0.0) if adapter else 0.0,
        generate_s=predicted.generate_s, train_tokens=train.get("train_tokens", 0) if adapter else 0,
        train_flops_per_token=train.get("flops_per_token"),
        prep_s=max(0.0, work_s - ctx.record.stages[BASE]["load_s"] - (adapter.train_s if adapter else 0.0)
                   - predicted.generate_s) + (adapter.earlier_setup_s if adapter else 0.0),
        peak_bytes=base.peak.read(), peak_device=base.peak.device,
        eval_batch_size=predicted.batch_size, eval_oom_retries=predicted.oom_retries,
        eval_batches=[{"seconds": s, "examples": n}
                      for s, n in zip(predicted.batch_latencies_s, predicted.batch_examples, strict=True)],
    )
    return Produced(
        run_id=ctx.record.run_id, predictions=predicted.predictions, generated_tokens=predicted.generated_tokens,
        train=train, retrieval=retrieved.report if retrieved is not None else {},
        chunks=retrieved.chunks if retrieved is not None else None, prompt=prompt,
        adapter_dir=str(adapter.folder) if adapter else None,
        model=LoadedAs(loaded.device, loaded.dtype, loaded.quantized_4bit), timing=timing,
        labels=list(ctx.dataset.labels) if predicted.label_logliks is not None else None,
        label_logliks=predicted.label_logliks,
    )


def store_predictions(ctx: CellContext, produced: Produced) -> None:
    ctx.record.stages[PREDICTIONS]["ran"] = True
    ctx.store.save(PREDICTIONS, ctx.predictions_key, produced.to_dict())


def _conversations(ctx: CellContext, retrieved: Retrieved | None, records) -> list[list[dict]]:
    contexts = retrieved.contexts if retrieved is not None else None
    return [prompt_messages(r, ctx.cfg.data, ctx.cfg.model, contexts[r.id] if contexts is not None else None,
                            ctx.dataset.labels, ctx.shots) for r in records]


def _train_record(ctx: CellContext, trained: TrainResult) -> dict:
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
        "truncation": trained.truncation,
        "losses": trained.losses,
        # What training ended with; differs from qlora.* only after out-of-memory retries (listed).
        "batch_size": trained.batch_size,
        "grad_accum": trained.grad_accum,
        "oom_retries": trained.oom_retries,
        # Preempted and resumed: the checkpoint step it resumed from, and every attempt (train_s counts them all).
        "resumed_from_step": trained.resumed_from_step,
        "attempts": trained.attempts,
        "flops_per_token": train_flops_per_token(ctx.cfg, trained),
    }


def _save_adapter_stage(ctx: CellContext, trained: TrainResult, train_record: dict) -> Path:
    """Move the trained adapter into its stage; later cells with the same adapter key load it from there."""
    folder = ctx.store.save(ADAPTER, ctx.adapter_key, {"run_id": ctx.record.run_id, "train": train_record},
                            fill=lambda staging: shutil.move(str(trained.adapter_dir), str(staging / "adapter")))
    return folder / "adapter"


def _stored_adapter(loaded: LoadedModel, stored: dict) -> TrainResult:
    """The stored adapter on the freshly loaded base, as a TrainResult with the figures of the run that trained it."""
    from peft import PeftModel  # deferred, heavy: only a cell with an adapter imports it

    adapter_dir = Path(stored["folder"]) / "adapter"
    model = PeftModel.from_pretrained(loaded.model, adapter_dir)
    model.eval()
    train = stored["train"]
    return TrainResult(model, adapter_dir, train["train_s"], train["steps"], train["train_tokens"],
                       train["trainable_params"], train["total_params"])


def _merge_for_eval(ctx: CellContext, base: BaseInUse, trained: TrainResult, train_record: dict) -> None:
    """After 4-bit training: evaluate a merged 16-bit copy where it fits (the 4-bit model is freed first, also by
    the process's keeper, its adapter being on disk, so the two never share the memory), else the 4-bit model with
    its adapter. The reload time counts as loading."""
    if not merged_copy_possible(ctx.cfg.model, ctx.cfg.hardware, base.loaded):
        return
    start = time.perf_counter()
    base.model = trained.model = base.loaded.model = None
    ctx.bases.discard()
    release_freed_memory()
    base.model = base.loaded.model = merged_eval_model(ctx.cfg.model, ctx.cfg.hardware, base.loaded,
                                                       trained.adapter_dir)
    reload_s = time.perf_counter() - start
    base.loaded.load_s += reload_s
    base_stage = ctx.record.stages[BASE]
    base_stage["load_s"] = round(base_stage["load_s"] + reload_s, 3)
    train_record["eval_model"] = "merged_16bit"
