"""Run keys, atomic appends under concurrency, torn lines, resume lookups."""

import json
import multiprocessing
import re

import pytest

from harness.core.ledger import COMPLETED, FAILED, Ledger, RunRecord, run_key


def _record(key: str, status: str = COMPLETED, **extra) -> RunRecord:
    fields = {"sweep_id": "s", "model": "m", "method": "base", "data": "d", "hardware": "cpu", "config": {"a": 1}}
    return RunRecord(run_key=key, run_id=f"id-{key}-{status}", status=status, started_at="t0", finished_at="t1",
                     **{**fields, **extra})


def test_run_key_is_stable_and_sensitive_to_config_data_and_code():
    base = run_key({"qlora": {"r": 8}, "model": "m"}, {"train.jsonl": "h1"}, "0.1.0")
    assert base == run_key({"model": "m", "qlora": {"r": 8}}, {"train.jsonl": "h1"}, "0.1.0")  # key order
    assert base != run_key({"qlora": {"r": 16}, "model": "m"}, {"train.jsonl": "h1"}, "0.1.0")
    assert base != run_key({"qlora": {"r": 8}, "model": "m"}, {"train.jsonl": "h2"}, "0.1.0")
    assert base != run_key({"qlora": {"r": 8}, "model": "m"}, {"train.jsonl": "h1"}, "0.2.0")
    assert len(base) == 16


def test_append_and_read_back(tmp_path):
    ledger = Ledger(tmp_path / "sub" / "runs.jsonl")
    assert ledger.records() == []
    ledger.append(_record("k1", FAILED, error="boom"))
    ledger.append(_record("k1", COMPLETED, metrics={"bleu": 0.5}))
    ledger.append(_record("k2", FAILED))
    rows = ledger.records()
    assert [r["status"] for r in rows] == [FAILED, COMPLETED, FAILED]
    assert rows[1]["metrics"] == {"bleu": 0.5} and rows[1]["schema_version"] == 1
    assert ledger.completed("k1")["run_id"] == "id-k1-completed"
    assert ledger.completed("k2") is None


def _append_many(path, worker, count):
    ledger = Ledger(path)
    for i in range(count):
        ledger.append(_record(f"w{worker}-{i}", config={"pad": "x" * 5000}))


def test_parallel_appends_never_interleave(tmp_path):
    path = tmp_path / "runs.jsonl"
    procs = [multiprocessing.Process(target=_append_many, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 100
    keys = {json.loads(line)["run_key"] for line in lines}  # every line parses whole
    assert len(keys) == 100


def test_torn_last_line_is_reported_not_parsed(tmp_path, caplog):
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append(_record("k1"))
    with ledger.path.open("a") as handle:
        handle.write('{"run_key": "k2", "status": "compl')
    rows = ledger.records()
    assert [r["run_key"] for r in rows] == ["k1"]
    assert [r.getMessage() for r in caplog.records] == [f"{ledger.path}:2: unreadable ledger line skipped (torn write?)"]
    ledger.records()
    assert len(caplog.records) == 1  # once per line and reader, not on every read


def test_append_after_a_torn_last_line_starts_a_new_line(tmp_path, caplog):
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append(_record("k1"))
    whole = ledger.path.read_bytes()
    with ledger.path.open("ab") as handle:  # a writer killed mid-line: the issue's `head -c 300 >> runs.jsonl`
        handle.write(whole[:300])
    ledger.append(_record("k2"))
    rows = ledger.records()
    assert [r["run_key"] for r in rows] == ["k1", "k2"]
    assert f"{ledger.path}:2: unreadable ledger line skipped" in caplog.text
    assert ledger.completed("k2")["run_id"] == "id-k2-completed"
    assert ledger.path.read_bytes().endswith(b"\n")


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("null", "not a record \\(a JSON NoneType\\)"),
        ("[1, 2]", "not a record \\(a JSON list\\)"),
        ('"completed"', "not a record \\(a JSON str\\)"),
        ('{"status": "completed"}', "no run_key"),
        ('{"run_key": "k9", "status": "done"}', "status 'done' is not one of"),
        ('{"run_key": "k9", "status": "completed", "metrics": null}', "metrics is NoneType, not an object"),
        ('{"run_key": "k9", "status": "completed", "metrics": {"bleu": "0.5"}}', "metric bleu is str, not a number"),
        ('{"run_key": "k9", "status": "completed", "metrics": {"bleu": true}}', "metric bleu is bool, not a number"),
        ('{"run_key": "k9", "status": "completed", "cost": [1]}', "cost is list, not an object"),
        ('{"run_key": "k9", "status": "completed", "model": 7}', "model is int, not a string"),
    ],
)
def test_lines_that_are_not_records_are_skipped_with_file_and_line(tmp_path, caplog, line, why):
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append(_record("k1", metrics={"bleu": 0.25}))
    with ledger.path.open("a") as handle:
        handle.write(line + "\n")
    ledger.append(_record("k2", metrics={"bleu": 0.5}))
    rows = ledger.records()
    assert [r["run_key"] for r in rows] == ["k1", "k2"]
    assert re.fullmatch(rf"{re.escape(str(ledger.path))}:2: ledger line skipped: {why}.*", caplog.records[0].getMessage())
    assert ledger.completed("k9") is None


def test_leaderboard_reads_past_malformed_lines(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append(_record("k1", metrics={"rougeL": 0.25}, cost={"usd_total": 0.1, "usd_per_1k_generations": 0.5}))
    with ledger.path.open("a") as handle:
        handle.write('null\n[1,2]\n{"run_key": "kx", "status": "completed", "metrics": null}\n{"run_key": "k')
    proc = subprocess.run([sys.executable, "-m", "harness.leaderboard", "--ledger", str(ledger.path),
                           "--min", "rougeL=0.1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for number in (2, 3, 4, 5):
        assert f"runs.jsonl:{number}:" in proc.stderr
    assert "cheapest adequate" in proc.stdout and "m/base" in proc.stdout


def test_history_and_sweep_filter(tmp_path):
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append(_record("k1", FAILED, sweep_id="a"))
    ledger.append(_record("k1", COMPLETED, sweep_id="b"))
    ledger.append(_record("k2", COMPLETED, sweep_id="b"))
    assert [r["status"] for r in ledger.history("k1")] == [FAILED, COMPLETED]
    assert [r["run_key"] for r in ledger.for_sweep("b")] == ["k1", "k2"]
    assert ledger.for_sweep("c") == []
