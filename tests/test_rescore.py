"""python -m harness.rescore: more metrics on a finished sweep, scored from stored predictions."""

import json

from harness.rescore import main


def _records(results):
    return [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]


def test_rescore_adds_a_metric_without_generating(run_harness, tmp_path, capsys):
    results = tmp_path / "results"
    cache = tmp_path / "cache"
    proc = run_harness("-m", "model=tiny_random", "method=base,instruct", "qlora.max_steps=2", "eval.num_examples=4",
                       "data.metrics=[bleu]", "tracker=none", "progress=false", f"cache_dir={cache}",
                       results_dir=results)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = _records(results)
    sweep = first[0]["sweep_id"]
    assert main(["--ledger", str(results / "runs.jsonl"), "--sweep", sweep, "--add", "rouge",
                 "--cache-dir", str(cache)]) == 0
    assert "rescored 2 of 2 runs" in capsys.readouterr().err
    after = _records(results)[len(first):]
    assert len(after) == 2
    for old, new in zip(sorted(first, key=lambda r: r["method"]), sorted(after, key=lambda r: r["method"]),
                        strict=True):
        assert new["run_key"] != old["run_key"] and new["config"]["data"]["metrics"] == ["bleu", "rouge"]
        assert new["metrics"]["bleu"] == old["metrics"]["bleu"] and "rougeL" in new["metrics"]
        assert new["stages"]["predictions"] == {**old["stages"]["predictions"], "ran": False,
                                                "reused_from": old["run_id"]}
        assert new["cost"]["usd_per_1k_generations"] == old["cost"]["usd_per_1k_generations"]
    # Again: the new cells are complete already, so nothing is appended.
    assert main(["--ledger", str(results / "runs.jsonl"), "--sweep", sweep, "--add", "rouge",
                 "--cache-dir", str(cache)]) == 0
    assert "(already rescored before: 2)" in capsys.readouterr().err and len(_records(results)) == 4
    # The leaderboard shows each result once: the re-scored record stands for the predictions it shares.
    from harness.board.ranking import latest_per_key

    assert sorted(r["run_key"] for r in latest_per_key(_records(results))) == sorted(r["run_key"] for r in after)


def test_rescore_says_what_it_cannot_do(tmp_path, capsys):
    ledger = tmp_path / "runs.jsonl"
    assert main(["--ledger", str(ledger), "--add", "rouge"]) == 2
    assert "no completed runs" in capsys.readouterr().err
