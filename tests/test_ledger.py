"""Run keys, atomic appends under concurrency, torn lines, resume lookups."""

import json
import multiprocessing

import pytest

from harness.ledger import COMPLETED, FAILED, Ledger, RunRecord, run_key


def _record(key: str, status: str = COMPLETED, **extra) -> RunRecord:
    return RunRecord(run_key=key, run_id=f"id-{key}-{status}", status=status, started_at="t0", finished_at="t1",
                     sweep_id="s", model="m", method="base", data="d", hardware="cpu", **{"config": {"a": 1}, **extra})


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


def test_torn_last_line_is_reported_not_parsed(tmp_path):
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append(_record("k1"))
    with ledger.path.open("a") as handle:
        handle.write('{"run_key": "k2", "status": "compl')
    with pytest.warns(UserWarning, match=r"runs.jsonl:2: unreadable ledger line"):
        rows = ledger.records()
    assert [r["run_key"] for r in rows] == ["k1"]
