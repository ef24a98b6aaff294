"""Ranking, the cheapest adequate pick with reasons, and clear errors for bad options."""

import json

import pytest

from harness.board.ranking import latest_per_key, pick_cheapest, rank
from harness.leaderboard import main


def _row(key, model, method, rougeL, usd_1k, status="completed", r=8, **extra):
    return {"run_key": key, "run_id": key + "-id", "model": model, "method": method, "status": status,
            "data": extra.get("data", "hr"),
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


def _with_ci(row, low, high):
    return {**row, "metrics_ci": {"rougeL": {"mean": row["metrics"]["rougeL"], "low": low, "high": high}}}


def test_a_pick_whose_interval_reaches_below_the_floor_carries_a_caution():
    rows = [_with_ci(ROWS[1], 0.30, 0.52), _with_ci(ROWS[3], 0.48, 0.62), ROWS[0]]
    verdict = pick_cheapest(rank(rows, "rougeL"), {"rougeL": 0.4}, "usd_per_1k_generations")
    assert verdict.pick["run_key"] == "b"  # the pick itself still goes by the point estimate
    assert verdict.caution == ("meets rougeL >= 0.4 on its point estimate, but the 95% interval reaches past the "
                               "bar (rougeL 0.410 [0.300, 0.520]): not shown with confidence; more eval examples "
                               "or seeds would narrow it")
    clear = pick_cheapest(rank(rows, "rougeL"), {"rougeL": 0.45}, "usd_per_1k_generations")
    assert clear.pick["run_key"] == "d" and clear.caution == ""  # 0.48 is above 0.45: shown
    # A ceiling looks at the interval's high end: usd is lower-is-better, but only quality has an interval here.
    assert pick_cheapest(rank(ROWS, "rougeL"), {"rougeL": 0.4}, "usd_per_1k_generations").caution == ""


def test_a_row_short_of_the_floor_whose_interval_reaches_it_says_so():
    rows = [_with_ci(ROWS[2], 0.10, 0.45), _with_ci(ROWS[1], 0.35, 0.47)]
    reasons = {row["run_key"]: reason for row, reason in
               pick_cheapest(rank(rows, "rougeL"), {"rougeL": 0.4}, "usd_per_1k_generations").rejected}
    assert reasons["c"] == ("rougeL 0.220 < 0.4 (its 95% interval [0.100, 0.450] reaches the bar: not shown to "
                            "fall short)")


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
    assert "cheapest adequate (data=hr; rougeL >= 0.4): gemma_2b/instruct r=8" in out
    assert "not picked: gemma_2b/base [c]: rougeL 0.220 < 0.4" in out
    report = (ledger.parent / "leaderboard.md").read_text()
    assert report.index("llama3_8b") < report.index("phi_2") < report.index("| gemma_2b | base")
    assert "**gemma_2b/instruct r=8 lr=0.0002 [b]**" in report


def test_the_caution_reaches_the_terminal_the_markdown_and_the_page(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    rows = [_with_ci(ROWS[1], 0.30, 0.52), *ROWS[2:4]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--ledger", str(path), "--min", "rougeL=0.4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "caution: meets rougeL >= 0.4 on its point estimate, but the 95% interval reaches past the bar" in out
    assert "**Caution**: meets rougeL >= 0.4" in (tmp_path / "leaderboard.md").read_text()
    assert '<div class="verdict caution">Caution: meets rougeL &gt;= 0.4' in (tmp_path / "report.html").read_text()


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


# --- judged metrics: rows scored on different samples are not ranked together unless asked --------------

def _judged_row(key, faithfulness, scored, failed_ids, usd_1k, reasons=None):
    from harness.metrics.ragas import scored_set_hash

    ids = [f"q{i}" for i in range(scored + len(failed_ids))]
    kept = [i for i in ids if i not in failed_ids]
    row = _row(key, "m-" + key, "instruct", 0.4, usd_1k)
    row["eval_set"] = "same-eval-set"
    row["metrics"]["faithfulness"] = faithfulness
    row["judge"] = {"backend": "ollama", "model": "judge", "metrics": {"faithfulness": {
        "scored": len(kept), "failed": len(failed_ids), "failed_ids": failed_ids,
        "reasons": reasons or ({"unparseable judge output": len(failed_ids)} if failed_ids else {}),
        "scored_set": scored_set_hash(kept)}}}
    return row


@pytest.fixture
def judged_ledger(tmp_path):
    rows = [_judged_row("full1", 0.70, 20, [], 0.5), _judged_row("full2", 0.60, 20, [], 0.4),
            _judged_row("part", 0.90, 18, ["q3", "q7"], 0.1)]
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ranking_on_a_judged_metric_with_different_scored_sets_is_refused(judged_ledger, capsys):
    assert main(["--ledger", str(judged_ledger), "--min", "faithfulness=0.5"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "faithfulness was computed on different samples in different runs" in out
    assert "m-part/instruct [part]: 18 of 20 scored (unparseable judge output: 2) <- differs" in out
    assert "m-full1/instruct [full1]: 20 of 20 scored;" in out
    assert "--allow-different-samples" in out
    # Metrics every run computed on the same samples still rank.
    assert main(["--ledger", str(judged_ledger), "--min", "rougeL=0.3"]) == 0


def test_allowing_different_samples_ranks_and_marks_the_odd_row(judged_ledger, capsys):
    assert main(["--ledger", str(judged_ledger), "--min", "faithfulness=0.5", "--allow-different-samples"]) == 0
    out = capsys.readouterr().out
    pick = next(line for line in out.splitlines() if line.startswith("cheapest adequate"))
    assert "data=hr" in pick and "faithfulness >= 0.5" in pick and pick.split("): ")[1].startswith("m-part/instruct")
    report = (judged_ledger.parent / "leaderboard.md").read_text()
    assert "0.9000 (18/20)*" in report and "| 0.7000 |" in report


def test_runs_on_different_eval_sets_do_not_rank_together(tmp_path, capsys):
    rows = [_row("x", "m1", "base", 0.3, 0.1), _row("y", "m2", "base", 0.5, 0.2), _row("z", "m3", "base", 0.4, 0.3)]
    rows[0]["eval_set"], rows[1]["eval_set"], rows[2]["eval_set"] = "set-A", "set-A", "set-B"
    ledger = tmp_path / "runs.jsonl"
    ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.35"]) == 0
    out = capsys.readouterr().out
    # Two boards, each with its own pick: z is alone on its eval set and never ranked beside x and y.
    picks = [line for line in out.splitlines() if line.startswith("cheapest adequate")]
    assert len(picks) == 2
    assert "eval set set-A" in picks[0] and "m2/base" in picks[0]
    assert "eval set set-B" in picks[1] and "m3/base" in picks[1]


def test_board_options_name_the_files_beside_the_report_and_refuse_an_unknown_cost(tmp_path):
    from harness.board.options import BoardOptions, default_out
    from harness.board.ranking import LeaderboardError
    from harness.board.sources import Source

    ledger = Source("ledger", str(tmp_path / "runs.jsonl"))
    default = BoardOptions(source=ledger, out=default_out(ledger))
    assert default.out == tmp_path / "leaderboard.md"
    assert default.figure_paths == (tmp_path / "pareto.png", tmp_path / "report.html")
    named = BoardOptions(source=ledger, out=tmp_path / "shop.md")
    assert named.figure_paths == (tmp_path / "shop-pareto.png", tmp_path / "shop-report.html")
    with pytest.raises(LeaderboardError, match="--cost usd_per_token: not a cost figure; choose one of usd_per_1k"):
        BoardOptions(source=ledger, out=tmp_path / "x.md", cost="usd_per_token")


def test_nothing_below_the_command_line_reads_argparse():
    """The board gets BoardOptions; an argparse namespace stays in harness/leaderboard.py."""
    import ast
    from pathlib import Path

    board = Path(__file__).resolve().parent.parent / "harness" / "board"
    for path in board.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "argparse" not in imported, path.name
        names = {arg.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for arg in node.args.args}
        assert "args" not in names, f"{path.name}: a function still takes `args`"
