"""The leaderboard on a big ledger: the board index beside the ledger (used when fresh, extended on an append,
rebuilt on any other change), one seed however many records repeat it, the top rows per board with a count of
the rest, and the full table behind --all-rows."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.board.board_cache import cache_path, ledger_boards
from harness.board.ledger_index import index_path, indexed_records
from harness.board.ranking import dataset_boards
from harness.leaderboard import main


def _record(key, rougeL, *, seed=1, lr=2e-4, model="gemma_2b", data="hr", finished="2026-11-21T00:00:00",
            status="completed"):
    return {"run_key": key, "run_id": key + "-id", "status": status, "model": model, "method": "instruct",
            "data": data, "sweep_id": "s1", "started_at": finished, "finished_at": finished, "hardware": "cpu",
            "config": {"qlora": {"r": 8, "lr": lr, "seed": seed}, "model": {"name": model, "hidden_size": 576},
                       "data": {"name": data, "prompt_template": "{question}"}},
            "data_hashes": {"eval.jsonl": "abc"}, "versions": {"harness": "0.1.0"}, "train": {"steps": 3},
            "prompt": {"first_eval_prompt": "a long prompt " * 20},
            "metrics": {"rougeL": rougeL} if status == "completed" else {},
            "cost": {"usd_per_1k_generations": 0.1 + rougeL, "usd_total": 0.01, "price_source": "a long text"}
            if status == "completed" else {}}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _keys(path):
    return [r["run_key"] for r in indexed_records(path)]


def test_index_is_made_used_extended_and_rebuilt(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    _write(ledger, [_record("a", 0.5), _record("b", 0.6, seed=2)])
    assert _keys(ledger) == ["a", "b"]
    index = index_path(ledger)
    assert index.is_file()
    slim = indexed_records(ledger)[0]
    # What a board reads, not the whole record: no prompt, no data hashes, no price text.
    assert "prompt" not in slim and "data_hashes" not in slim and "price_source" not in slim["cost"]
    assert slim["metrics"] == {"rougeL": 0.5} and slim["config"]["qlora"] == {"r": 8, "lr": 2e-4, "seed": 1}

    # Fresh: read as it is, not written again.
    written = index.stat().st_mtime_ns
    assert _keys(ledger) == ["a", "b"] and index.stat().st_mtime_ns == written

    # An append (what a sweep does): the new line is read, the rest kept.
    with ledger.open("a", encoding="utf-8") as out:
        out.write(json.dumps(_record("c", 0.7, seed=3)) + "\n")
    assert _keys(ledger) == ["a", "b", "c"]

    # An edit in place of the same size (another figure): the index is stale by mtime and rebuilt.
    text = ledger.read_text(encoding="utf-8")
    edited = text.replace('"rougeL": 0.5', '"rougeL": 0.9')
    assert len(edited) == len(text)
    ledger.write_text(edited, encoding="utf-8")
    os.utime(ledger, ns=(written + 10**9, written + 10**9))
    assert indexed_records(ledger)[0]["metrics"] == {"rougeL": 0.9}

    # Truncated to one line, then replaced by another ledger of more lines: never the old records.
    _write(ledger, [_record("z", 0.1)])
    assert _keys(ledger) == ["z"]
    _write(ledger, [_record("x", 0.1), _record("y", 0.2), _record("w", 0.3), _record("v", 0.4)])
    assert _keys(ledger) == ["x", "y", "w", "v"]

    # A torn index is rebuilt, and deleting it is always safe.
    index.write_bytes(index.read_bytes()[:40])
    assert _keys(ledger) == ["x", "y", "w", "v"]
    index.unlink()
    assert _keys(ledger) == ["x", "y", "w", "v"]


def test_index_warns_about_skipped_lines_every_time_and_reads_a_line_still_being_written(tmp_path, caplog):
    ledger = tmp_path / "runs.jsonl"
    ledger.write_text(json.dumps(_record("a", 0.5)) + "\n{torn\n" + json.dumps(_record("b", 0.6))[:-1],
                      encoding="utf-8")
    for _ in range(2):
        caplog.clear()
        assert _keys(ledger) == ["a"]  # the last line lacks its newline and its closing brace
        assert f"{ledger}:2: unreadable ledger line skipped" in caplog.text
    with ledger.open("a", encoding="utf-8") as out:
        out.write("}\n")  # the writer finishes its line
    assert _keys(ledger) == ["a", "b"]


def test_an_unwritable_folder_reads_the_ledger_without_an_index(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    ledger = tmp_path / "runs.jsonl"
    _write(ledger, [_record("a", 0.5)])
    tmp_path.chmod(0o555)
    try:
        assert _keys(ledger) == ["a"] and not index_path(ledger).exists()
    finally:
        tmp_path.chmod(0o755)


def test_records_of_one_seed_count_as_one_seed(tmp_path, capsys):
    """Four records of one configuration: seed 1 three times under different run keys (re-runs), seed 2 once.
    The row has two seeds, and seed 1 is its latest record."""
    ledger = tmp_path / "runs.jsonl"
    _write(ledger, [_record("old1", 0.1, seed=1, finished="2026-01-01T00:00:00"),
                    _record("new1", 0.5, seed=1, finished="2026-03-01T00:00:00"),
                    _record("mid1", 0.3, seed=1, finished="2026-02-01T00:00:00"),
                    _record("s2", 0.7, seed=2, finished="2026-01-15T00:00:00")])
    assert main(["--ledger", str(ledger), "--no-report"]) == 0
    report = (tmp_path / "leaderboard.md").read_text(encoding="utf-8")
    row = next(line for line in report.splitlines() if "| gemma_2b |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == "2"  # seeds (after #, model, method, scoring, r)
    assert cells[7] == "0.6000"  # rougeL: mean of 0.5 (seed 1, latest) and 0.7 (seed 2)
    assert cells[-1] == "new1, s2"


def _board_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]


def test_the_top_rows_are_shown_with_a_count_of_the_rest_and_all_rows_behind_a_flag(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    records = [_record(f"k{i:02d}", round(0.01 * i, 2), lr=1e-5 * (i + 1)) for i in range(25)]
    records.append(_record("fail", 0.0, lr=9e-3, status="failed"))
    _write(ledger, records)
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.2"]) == 0
    markdown = (tmp_path / "leaderboard.md").read_text(encoding="utf-8")
    shown = _board_rows(markdown)
    assert len(shown) == 20 and "k24" in shown[0] and "k05" in shown[-1]  # best first: 0.24 down to 0.05
    assert "6 more rows not shown (ranked 21 to 26); --all-rows writes the full table." in markdown
    assert "- and 6 more rows below the table" in markdown  # not picked: listed for the shown rows only
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    board = page[page.index('<table class="board-table"'):page.index("</table>", page.index('class="board-table"'))]
    assert board.count("<tr data-run=") == 20 and "6 more rows not shown" in page
    assert page.count("<details") == 20  # per-example drill-down of the shown rows only

    assert main(["--ledger", str(ledger), "--min", "rougeL=0.2", "--all-rows"]) == 0
    markdown = (tmp_path / "leaderboard.md").read_text(encoding="utf-8")
    shown = _board_rows(markdown)
    assert len(shown) == 26 and "fail" in shown[-1] and "more rows not shown" not in markdown


def test_data_reads_one_dataset_and_an_unknown_one_lists_them(tmp_path, capsys):
    ledger = tmp_path / "runs.jsonl"
    _write(ledger, [_record("a", 0.5, data="hr"), _record("b", 0.6, data="shop")])
    assert [r["run_key"] for r in indexed_records(ledger, "shop")] == ["b"]
    assert main(["--ledger", str(ledger), "--data", "shop", "--no-report"]) == 0
    assert "data=shop" in capsys.readouterr().out
    assert main(["--ledger", str(ledger), "--data", "hrr", "--no-report"]) == 2
    assert "--data hrr: no runs on that dataset" in (out := capsys.readouterr().out.replace("\n", ""))
    assert "it has: hr, shop" in out


def _cached_lines(ledger):
    """dataset -> (what its boards were made from, their line) as the board cache holds them."""
    lines = cache_path(ledger).read_bytes().split(b"\n")
    header = json.loads(lines[0])
    return {name: (made, line) for name, made, line in zip(header["data"], header["made_from"], lines[1:-1])}


def _as_data(boards):
    return [(b.data, b.eval_set, b.title, b.metrics, b.rows) for b in boards]


def test_boards_are_kept_collapsed_and_only_a_changed_datasets_are_made_again(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    _write(ledger, [_record("a", 0.5, seed=1, data="hr"), _record("b", 0.7, seed=2, data="hr"),
                    _record("c", 0.4, data="shop"), _record("a2", 0.6, seed=1, data="hr", finished="2026-12-01"),
                    _record("f", 0.0, data="shop", status="failed")])
    made = ledger_boards(ledger)
    # What the records make: the rows come seeds collapsed (hr: one configuration, seed 1's latest and seed 2).
    assert _as_data(made) == _as_data(dataset_boards(indexed_records(ledger)))
    (hr,) = [b for b in made if b.data == "hr"]
    assert len(hr.rows) == 1 and hr.rows[0]["seeds"] == [1, 2] and hr.rows[0]["metrics"]["rougeL"] == pytest.approx(0.65)
    assert hr.rows[0]["runs"] == ["a2", "b"]
    kept = _cached_lines(ledger)
    assert set(kept) == {"hr", "shop"}

    # Read again: the same boards, from the kept lines, which are not written again.
    written = cache_path(ledger).stat().st_mtime_ns
    assert _as_data(ledger_boards(ledger)) == _as_data(made) and cache_path(ledger).stat().st_mtime_ns == written
    assert _as_data(ledger_boards(ledger, "shop")) == _as_data([b for b in made if b.data == "shop"])

    # An append to shop: shop's boards are made again, hr's kept as they were.
    with ledger.open("a", encoding="utf-8") as out:
        out.write(json.dumps(_record("d", 0.9, lr=1e-3, data="shop")) + "\n")
    boards = ledger_boards(ledger)
    assert _as_data(boards) == _as_data(dataset_boards(indexed_records(ledger)))
    shop = next(b for b in boards if b.data == "shop")
    assert [r["run_key"] for r in shop.rows] == ["c", "d", "f"]
    after = _cached_lines(ledger)
    assert after["hr"] == kept["hr"] and after["shop"] != kept["shop"]

    # Kept by other code (a changed ranking.py): made again. A torn file: made again. Deleting it is safe.
    lines = cache_path(ledger).read_bytes().split(b"\n")
    header = json.loads(lines[0])
    header["made_from"] = ["other-code:" + made.partition(":")[2] for made in header["made_from"]]
    tampered = json.loads(lines[1])
    tampered["boards"][0]["rows"][0]["metrics"]["rougeL"] = 0.99
    cache_path(ledger).write_bytes(b"\n".join([json.dumps(header).encode(), json.dumps(tampered).encode(),
                                               *lines[2:]]))
    assert _as_data(ledger_boards(ledger)) == _as_data(boards)
    cache_path(ledger).write_bytes(cache_path(ledger).read_bytes()[:50])
    assert _as_data(ledger_boards(ledger)) == _as_data(boards)
    cache_path(ledger).unlink()
    assert _as_data(ledger_boards(ledger)) == _as_data(boards)

    # An edit in place (the index is rebuilt: every dataset's records get a new stamp): never the old rows.
    text = ledger.read_text(encoding="utf-8")
    ledger.write_text(text.replace('"rougeL": 0.7', '"rougeL": 0.3'), encoding="utf-8")
    (hr,) = [b for b in ledger_boards(ledger) if b.data == "hr"]
    assert hr.rows[0]["metrics"]["rougeL"] == pytest.approx(0.45)


def test_a_line_still_being_written_is_on_the_board_but_never_kept(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    _write(ledger, [_record("a", 0.5)])
    with ledger.open("a", encoding="utf-8") as out:
        out.write(json.dumps(_record("b", 0.6, lr=1e-3)))  # no newline yet: a writer is mid-line
    (board,) = ledger_boards(ledger)
    assert sorted(r["run_key"] for r in board.rows) == ["a", "b"]
    assert not cache_path(ledger).exists()


def test_the_leaderboard_command_imports_neither_hydra_nor_matplotlib_to_build_a_board():
    """Hydra and OmegaConf (the config schema's) cost a second on every leaderboard; matplotlib only the picture."""
    code = ("import sys, harness.leaderboard, harness.board.build; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf', 'matplotlib'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip() == "[]"
