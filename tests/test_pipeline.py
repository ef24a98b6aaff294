"""The cell's pipeline (harness/cell/pipeline.py): the `stage` helper that names a failing step in the record and
injects the test failures, the predictions stage's record (`Produced`) as the stage store keeps it, and a cell
scored from stored predictions without a model."""

import json

import pytest
from omegaconf import OmegaConf

from harness.cell.base_keeper import BaseKeeper
from harness.cell.context import CellContext, stage
from harness.cell.pipeline import run_pipeline
from harness.cell.produced import LoadedAs, Produced, Timing
from harness.cell.run import cell_key, new_record
from harness.core.config import to_run_config
from harness.core.ledger import RunRecord
from harness.core.stages import PREDICTIONS

TINY = ("model=tiny_random", "method=instruct", "eval.num_examples=3", "data.metrics=[rouge]", "tracker=none",
        "progress=false")


def _record() -> RunRecord:
    return RunRecord(run_key="k", run_id="r", status="failed", started_at="", finished_at="", sweep_id="s",
                     model="m", method="x", data="d", hardware="cpu", config={})


def test_a_stage_that_raises_is_named_in_the_record_and_one_that_completes_is_not():
    record = _record()
    with stage(record, "load"):
        assert record.failed_stage == "load"  # an interrupt arriving now would name it
    assert record.failed_stage is None
    with pytest.raises(ValueError, match="boom"), stage(record, "train"):
        raise ValueError("boom")
    assert record.failed_stage == "train"


def test_the_innermost_stage_that_raised_is_named_and_interrupts_count_too():
    record = _record()
    with pytest.raises(KeyboardInterrupt), stage(record, "predict"), stage(record, "retrieve"):
        raise KeyboardInterrupt
    assert record.failed_stage == "retrieve"
    record = _record()
    with stage(record, "predict"):
        with stage(record, "retrieve"):
            pass
        assert record.failed_stage == "predict"  # back to the enclosing stage


@pytest.mark.parametrize("name", ["load", "train", "predict", "score"])
def test_fail_at_fails_the_stage_it_names_and_no_other(name):
    record = _record()
    for other in {"load", "retrieve", "train", "predict", "score"} - {name}:
        with stage(record, other, fail_at=name):
            pass
    ran = []
    with pytest.raises(RuntimeError, match=f"injected failure at {name} \\(fail_at={name}\\)"):
        with stage(record, name, fail_at=name):
            ran.append(name)
    assert ran == [] and record.failed_stage == name  # it fails as it starts, before its work


def _produced(**changes) -> Produced:
    timing = Timing(load_s=1.5, train_s=12.0, generate_s=3.25, train_tokens=900, train_flops_per_token=2.5e9,
                    prep_s=0.75, peak_bytes=123456789, peak_device="cpu", eval_batch_size=4,
                    eval_oom_retries=[{"batch_size": 8, "error": "CUDA out of memory"}])
    values = dict(run_id="abc123", predictions=["one", "two"], generated_tokens=[3, 5],
                  train={"steps": 2, "train_s": 12.0, "losses": [[1, 2.5]]}, retrieval={"recall_at_k": 0.5},
                  chunks={"q1": ["a chunk"], "q2": []}, prompt={"template_sha256": "f00", "first_eval_id": "q1"},
                  adapter_dir="/x/stages/adapter/k/adapter", model=LoadedAs("cpu", "float32", False), timing=timing)
    return Produced(**{**values, **changes})


def test_produced_round_trips_through_the_stage_store(tmp_path):
    from harness.core.stages import StageStore

    produced = _produced()
    meta = produced.to_dict()
    # The stage file's format: the keys stored stages have always had, in that order, then the choice-scoring ones.
    assert list(meta) == ["run_id", "predictions", "generated_tokens", "train", "retrieval", "chunks", "prompt",
                          "adapter_dir", "model", "timing", "labels", "label_logliks"]
    assert list(meta["timing"]) == ["load_s", "train_s", "generate_s", "train_tokens", "train_flops_per_token",
                                    "prep_s", "peak_bytes", "peak_device", "eval_batch_size", "eval_oom_retries",
                                    "eval_batches"]
    assert meta["model"] == {"device": "cpu", "dtype": "float32", "quantized_4bit": False}
    store = StageStore(tmp_path)
    store.save(PREDICTIONS, "key", meta)
    stored = store.load(PREDICTIONS, "key")  # JSON on disk, plus the folder it was read from
    assert stored["folder"].endswith("key")
    assert Produced.from_dict(stored) == produced
    assert Produced.from_dict(json.loads(json.dumps(_produced(chunks=None, adapter_dir=None).to_dict()))) == \
        _produced(chunks=None, adapter_dir=None)


def test_an_incomplete_predictions_stage_says_what_it_lacks():
    meta = _produced().to_dict()
    del meta["generated_tokens"]
    with pytest.raises(ValueError, match="a predictions stage lacks generated_tokens"):
        Produced.from_dict(meta)
    meta = _produced().to_dict()
    del meta["timing"]["peak_bytes"]
    with pytest.raises(ValueError, match="its timing lacks peak_bytes"):
        Produced.from_dict(meta)


class _LoadAttempted(Exception):
    pass


class _NoLoading(BaseKeeper):
    def load(self, cfg, run_id):
        raise _LoadAttempted("a cell with stored predictions must not load a model")


def _context(compose_cfg, tmp_path, *overrides, bases=None) -> CellContext:
    composed = compose_cfg(*TINY, f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}",
                           *overrides)
    cfg = to_run_config(composed)
    cell = cell_key(cfg, OmegaConf.to_container(composed, resolve=True))
    return CellContext(cfg, cell.dataset, new_record(cfg, cell, None), cell.config, bases or _NoLoading())


def test_a_cell_with_stored_predictions_is_scored_and_costed_without_a_model(compose_cfg, tmp_path):
    ctx = _context(compose_cfg, tmp_path)
    references = [r.answer for r in ctx.eval_records]
    stored = _produced(predictions=references, generated_tokens=[4, 6, 8], adapter_dir=None)
    ctx.store.save(PREDICTIONS, ctx.predictions_key, stored.to_dict())

    rows = run_pipeline(ctx)

    record = ctx.record
    assert record.failed_stage is None
    assert record.stages[PREDICTIONS] == {"key": ctx.predictions_key, "ran": False, "reused_from": "abc123"}
    assert record.stages["adapter"] == {"key": ctx.adapter_key, "ran": False, "reused_from": "abc123"}
    assert record.metrics["rougeL"] == pytest.approx(1.0) and record.metric_samples == 3
    assert record.train == stored.train and record.retrieval == stored.retrieval
    # The cost is the stored run's, priced at this cell's hardware preset.
    assert record.cost["train_s"] == 12.0 and record.cost["eval_s"] == 3.25 and record.cost["load_s"] == 1.5
    assert record.cost["total_s"] == pytest.approx(1.5 + 0.75 + 12.0 + 3.25)
    assert record.cost["eval_generated_tokens"] == 18 and record.cost["peak_memory_gb"] == 123456789 / 2**30
    assert record.cost["eval_oom_retries"] == stored.timing.eval_oom_retries and record.cost["dtype"] == "float32"
    written = [json.loads(line) for line in open(record.predictions_file, encoding="utf-8")]
    assert written == rows and [row["prediction"] for row in rows] == references
    assert [row["generated_tokens"] for row in rows] == [4, 6, 8]


def test_an_injected_failure_names_its_stage_and_never_reuses_a_stored_one(compose_cfg, tmp_path):
    ctx = _context(compose_cfg, tmp_path, "fail_at=load", bases=BaseKeeper())
    assert not ctx.reuse  # fail_at runs every stage, so the one it names is met
    ctx.store.save(PREDICTIONS, ctx.predictions_key, _produced().to_dict())
    with pytest.raises(RuntimeError, match="injected failure at load"):
        run_pipeline(ctx)
    assert ctx.record.failed_stage == "load" and ctx.record.stages[PREDICTIONS]["ran"] is False
    assert "reused_from" not in ctx.record.stages[PREDICTIONS]


def test_an_incomplete_stored_stage_is_produced_again(compose_cfg, tmp_path, caplog):
    ctx = _context(compose_cfg, tmp_path)
    meta = _produced().to_dict()
    del meta["timing"]
    ctx.store.save(PREDICTIONS, ctx.predictions_key, meta)
    with pytest.raises(_LoadAttempted):
        run_pipeline(ctx)
    assert ctx.record.failed_stage == "load"
    assert "is incomplete (a predictions stage lacks timing): they are produced again" in caplog.text
