"""W&B as a leaderboard source: every cell is a W&B run carrying every ledger value, and the ledger, the offline
runs (read with wandb's CLI) and the public API (a test double fed with the same runs) give the same boards."""

import os
import shutil
import subprocess
import sys
from dataclasses import asdict

import pytest
from wandb_api_double import DoubleApi

import harness.board.sources as sources
from harness.board.sources import inspect_offline_run, parse_source
from harness.core.ledger import Ledger, RunRecord
from harness.core.wandb_record import from_wandb, to_wandb
from harness.leaderboard import main

# Every field of the current schema (asdict), with values of each shape a record holds.
RECORD = asdict(RunRecord(**{
    "run_key": "k1", "run_id": "r1", "status": "completed", "started_at": "2026-11-29T10:00:00+00:00",
    "finished_at": "2026-11-29T10:01:00+00:00", "sweep_id": "s1", "model": "m", "method": "instruct",
    "data": "hr", "hardware": "cpu", "config": {"qlora": {"r": 8, "lr": 0.001, "seed": 1}, "model": {"name": "m"}},
    "metrics": {"rougeL": 0.25, "recall@3": 0.5}, "metric_samples": 4,
    "metrics_ci": {"rougeL": {"mean": 0.25, "low": 0.1, "high": 0.4, "n": 4}}, "eval_set": "abc",
    "prompt": {"template_sha256": "f" * 64}, "judge": {"backend": "none", "metrics": {"faithfulness": {
        "scored": 3, "failed": 1, "reasons": {"timeout": 1}, "failed_ids": ["e2"], "scored_set": None}}},
    "cost": {"usd_total": 0.01, "mfu": None, "device": "cpu"}, "train": {"steps": 3, "losses": [[1, 2.5], [2, 1.5]]},
    "retrieval": {}, "preflight": {}, "data_hashes": {"train.jsonl": "aa"}, "versions": {"harness": "0.1.0"},
    "git_sha": None, "adapter_dir": None, "predictions_file": "/x/predictions-r1.jsonl", "error": None,
    "error_type": None, "failed_stage": None,
}))


def test_mapping_round_trips_a_record_and_keeps_none_values():
    config, summary = to_wandb(RECORD)
    assert config["qlora"] == {"r": 8, "lr": 0.001, "seed": 1}
    assert config["tunebench"]["run_key"] == "k1" and config["tunebench"]["model"] == "m"
    assert summary["status"] == "completed" and summary["metrics/rougeL"] == 0.25
    assert summary["metrics_ci/rougeL"] == {"mean": 0.25, "low": 0.1, "high": 0.4, "n": 4}
    assert summary["cost/usd_total"] == 0.01 and "cost/mfu" not in summary  # W&B keeps no None in a summary
    assert None not in summary.values()
    assert from_wandb(config, summary) == RECORD
    # W&B adds its own keys (underscored) and history values: none of them enters the record.
    noisy = {**summary, "_step": 3, "_runtime": 1.2, "curve/train_loss": 1.5, "eval/predictions": {"path": "x"}}
    assert from_wandb({**config, "_wandb": {"cli_version": "0.31.0"}}, noisy) == RECORD
    assert from_wandb({"lr": 1}, {"loss": 2}) is None  # a run the harness did not write


def _by_run_id(records):
    return {r["run_id"]: r for r in records}


def test_every_cell_is_an_offline_run_with_every_ledger_value(offline_sweep):
    ledger = Ledger(offline_sweep / "runs.jsonl").records()
    assert sorted(r["status"] for r in ledger) == ["completed"] * 4 + ["failed", "skipped"]
    offline = parse_source(f"wandb-offline:{offline_sweep / 'wandb'}")
    from_runs = _by_run_id(offline.records())
    assert set(from_runs) == {r["run_id"] for r in ledger} and offline.skipped == []
    for record in ledger:
        assert from_runs[record["run_id"]] == record, record["status"]
    # The per-example rows: the logged table reads back as the predictions file.
    ledger_source = parse_source(f"ledger:{offline_sweep / 'runs.jsonl'}")
    for record in ledger:
        if record["status"] == "completed":
            rows = ledger_source.predictions(record)
            assert len(rows) == 4 and offline.predictions(from_runs[record["run_id"]]) == rows


def test_offline_runs_show_state_status_and_group_where_wandb_does(offline_sweep):
    ledger = _by_run_id(Ledger(offline_sweep / "runs.jsonl").records())
    runs = [inspect_offline_run(d) for d in sorted((offline_sweep / "wandb").glob("offline-run-*"))]
    assert {r["run_id"] for r in runs} == set(ledger)  # the W&B run id is the ledger's run id
    for run in runs:
        record = ledger[run["run_id"]]
        assert run["state"] == ("failed" if record["status"] == "failed" else "finished")
        assert record["status"] in run["tags"] and {record["model"], record["method"]} <= set(run["tags"])
        assert run["summary"]["status"] == record["status"]
        assert run["config"]["tunebench"]["group"] == record["sweep_id"]
        assert run["config"]["qlora"]["r"] == record["config"]["qlora"]["r"]
        for name, value in record["metrics"].items():
            assert run["summary"][f"metrics/{name}"] == value
        for name, ci in record["metrics_ci"].items():
            assert run["summary"][f"metrics_ci/{name}"] == ci and ci["n"] == 4
        if record["status"] == "skipped":
            assert "does not fit hardware=cpu" in run["summary"]["error"]
            assert run["summary"]["preflight/estimated_peak_gb"] == record["preflight"]["estimated_peak_gb"]


def _board(capsys, *args):
    assert main(list(args)) == 0
    out = capsys.readouterr().out
    return out[:out.index("written:")]


def _markdown(path):
    return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("Source:"))


def test_offline_source_gives_the_same_boards_picks_and_reasons_as_the_ledger(offline_sweep, tmp_path, capsys):
    bounds = ("--min", "rougeL=0", "--max", "usd_total=1", "--no-report")
    from_ledger = _board(capsys, "--ledger", str(offline_sweep / "runs.jsonl"), *bounds, "--out", str(tmp_path / "a.md"))
    from_wandb = _board(capsys, "--source", f"wandb-offline:{offline_sweep / 'wandb'}", *bounds,
                        "--out", str(tmp_path / "b.md"))
    assert from_wandb == from_ledger
    assert "cheapest adequate (data=hr_handbook" in from_ledger and "(2 seeds)" in from_ledger
    assert "failed: RuntimeError" in from_ledger and "skipped: PreflightRefusal" in from_ledger
    assert _markdown(tmp_path / "b.md") == _markdown(tmp_path / "a.md")
    assert "Source: `wandb-offline:" in (tmp_path / "b.md").read_text()


def test_group_selects_one_sweep_in_every_source(offline_sweep, tmp_path, capsys, monkeypatch):
    ledger = Ledger(offline_sweep / "runs.jsonl").records()
    failed = next(r for r in ledger if r["status"] == "failed")
    monkeypatch.setattr(sources, "make_api", lambda: DoubleApi(offline_sweep / "wandb"))
    outs = [_board(capsys, *where, "--group", failed["sweep_id"], "--no-report", "--out", str(tmp_path / f"{i}.md"))
            for i, where in enumerate((("--ledger", str(offline_sweep / "runs.jsonl")),
                                       ("--source", f"wandb-offline:{offline_sweep / 'wandb'}"),
                                       ("--source", "wandb:team/tunebench")))]
    assert outs[0] == outs[1] == outs[2]
    assert "failed" in outs[0] and "completed" not in outs[0]


def test_online_source_through_the_api_gives_the_same_boards(offline_sweep, tmp_path, capsys, monkeypatch):
    api = DoubleApi(offline_sweep / "wandb")
    monkeypatch.setattr(sources, "make_api", lambda: api)
    bounds = ("--min", "rougeL=0", "--no-report")
    from_ledger = _board(capsys, "--ledger", str(offline_sweep / "runs.jsonl"), *bounds, "--out", str(tmp_path / "a.md"))
    online = _board(capsys, "--source", "wandb:team/tunebench", *bounds, "--out", str(tmp_path / "b.md"))
    assert online == from_ledger
    assert api.calls == [{"path": "team/tunebench", "filters": {}, "lazy": False}]
    # Records and predictions (downloaded from the run's table file) equal the ledger's.
    source = parse_source("wandb:team/tunebench")
    records = _by_run_id(source.records())
    ledger_source = parse_source(f"ledger:{offline_sweep / 'runs.jsonl'}")
    # The ledger's own records (its source reads the board index: what a board shows of them).
    for record in Ledger(offline_sweep / "runs.jsonl").records():
        assert records[record["run_id"]] == record
        if record["status"] == "completed":
            assert source.predictions(records[record["run_id"]]) == ledger_source.predictions(record)


@pytest.mark.parametrize(("source", "message"), [
    ("wandb", "expected ledger:PATH, wandb:ENTITY/PROJECT or wandb-offline:DIR"),
    ("s3:bucket", "expected ledger:PATH, wandb:ENTITY/PROJECT or wandb-offline:DIR"),
    ("wandb:just-a-project", "expected wandb:ENTITY/PROJECT"),
    ("wandb-offline:{tmp}/nope", "no such directory"),
    ("wandb-offline:{tmp}", "no offline W&B runs (run-*.wandb)"),
])
def test_bad_sources_get_one_line(source, message, tmp_path, capsys):
    assert main(["--source", source.format(tmp=tmp_path), "--out", str(tmp_path / "lb.md")]) == 2
    out = capsys.readouterr().out
    assert message in out and "Traceback" not in out and out.count("\n") == 1


def test_online_source_without_a_login_says_how_to_log_in(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    assert main(["--source", "wandb:team/tunebench", "--out", str(tmp_path / "lb.md")]) == 2
    out = capsys.readouterr().out
    assert "wandb login" in out and "wandb-offline:results/wandb" in out


def test_an_offline_run_that_is_not_a_tunebench_cell_is_left_out_and_said(tmp_path, capsys, offline_sweep):
    foreign = tmp_path / "wandb"
    code = ("import wandb; r = wandb.init(project='p', mode='offline', dir=%r, config={'lr': 1}); "
            "r.summary['loss'] = 1.0; r.finish()" % str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env={**os.environ,
                                                                                        "WANDB_SILENT": "true"})
    for run in (offline_sweep / "wandb").glob("offline-run-*"):
        shutil.copytree(run, foreign / run.name)
    assert main(["--source", f"wandb-offline:{foreign}", "--no-report", "--out", str(tmp_path / "lb.md")]) == 0
    out = capsys.readouterr().out
    assert "not a tunebench cell" in out


def test_compare_reads_the_logged_predictions_tables_from_wandb(offline_sweep, tmp_path, capsys, monkeypatch):
    ledger = Ledger(offline_sweep / "runs.jsonl").records()
    base = next(r for r in ledger if r["method"] == "base" and r["status"] == "completed")
    instruct = next(r for r in ledger if r["method"] == "instruct" and r["status"] == "completed")
    keys = [base["run_key"], instruct["run_key"][:8]]
    monkeypatch.setattr(sources, "make_api", lambda: DoubleApi(offline_sweep / "wandb"))
    outs = []
    for where in (("--ledger", str(offline_sweep / "runs.jsonl")),
                  ("--source", f"wandb-offline:{offline_sweep / 'wandb'}"), ("--source", "wandb:team/tunebench")):
        assert main([*where, "--compare", *keys]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2]
    assert "seeds used: 1, 2" in outs[0] and "paired bootstrap, B - A" in outs[0]
