"""Train once, evaluate many: stage results keyed by what decides them, re-used across cells and sweeps."""

import json

from harness.core.stages import StageStore, adapter_key, predictions_key

COMMON = ("model=tiny_random", "qlora.max_steps=2", "eval.num_examples=4", "tracker=none", "progress=false")


def _records(results):
    return [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]


def _config(**changes):
    config = {"model": {"name": "m"}, "method": {"name": "instruct", "trainer": "instruct", "retrieval": False},
              "qlora": {"r": 8, "seed": 1, "load_in_4bit": True}, "eval": {"max_new_tokens": 64, "batch_size": 8},
              "hardware": {"name": "cpu", "usd_per_hour": 0.1, "num_threads": 2},
              "data": {"name": "d", "metrics": ["bleu"], "train_file": "train.jsonl", "eval_file": "eval.jsonl",
                       "corpus_file": "corpus.jsonl", "system_prompt": "s"},
              "retrieval": {"top_k": 3}}
    for path, value in changes.items():
        group, key = path.split(".")
        config[group] = {**config[group], key: value}
    return config


HASHES = {"train.jsonl": "t", "eval.jsonl": "e", "corpus.jsonl": "c"}


def test_what_enters_each_stage_key():
    base = _config()
    akey = adapter_key(base, HASHES, "1")
    pkey = predictions_key(base, HASHES, "1", akey)
    same = {"eval.max_new_tokens": 32, "eval.batch_size": 1, "data.metrics": ["bleu", "rouge"],
            "hardware.usd_per_hour": 9.0, "hardware.num_threads": 1, "retrieval.top_k": 5, "data.name": "renamed"}
    for path, value in same.items():
        changed = _config(**{path: value})
        assert adapter_key(changed, HASHES, "1") == akey, path
    assert predictions_key(_config(**{"eval.max_new_tokens": 32}), HASHES, "1", akey) != pkey
    for path in ("eval.batch_size", "data.metrics", "hardware.usd_per_hour", "retrieval.top_k", "data.name"):
        changed = _config(**{path: same[path]})
        assert predictions_key(changed, HASHES, "1", adapter_key(changed, HASHES, "1")) == pkey, path
    for path, value in {"qlora.r": 16, "qlora.seed": 2, "data.system_prompt": "t", "model.name": "n"}.items():
        assert adapter_key(_config(**{path: value}), HASHES, "1") != akey, path
    assert adapter_key(base, {**HASHES, "train.jsonl": "t2"}, "1") != akey
    assert adapter_key(base, {**HASHES, "eval.jsonl": "e2"}, "1") == akey  # eval data never trains
    assert adapter_key(base, HASHES, "2") != akey  # another harness version
    # A method that trains nothing has no adapter, and its predictions ignore the LoRA keys (not the 4-bit ones).
    plain = _config(**{"method.trainer": None})
    assert adapter_key(plain, HASHES, "1") is None
    pbase = predictions_key(plain, HASHES, "1", None)
    assert predictions_key(_config(**{"method.trainer": None, "qlora.r": 4}), HASHES, "1", None) == pbase
    assert predictions_key(_config(**{"method.trainer": None, "qlora.load_in_4bit": False}), HASHES, "1", None) != pbase


def test_a_stage_is_written_whole_and_a_second_writer_keeps_the_first(tmp_path):
    store = StageStore(tmp_path)
    assert store.load("predictions", "k") is None
    store.save("predictions", "k", {"run_id": "first"}, fill=lambda f: (f / "x.txt").write_text("1"))
    store.save("predictions", "k", {"run_id": "second"})
    loaded = store.load("predictions", "k")
    assert loaded["run_id"] == "first" and (tmp_path / "stages" / "predictions" / "k" / "x.txt").read_text() == "1"
    assert [p.name for p in (tmp_path / "stages" / "predictions").iterdir()] == ["k"]  # no temporary left


def test_sweeps_reuse_adapters_and_predictions(run_harness, tmp_path):
    results = tmp_path / "results"
    cache = f"cache_dir={tmp_path / 'cache'}"
    first = run_harness("-m", *COMMON, "method=base,instruct", cache, results_dir=results)
    assert first.returncode == 0, first.stderr[-3000:]
    made = {r["method"]: r for r in _records(results)}
    assert made["instruct"]["stages"]["adapter"]["ran"] and made["instruct"]["stages"]["predictions"]["ran"]
    assert made["base"]["stages"]["adapter"] is None
    adapter = made["instruct"]["adapter_dir"]
    assert adapter.endswith("/adapter") and "/stages/adapter/" in adapter

    # Another evaluation setting: no training, the stored adapter is evaluated.
    longer = run_harness("-m", *COMMON, "method=instruct", "eval.max_new_tokens=12", cache, results_dir=results)
    assert longer.returncode == 0, longer.stderr[-3000:]
    record = _records(results)[-1]
    assert record["stages"]["adapter"] == {"key": made["instruct"]["stages"]["adapter"]["key"], "ran": False,
                                           "reused_from": made["instruct"]["run_id"]}
    assert record["stages"]["predictions"]["ran"] and record["train"]["steps"] == made["instruct"]["train"]["steps"]
    assert "adapter re-used from run" in longer.stdout + longer.stderr

    # One more metric: scored from the stored predictions, no model loaded.
    more = run_harness("-m", *COMMON, "method=base,instruct", "data.metrics=[bleu,rouge,ngram,semantic]", cache,
                       results_dir=results)
    assert more.returncode == 0, more.stderr[-3000:]
    rescored = {r["method"]: r for r in _records(results)[-2:]}
    for method in ("base", "instruct"):
        assert rescored[method]["stages"]["predictions"]["reused_from"] == made[method]["run_id"]
        assert rescored[method]["stages"]["predictions"]["ran"] is False
        assert set(rescored[method]["metrics"]) == set(made[method]["metrics"]) | {"chrf", "semantic"}
        assert rescored[method]["metrics"]["rougeL"] == made[method]["metrics"]["rougeL"]
        assert rescored[method]["cost"]["usd_per_1k_generations"] == made[method]["cost"]["usd_per_1k_generations"]
    assert (more.stdout + more.stderr).count("no model is loaded") == 2

    # force=true runs every stage again.
    forced = run_harness("-m", *COMMON, "method=instruct", "force=true", cache, results_dir=results)
    assert forced.returncode == 0 and _records(results)[-1]["stages"]["adapter"]["ran"] is True
