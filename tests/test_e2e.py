"""The harness as a user runs it: Hydra multiruns in a subprocess, ledger, resume, failures, secrets."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

FAKE_WANDB_KEY = "fa4e0000111122223333444455556666deadbeef"
FAKE_HF_TOKEN = "hf_" + "FakeTokenForTestsOnly0123456789abcd"  # assembled: no token-shaped literal in the repo
TINY = ("model=tiny_random", "qlora.max_steps=3", "eval.num_examples=4", "eval.max_new_tokens=8", "progress=false")


def _ledger(results):
    path = results / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_cell_sweep_writes_ledger_tracks_offline_then_resumes(run_harness, tmp_path):
    results = tmp_path / "results"
    secrets = {"WANDB_API_KEY": FAKE_WANDB_KEY, "HF_TOKEN": FAKE_HF_TOKEN}
    args = ("-m", *TINY, "method=base,instruct", "tracker=wandb_offline")
    first = run_harness(*args, results_dir=results, env=secrets)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 completed, 0 skipped, 0 failed" in first.stderr

    rows = _ledger(results)
    assert [(r["model"], r["method"], r["status"]) for r in rows] == [
        ("tiny_random", "base", "completed"), ("tiny_random", "instruct", "completed")]
    base, instruct = rows
    assert base["run_key"] != instruct["run_key"]
    assert base["sweep_id"] == instruct["sweep_id"] != ""
    for row in rows:
        assert set(row["metrics"]) == {"bleu", "rouge1", "rouge2", "rougeL", "chrf", "semantic"}
        assert all(0.0 <= v <= 1.0 for v in row["metrics"].values())
        assert row["metric_samples"] == 4
        assert row["metrics_ci"]["rougeL"]["n"] == 4 and "bleu_sample_mean" in row["metrics_ci"]
        assert row["cost"]["eval_examples"] == 4 and row["cost"]["usd_total"] > 0
        assert row["cost"]["peak_memory_kind"] == "peak_rss" and row["cost"]["peak_memory_gb"] > 0
        assert row["versions"]["transformers"] and row["schema_version"] == 1
        predictions = [json.loads(x) for x in open(row["predictions_file"])]
        assert [p["id"] for p in predictions] == ["hr-eval-001", "hr-eval-002", "hr-eval-003", "hr-eval-004"]
        assert {"prediction", "reference", "rougeL", "bleu"} <= set(predictions[0])
    assert base["train"] == {} and base["adapter_dir"] is None
    assert instruct["train"]["steps"] == 3 and len(instruct["train"]["losses"]) == 3
    assert instruct["train"]["train_tokens"] > 0 and instruct["cost"]["adapter_mb"] > 0
    # The adapter lives in its stage, where any cell with the same training settings re-uses it.
    adapter = Path(instruct["adapter_dir"])
    assert (adapter / "adapter_config.json").is_file() and adapter.parent.parent.parent == results / "stages"

    offline_runs = sorted((results / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(list(run.glob("*.wandb")) for run in offline_runs)

    # Secrets from the environment never land in anything written under results/.
    for path in results.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert FAKE_WANDB_KEY.encode() not in blob and FAKE_HF_TOKEN.encode() not in blob, path

    again = run_harness(*args, results_dir=results, env=secrets)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 completed, 2 skipped, 0 failed" in again.stderr
    assert (again.stdout + again.stderr).count("skipped, already completed") == 2
    assert len(_ledger(results)) == 2

    forced = run_harness(*TINY, "method=base", "tracker=none", "force=true", results_dir=results)
    assert forced.returncode == 0, forced.stderr[-3000:]
    rows = _ledger(results)
    assert len(rows) == 3 and rows[2]["run_key"] == base["run_key"] and rows[2]["run_id"] != base["run_id"]
    # Greedy decoding on the same weights and prompts: the re-run reproduces the scores exactly.
    assert rows[2]["metrics"] == base["metrics"]

    board = subprocess.run([sys.executable, "-m", "harness.leaderboard", "--ledger", str(results / "runs.jsonl"),
                            "--min", "rougeL=0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert board.returncode == 0, board.stdout + board.stderr
    pick = next(line for line in board.stdout.splitlines() if line.startswith("cheapest adequate"))
    assert "data=hr_handbook" in pick and "rougeL >= 0" in pick and "): tiny_random/" in pick
    assert (results / "leaderboard.md").is_file()


def test_failing_cell_is_recorded_and_the_sweep_goes_on(run_harness, tmp_path):
    results = tmp_path / "results"
    # fail_at=train breaks only cells that train: base completes, instruct fails.
    proc = run_harness("-m", *TINY, "method=instruct,base", "tracker=none", "fail_at=train", results_dir=results)
    assert proc.returncode == 1
    assert "1 completed, 0 skipped, 1 failed" in proc.stderr
    rows = {r["method"]: r for r in _ledger(results)}
    assert rows["instruct"]["status"] == "failed"
    assert rows["instruct"]["failed_stage"] == "train"
    assert rows["instruct"]["error_type"] == "RuntimeError"
    assert "injected failure at train" in rows["instruct"]["error"]
    assert rows["base"]["status"] == "completed"
    # A failed cell is not 'done': the next sweep runs it again.
    retry = run_harness(*TINY, "method=instruct", "tracker=none", results_dir=results)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert [r["status"] for r in _ledger(results) if r["method"] == "instruct"] == ["failed", "completed"]
    # total_s is the cell's whole working time: data preparation (tokenising the training set) included.
    cost = _ledger(results)[-1]["cost"]
    assert cost["prep_s"] > 0
    assert cost["total_s"] == pytest.approx(cost["load_s"] + cost["prep_s"] + cost["train_s"] + cost["eval_s"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("qlora.r=0", "qlora.r: must be > 0 (got 0)"),
        ("qlora.r=eight", "qlora.r"),
        ("model=gpt5", "model=gpt5: no such option; known:"),
        ("data.dir=/nonexistent/data", "data.dir: dataset folder /nonexistent/data does not exist"),
    ],
)
def test_user_mistakes_get_a_message_not_a_traceback(run_harness, override, message):
    proc = run_harness(*TINY, "method=base", "tracker=none", override)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert message in output
    assert "Traceback" not in output


def test_preflight_refuses_a_cell_that_cannot_fit(run_harness, tmp_path):
    results = tmp_path / "results"
    proc = run_harness("-m", *TINY, "method=base", "tracker=none", "hardware.memory_gb=0.5", results_dir=results)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tunebench: 0 completed, 0 skipped, 0 failed, 1 refused by the memory preflight" in proc.stderr
    (row,) = _ledger(results)
    assert row["status"] == "skipped" and row["error_type"] == "PreflightRefusal"
    assert "model=tiny_random method=base does not fit hardware=cpu" in row["error"]
    assert row["preflight"]["estimated_peak_gb"] > row["preflight"]["available_gb"] == 0.45
    assert row["metrics"] == {} and row["cost"] == {}
    # preflight=false tries anyway (the estimate is a guard, not a law) and the cell runs.
    forced = run_harness(*TINY, "method=base", "tracker=none", "hardware.memory_gb=0.5", "preflight=false",
                         results_dir=results)
    assert forced.returncode == 0 and _ledger(results)[-1]["status"] == "completed"
