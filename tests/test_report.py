"""The picture and the page: pareto.png per board, report.html self-contained and working in a real browser,
and the terminal table that fits 100 columns."""

import base64
import json
import os
import re
import subprocess
import sys

import pytest
from cdp import Browser, find_chromium
from conftest import REPO

from harness.board.build import build
from harness.board.drawing import PendingPlot
from harness.board.options import BoardOptions
from harness.board.pareto import Point, pareto_front, plot_and_panels, points, quality_metric
from harness.board.sources import Source, inspect_offline_run, wandb_cli
from harness.leaderboard import main

PNG = b"\x89PNG\r\n\x1a\n"


def _pt(index, cost, value):
    return Point(index, {}, cost, value, value, value, 1)


def test_pareto_front_follows_each_metrics_direction():
    pts = [_pt(1, 1.0, 0.5), _pt(2, 2.0, 0.4), _pt(3, 3.0, 0.7), _pt(4, 0.5, 0.2), _pt(5, 3.0, 0.6)]
    # higher is better: a dearer point joins the front only when it is better than every cheaper one
    assert [p.index for p in pareto_front(pts, higher_is_better=True)] == [4, 1, 3]
    # lower is better (an error rate): the cheapest is also the best, nothing else is on the front
    assert [p.index for p in pareto_front(pts, higher_is_better=False)] == [4]


def _row(key, model, method, rouge, cost, **extra):
    row = {"run_key": key, "run_id": key, "model": model, "method": method, "status": "completed", "data": "hr",
           "eval_set": "e1", "metric_samples": 20, "finished_at": "2026-11-29T00:00:00", "sweep_id": "s",
           "config": {"qlora": {"r": extra.get("r", 8), "lr": extra.get("lr", 1e-3), "seed": extra.get("seed", 1)},
                      "eval": {"max_new_tokens": 64}},
           "train": {"steps": 3} if method != "base" else {},
           "metrics": {"rougeL": rouge, "unparseable_rate": 0.0},
           "metrics_ci": {"rougeL": {"mean": rouge, "low": rouge - 0.05, "high": rouge + 0.05, "n": 20}},
           "cost": {"usd_per_1k_generations": cost, "usd_total": cost / 10, "train_s": 1.0,
                    "eval_tokens_per_s": 20.0, "peak_memory_gb": 1.0}}
    row.update({k: v for k, v in extra.items() if k not in ("r", "lr", "seed")})
    return row


ROWS = [
    _row("a1", "mistral_7b_v03_long_name", "instruct_rag", 0.62, 0.90, r=16, lr=2e-4),
    _row("b1", "gemma_2b", "instruct", 0.41, 0.20, seed=1),
    _row("b2", "gemma_2b", "instruct", 0.45, 0.22, seed=2),
    _row("c1", "gemma_2b", "base", 0.22, 0.18),
    _row("d1", "phi_2", "causal_rag", 0.55, 0.30, r=32, lr=5e-4),
    {**_row("e1", "llama3_8b", "instruct", 0, 0), "status": "failed", "metrics": {}, "cost": {}, "metrics_ci": {},
     "eval_set": None, "error_type": "OutOfMemoryError"},
    _row("x1", "gemma_2b", "instruct", 0.8, 0.2, data="catalog", eval_set="e2"),
]


@pytest.fixture
def ledger(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_seed_rows_are_one_point_with_their_spread_and_the_pick_is_on_the_front(ledger):
    options = BoardOptions(source=Source("ledger", str(ledger)), out=ledger.parent / "lb.md", data="hr",
                           floors=("rougeL=0.4",))
    (report,) = build(options)
    assert quality_metric(report) == "rougeL"
    pts, left_out = points(report, "rougeL", "usd_per_1k_generations")
    seeded = next(p for p in pts if p.seeds == 2)
    assert (seeded.low, seeded.value, seeded.high) == pytest.approx((0.41, 0.43, 0.45))  # range across seeds
    single = next(p for p in pts if p.row["run_key"] == "a1")
    assert (single.low, single.high) == pytest.approx((0.57, 0.67))  # its 95% CI
    assert len(pts) == 4 and left_out == []  # the failed row is not placed
    front = pareto_front(pts, higher_is_better=True)
    assert report.verdict.pick["run_key"] == "b1" and any(p.row is report.verdict.pick for p in front)


def test_leaderboard_writes_a_png_panel_per_board_and_a_self_contained_page(ledger, capsys):
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.4"]) == 0
    out = capsys.readouterr().out
    png = ledger.parent / "pareto.png"
    assert png.read_bytes().startswith(PNG)
    width = int.from_bytes(png.read_bytes()[16:20], "big")
    assert width == 6 * 90 * 2  # two boards (hr, catalog): two panels side by side
    page = (ledger.parent / "report.html").read_text()
    assert f"written: {ledger.parent / 'leaderboard.md'}, {png}, {ledger.parent / 'report.html'}" in out
    # Nothing from the network: no external script, stylesheet, font or image.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    for key in ("a1", "b1", "c1", "d1", "e1", "x1"):
        assert f'data-run="{key}"' in page
    assert 'class="pick"' in page and "Cheapest adequate (rougeL &gt;= 0.4)" in page
    assert "rougeL 0.220 &lt; 0.4" in page and "OutOfMemoryError" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(PNG) for i in images)


# Run in a fresh interpreter: a fork is taken only where the process runs no other thread, and earlier tests in
# a full run can leave threads behind (pools, loggers) in pytest's own process.
FORKED_PLOT = """
import sys, time
import pytest
from harness.board.build import build
from harness.board.drawing import PendingPlot
from harness.board.options import BoardOptions
from harness.board.pareto import plot_and_panels
from harness.board.sources import Source
from pathlib import Path

ledger = Path(sys.argv[1])
options = BoardOptions(source=Source("ledger", str(ledger)), out=ledger.parent / "lb.md", floors=("rougeL=0.4",))
reports = build(options)
pending = PendingPlot(reports, options.cost)
assert pending.forked
whole, panels = pending.result()
assert (whole, panels) == plot_and_panels(reports, options.cost)
# Each panel is its board's cell of the whole picture (6 x 4.4 inches at 90 dpi).
assert len(panels) == 2 and all(int.from_bytes(p[16:20], "big") == 540 for p in panels)
assert all(int.from_bytes(p[20:24], "big") == 396 for p in panels)
with pytest.raises(AttributeError):
    PendingPlot([object()], options.cost).result()
# Given up (the page could not be written): the child's send fails and it exits, not killed after a wait.
abandoned = PendingPlot(reports, options.cost)
began = time.monotonic()
abandoned.close()
assert time.monotonic() - began < 9
print("ok")
"""


def test_the_plot_drawn_in_a_forked_process_is_the_one_drawn_here_and_its_errors_raise_here(ledger):
    proc = subprocess.run([sys.executable, "-c", FORKED_PLOT, str(ledger)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_process_running_threads_draws_the_plot_itself(ledger):
    import threading

    options = BoardOptions(source=Source("ledger", str(ledger)), out=ledger.parent / "lb.md", floors=("rougeL=0.4",))
    reports = build(options)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        pending = PendingPlot(reports, options.cost)
        assert not pending.forked  # a fork would copy no thread, and any lock one holds stays held in the child
        assert pending.result() == plot_and_panels(reports, options.cost)
    finally:
        release.set()
        other.join()


def test_default_table_fits_100_columns_and_wide_shows_everything(ledger, capsys):
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.4", "--max", "unparseable_rate=0.1",
                 "--no-report"]) == 0
    out = capsys.readouterr().out
    tables = [line for line in out.splitlines() if not line.startswith(("cheapest", "  not picked", "written"))]
    assert max(map(len, tables)) <= 100
    rule = next(i for i, line in enumerate(tables) if line.startswith("───"))
    header = " ".join(tables[1:rule])  # headings may take two lines
    # the settings that vary on the board (r, lr), the sort metric with its interval, the bound, cost, status
    for heading in (" r ", " lr ", "rougeL ↑ 95% CI /", "seeds", "unparseable_", "rate ↓", "$/1k", "status"):
        assert heading in header, heading
    assert "run keys" not in out and "eval tok/s" not in out
    assert "0.430 ±0.028 x2" in out  # two seeds: mean and sd across them
    assert "0.620 [0.570,0.670]" in out  # one seed: its 95% CI
    assert "mistral_7b_v03_long_name" in out  # names are never cut
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.4", "--no-report", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "run keys" in wide and "eval tok/s ↑" in wide and max(map(len, wide.splitlines())) > 100


def _rows(browser, board=0):
    return browser.evaluate(f"Array.from(document.querySelectorAll('#table-{board} tbody tr'))"
                            f".map(r => r.getAttribute('data-run'))")


def _column(browser, index, board=0):
    return browser.evaluate(f"Array.from(document.querySelectorAll('#table-{board} tbody tr'))"
                            f".map(r => r.cells[{index}].getAttribute('data-sort'))")


@pytest.mark.optional(find_chromium() is not None, "no chromium here (make browser installs Debian's chromium)")
def test_report_in_a_real_browser(offline_sweep, tmp_path, capsys):
    """Headless chromium opens the page from disk: no console error, no network, every row and the pick in the
    DOM, a click on a heading sorts the rows; the screenshot is kept in results/."""
    out = tmp_path / "board" / "leaderboard.md"
    assert main(["--source", f"wandb-offline:{offline_sweep / 'wandb'}", "--min", "rougeL=0", "--out", str(out)]) == 0
    capsys.readouterr()
    page = out.parent / "report.html"
    records = [json.loads(line) for line in (offline_sweep / "runs.jsonl").read_text().splitlines()]
    browser = Browser(find_chromium())
    try:
        browser.open(page.as_uri())
        assert browser.errors() == []
        assert all(url.startswith(("file:", "data:")) for url in browser.requested_urls()), browser.requested_urls()
        shown = set(_rows(browser))
        # seeds collapse into one row named by its first run key; every other record is a row of its own
        collapsed = {r["run_key"] for r in records} - shown
        assert len(shown) == 4 and len(collapsed) == 2
        pick = browser.evaluate("document.querySelector('#pick-0').textContent")
        assert pick.startswith("Cheapest adequate (rougeL >= 0)")
        assert browser.evaluate("document.querySelectorAll('#table-0 tr.pick').length") == 1
        headers = browser.evaluate("Array.from(document.querySelectorAll('#table-0 th')).map(h => h.textContent)")
        cost = headers.index("$ run ↓")
        before = _rows(browser)
        browser.click(f"#table-0 th[data-col='{cost}']")
        ascending = _rows(browser)
        values = [float(v) for v in _column(browser, cost) if v]
        assert values == sorted(values) and len(values) == 2
        assert _column(browser, cost)[-2:] == ["", ""]  # failed and skipped rows have no cost: last
        browser.click(f"#table-0 th[data-col='{cost}']")
        descending = _rows(browser)
        values = [float(v) for v in _column(browser, cost) if v]
        assert values == sorted(values, reverse=True)
        assert sorted(ascending) == sorted(descending) == sorted(before)
        assert ascending != descending
        # The side by side shows B - A with its interval; the drill-down holds every example.
        assert "paired bootstrap over 4 examples" in browser.evaluate(
            "document.querySelector('.pair-result').textContent")
        assert browser.evaluate("document.querySelectorAll('details.run table.examples tbody tr').length") == 4 * 2
        assert browser.errors() == []
        shot = browser.screenshot(REPO / "results" / "report-screenshot.png")
        assert shot.read_bytes().startswith(PNG)
    finally:
        browser.close()


def test_log_wandb_writes_a_leaderboard_run_in_the_sweeps_group(ledger, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.4", "--data", "hr", "--log-wandb"]) == 0
    assert "logged to W&B: " in capsys.readouterr().out
    (run_dir,) = (ledger.parent / "wandb").glob("offline-run-*")
    run = inspect_offline_run(run_dir)
    assert run["config"]["tunebench_leaderboard"]["group"] == "s"  # every row is of sweep s
    assert run["config"]["tunebench_leaderboard"]["bounds"] == ["rougeL >= 0.4"]
    assert run["summary"]["pick/hr-e1"].startswith("gemma_2b/instruct r=8 lr=0.001 (2 seeds) [b1, b2] at $0.210000")
    assert run["summary"]["leaderboard/hr-e1"]["nrows"] == 5 and run["summary"]["not_picked/hr-e1"]["nrows"] == 4
    assert run["summary"]["pareto"]["_type"] == "image-file"
    table = json.loads((run_dir / "files" / run["summary"]["leaderboard/hr-e1"]["path"]).read_text())
    assert table["columns"][1] == "model" and table["data"][0][1] == "mistral_7b_v03_long_name"
    # job type and group are in the run record of the file
    lines = subprocess.run([*wandb_cli(), "leet", "inspect", "--json", str(run_dir)], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    header = next(json.loads(line)["run"] for line in lines if '"type":"run"' in line)
    assert header["job_type"] == "leaderboard" and header["run_group"] == "s"
    # the W&B sources never take it for a cell
    assert main(["--source", f"wandb-offline:{ledger.parent / 'wandb'}", "--no-report",
                 "--out", str(tmp_path / "x.md")]) == 2
    assert "no runs in wandb-offline:" in capsys.readouterr().out
    # With --no-report no plot is made, and the one an earlier run left beside the ledger is not logged as this one's.
    assert (ledger.parent / "pareto.png").is_file()
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.4", "--data", "hr", "--log-wandb", "--no-report"]) == 0
    capsys.readouterr()
    (second,) = set((ledger.parent / "wandb").glob("offline-run-*")) - {run_dir}
    assert "pareto" not in inspect_offline_run(second)["summary"]


@pytest.mark.parametrize(("verbose", "env_verbose", "bars"),
                         [(False, "", False), (True, "", True), (None, "", False), (None, "1", True)])
def test_third_party_progress_bars_are_off_unless_verbose(verbose, env_verbose, bars):
    code = ("import logging, sys; from harness.core.logs import quiet_libraries; "
            f"quiet_libraries(verbose={verbose}); "
            "from transformers.utils import logging as t; "
            "print(t.is_progress_bar_enabled(), logging.getLogger('sentence_transformers').level)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TUNEBENCH_VERBOSE")}
    env["TUNEBENCH_VERBOSE"] = env_verbose
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out[0] == str(bars)
    # its INFO lines dropped even where the root logger is at INFO (Hydra's job logging), unless -v
    assert int(out[1]) == (0 if bars else 30)


def test_each_named_report_keeps_its_own_plot_and_page(offline_sweep, tmp_path, capsys):
    """Two leaderboards written into one folder under their own names (as `make demo` does, one per --data) do not
    overwrite each other's picture and page; the default name keeps pareto.png and report.html."""
    ledger = str(offline_sweep / "runs.jsonl")
    for name, floor in (("board-a", "rougeL=0"), ("board-b", "rougeL=0.5")):
        assert main(["--ledger", ledger, "--min", floor, "--out", str(tmp_path / f"{name}.md")]) == 0
    out = capsys.readouterr().out
    a, b = (tmp_path / "board-a-report.html").read_text(), (tmp_path / "board-b-report.html").read_text()
    assert "Cheapest adequate (rougeL &gt;= 0):" in a and "&gt;= 0.5" not in a
    assert "No completed run meets every bound (rougeL &gt;= 0.5)" in b
    assert (tmp_path / "board-a-pareto.png").stat().st_size > 0 and (tmp_path / "board-b-pareto.png").is_file()
    assert f"written: {tmp_path / 'board-b.md'}, {tmp_path / 'board-b-pareto.png'}, " in out
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "pareto.png").exists()
