"""Ranking, the cheapest adequate pick with reasons, and clear errors for bad options."""

import json

import pytest

from harness.leaderboard import latest_per_key, main, pick_cheapest, rank


def _row(key, model, method, rougeL, usd_1k, status="completed", r=8, **extra):
    return {"run_key": key, "run_id": key + "-id", "model": model, "method": method, "status": status,
            "finished_at": "2026-11-21T00:00:00", "sweep_id": extra.get("sweep", "s1"),
            "config": {"qlora": {"r": r, "lr": 2e-4}}, "train": {"steps": 3} if method != "base" else {},
            "metrics": {} if status != "completed" else {"rougeL": rougeL, "bleu": rougeL / 2},
            "cost": {} if status != "completed" else {"usd_per_1k_generations": usd_1k, "usd_total": usd_1k / 10,
                                                      "train_s": 1.0, "eval_tokens_per_s": 20.0, "peak_memory_gb": 1.0},
            "error_type": "RuntimeError" if status == "failed" else None}


ROWS = [
    _row("a", "llama3_8b", "instruct", 0.62, 0.90),
    _row("b", "gemma_2b", "instruct", 0.41, 0.20),
    _row("c", "gemma_2b", "base", 0.22, 0.18),
    _row("d", "phi_2", "instruct", 0.55, 0.30),
    _row("e", "mistral_7b_v03", "instruct", None, None, status="failed"),
]


def test_rank_orders_completed_by_metric_then_failures():
    assert [r["run_key"] for r in rank(ROWS, "rougeL")] == ["a", "d", "b", "c", "e"]


def test_cheapest_adequate_pick_and_reasons():
    verdict = pick_cheapest(rank(ROWS, "rougeL"), {"rougeL": 0.4}, "usd_per_1k_generations")
    assert verdict.pick["run_key"] == "b"
    reasons = {row["run_key"]: reason for row, reason in verdict.rejected}
    assert reasons["c"] == "rougeL 0.220 < 0.4"
    assert reasons["e"].startswith("failed")
    assert "costs more" in reasons["a"] and "costs more" in reasons["d"]
    assert set(reasons) == {"a", "c", "d", "e"}


def test_every_floor_must_hold():
    verdict = pick_cheapest(ROWS, {"rougeL": 0.4, "bleu": 0.25}, "usd_per_1k_generations")
    assert verdict.pick["run_key"] == "d"
    assert pick_cheapest(ROWS, {"rougeL": 0.99}, "usd_per_1k_generations").pick is None


def test_latest_completed_record_wins_per_key():
    failed_then_done = [_row("k", "m", "base", None, None, status="failed"), _row("k", "m", "base", 0.3, 0.1)]
    assert latest_per_key(failed_then_done)[0]["status"] == "completed"
    done_then_failed = list(reversed(failed_then_done))
    assert latest_per_key(done_then_failed)[0]["status"] == "completed"


@pytest.fixture
def ledger(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_cli_prints_table_pick_and_writes_markdown(ledger, capsys):
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.4"]) == 0
    out = capsys.readouterr().out
    assert "cheapest adequate: gemma_2b/instruct r=8" in out
    assert "not picked: gemma_2b/base [c]: rougeL 0.220 < 0.4" in out
    report = (ledger.parent / "leaderboard.md").read_text()
    assert report.index("llama3_8b") < report.index("phi_2") < report.index("| gemma_2b | base")
    assert "**gemma_2b/instruct r=8 lr=0.0002 [b]**" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min", "rougeL"], "expected METRIC=NUMBER"),
        (["--min", "rougeL=high"], "expected METRIC=NUMBER"),
        (["--min", "meteor=0.2"], "unknown metric(s) ['meteor']; the ledger has: rougeL, bleu"),
        (["--sweep", "nope"], "no runs in"),
    ],
)
def test_cli_errors_are_plain_messages(ledger, capsys, args, message):
    assert main(["--ledger", str(ledger), *args]) == 2
    assert message in capsys.readouterr().out.replace("\n", "")


def test_empty_ledger_tells_how_to_fill_it(tmp_path, capsys):
    assert main(["--ledger", str(tmp_path / "none.jsonl")]) == 2
    assert "run a sweep first" in capsys.readouterr().out
