"""One loaded base for many adapters: consecutive cells of one process share the base, and nothing they report
depends on it (predictions, losses and adapters are those of cells that load their own)."""

import gc
import hashlib
import json
import pickle
import weakref
from pathlib import Path

import pytest
import torch

from harness.cell.base_keeper import BaseKeeper, loading_key
from harness.cell.train import TrainContext, get_trainer
from harness.core.config import to_run_config
from harness.core.data import load_dataset

TINY = ("model=tiny_random", "qlora.max_steps=2", "qlora.lr=0.05", "progress=false", "tracker=none")


def _cfg(compose_cfg, tmp_path, *overrides):
    return to_run_config(compose_cfg(*TINY, f"cache_dir={tmp_path / 'cache'}", *overrides))


def _logits(model):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10]])).logits.clone()


def test_the_loading_key_changes_only_with_how_the_base_loads(compose_cfg, tmp_path):
    key = loading_key(_cfg(compose_cfg, tmp_path, "method=instruct"))
    for same in ("method=base", "method=causal", "qlora.r=64", "qlora.lr=0.1", "eval.max_new_tokens=9",
                 "eval.batch_size=1", "hardware.usd_per_hour=9", "data=shop_catalog"):
        assert loading_key(_cfg(compose_cfg, tmp_path, same)) == key, same
    # The tiny model's weights come from the seed; another model, 4-bit, or another cache load another base.
    for other in ("qlora.seed=7", "hardware=cpu_qlora", "model.hidden_size=32"):
        assert loading_key(_cfg(compose_cfg, tmp_path, other)) != key, other
    assert loading_key(to_run_config(compose_cfg(*TINY, f"cache_dir={tmp_path / 'other'}"))) != key
    smol = to_run_config(compose_cfg("model=smollm2_135m", "qlora.seed=1"))
    assert loading_key(smol) == loading_key(to_run_config(compose_cfg("model=smollm2_135m", "qlora.seed=2")))


def test_a_kept_base_comes_back_as_a_fresh_load_would_leave_it(compose_cfg, tmp_path):
    cfg = _cfg(compose_cfg, tmp_path, "method=instruct")
    dataset = load_dataset(cfg.data)
    keeper = BaseKeeper()
    loaded, stage = keeper.load(cfg, "first")
    assert stage["ran"] is True and stage["load_s"] >= 0 and stage["key"] == loading_key(cfg)
    base = loaded.model
    fresh_logits = _logits(base)

    trained = get_trainer("instruct")(TrainContext(cfg, loaded, dataset, tmp_path / "run1", None))
    lora = [weakref.ref(module) for name, module in base.named_modules() if name.endswith("lora_A")]
    assert lora  # peft attached the adapter in place
    adapted_logits = _logits(trained.model)
    keeper.give_back(loaded, trained.model)

    assert not any("lora_" in name for name, _ in base.named_modules())
    gc.collect()
    assert all(ref() is None for ref in lora)  # the adapter's weights are freed, not only detached
    assert "forward" not in vars(base)  # accelerate's autocast wrapper is gone
    assert not base.training and not base.is_gradient_checkpointing
    assert torch.equal(_logits(base), fresh_logits)
    assert not torch.equal(adapted_logits, fresh_logits)  # the adapter did change the model it was on

    again, stage = keeper.load(cfg, "second")
    assert again.model is base
    assert stage == {"key": loading_key(cfg), "ran": False, "reused_from": "first", "load_s": 0.0}
    # The cell's cost figures keep the base's real load time, so a cell is as dear whichever came first.
    assert again.load_s == loaded.load_s > 0

    # A second adapter on the kept base trains exactly as on a fresh load.
    retrained = get_trainer("instruct")(TrainContext(cfg, again, dataset, tmp_path / "run2", None))
    retrained_logits = _logits(retrained.model)
    keeper.give_back(again, retrained.model)
    fresh, _ = BaseKeeper().load(cfg, "fresh")
    on_fresh = get_trainer("instruct")(TrainContext(cfg, fresh, dataset, tmp_path / "run3", None))
    assert retrained.losses == on_fresh.losses == trained.losses
    assert torch.equal(retrained_logits, _logits(on_fresh.model)) and torch.equal(retrained_logits, adapted_logits)


def test_another_base_frees_the_held_one_and_nothing_else_is_kept(compose_cfg, tmp_path):
    keeper = BaseKeeper()
    loaded, _ = keeper.load(_cfg(compose_cfg, tmp_path), "a")
    first = weakref.ref(loaded.model)
    keeper.give_back(loaded, loaded.model)
    del loaded
    other, stage = keeper.load(_cfg(compose_cfg, tmp_path, "qlora.seed=7"), "b")
    gc.collect()
    assert stage["ran"] is True and first() is None  # the first base is gone, not held beside the second
    # A cell that evaluated another model (a merged copy) or asked not to keep: nothing is held, so the next
    # cell on the same base loads it afresh.
    held = weakref.ref(other.model)
    keeper.give_back(other, torch.nn.Linear(2, 2))
    del other
    gc.collect()
    assert held() is None
    again, stage = keeper.load(_cfg(compose_cfg, tmp_path, "qlora.seed=7"), "c")
    assert stage["ran"] is True
    held = weakref.ref(again.model)
    keeper.give_back(again, again.model, keep=False)
    del again
    gc.collect()
    assert held() is None
    # A launcher that pickles the task function carries an empty keeper, never a model.
    again, _ = keeper.load(_cfg(compose_cfg, tmp_path), "d")
    assert len(pickle.dumps(keeper)) < 200
    _, stage = pickle.loads(pickle.dumps(keeper)).load(_cfg(compose_cfg, tmp_path), "e")
    assert stage["ran"] is True


def _cells(results: Path) -> dict:
    cells = {}
    for line in (results / "runs.jsonl").read_text().splitlines():
        record = json.loads(line)
        adapter = Path(record["adapter_dir"]) / "adapter_model.safetensors" if record["adapter_dir"] else None
        cells[(record["method"], record["config"]["qlora"]["r"])] = {
            "record": record,
            "predictions": [json.loads(row)["prediction"]
                            for row in Path(record["predictions_file"]).read_text().splitlines()],
            "losses": record["train"].get("losses"),
            "adapter": hashlib.sha256(adapter.read_bytes()).hexdigest() if adapter else None,
        }
    return cells


@pytest.mark.parametrize("hardware", ["cpu", pytest.param("cpu_qlora", marks=pytest.mark.slow)])
def test_a_sweep_with_a_kept_base_reports_what_separate_loads_report(run_harness, tmp_path, hardware):
    """The same sweep twice, every cell loading its own base and the base kept between cells: the same
    predictions, losses and adapter weights, cell by cell. With 4-bit on the CPU (bitsandbytes' path on a GPU),
    evaluation on the 4-bit model itself (no merged copy) so that the base can stay."""
    args = ("-m", *TINY, "eval.num_examples=3", "eval.max_new_tokens=6", f"hardware={hardware}",
            "eval.merge_adapter=false", "method=instruct,base,causal", "qlora.r=4,8", f"cache_dir={tmp_path / 'c'}")
    for keep in ("false", "true"):
        proc = run_harness(*args, f"keep_base_loaded={keep}", results_dir=tmp_path / keep)
        assert proc.returncode == 0, proc.stderr[-3000:]
    separate, kept = _cells(tmp_path / "false"), _cells(tmp_path / "true")
    assert set(separate) == set(kept) and len(kept) == 6
    for cell in separate:
        for what in ("predictions", "losses", "adapter"):
            assert kept[cell][what] == separate[cell][what], (cell, what)
        assert kept[cell]["record"]["cost"]["load_s"] > 0
    assert any(cell["predictions"] != kept[("base", 4)]["predictions"] for cell in kept.values())  # adapters matter
    loads = [c["record"]["stages"].get("base") for c in kept.values()]
    assert all(stage["ran"] for stage in (c["record"]["stages"].get("base") for c in separate.values()) if stage)
    # base r=8 re-uses base r=4's predictions and loads nothing; the first cell loads.
    assert loads[0]["ran"] is True and kept[("base", 8)]["record"]["stages"].get("base") is None
    ran = [stage["ran"] for stage in loads if stage]
    if hardware == "cpu_qlora" and _bitsandbytes_repacks_for_this_cpu():
        # A 4-bit base that bitsandbytes repacked for its CPU kernel is not kept: every cell loads.
        assert ran == [True] * 5
    else:
        assert ran == [True, False, False, False, False]


def _bitsandbytes_repacks_for_this_cpu() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())
