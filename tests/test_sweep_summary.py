"""The end-of-sweep summary from the ledger (by sweep id) and the jobs' outcome files."""

from harness.core.ledger import COMPLETED, FAILED, INTERRUPTED, SKIPPED, Ledger, RunRecord
from harness.core.outcome import (
    CONFIG_ERROR, DONE_BEFORE, ERROR, NOT_RETRIED, RUNNING_ELSEWHERE, Outcome, write_outcome,
)
from harness.sweep import summarize


def _record(key, status, sweep="s1"):
    return RunRecord(run_key=key, run_id=f"{key}-{status}", status=status, started_at="t", finished_at="t",
                     sweep_id=sweep, model="m", method="base", data="d", hardware="cpu", config={})


def _job(sweep_dir, num, outcome=None):
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    if outcome is not None:
        write_outcome(job, outcome)
    return job


def test_counts_come_from_this_sweeps_records_and_the_jobs_decisions(tmp_path):
    ledger = Ledger(tmp_path / "runs.jsonl")
    for record in (_record("a", COMPLETED, sweep="older"), _record("a", COMPLETED), _record("b", FAILED),
                   _record("c", SKIPPED), _record("d", INTERRUPTED), _record("d", COMPLETED)):
        ledger.append(record)
    sweep = tmp_path / "sweep"
    dirs = [
        _job(sweep, 0, Outcome(COMPLETED, "m/base", run_key="a", ledger=str(ledger.path))),
        _job(sweep, 1, Outcome(FAILED, "m/x", run_key="b", ledger=str(ledger.path))),
        _job(sweep, 2, Outcome(SKIPPED, "m/y", run_key="c", ledger=str(ledger.path))),
        # Interrupted, requeued by submitit, then completed: the cell counts once, as completed.
        _job(sweep, 3, Outcome(COMPLETED, "m/z", run_key="d", ledger=str(ledger.path))),
        _job(sweep, 4, Outcome(DONE_BEFORE, "m/e", run_key="e", ledger=str(ledger.path))),
        _job(sweep, 5, Outcome(RUNNING_ELSEWHERE, "m/f", run_key="f", detail="claimed by n1 pid 7")),
        _job(sweep, 6, Outcome(NOT_RETRIED, "m/g", run_key="g", detail="failed before at train")),
        _job(sweep, 7, Outcome(CONFIG_ERROR, "m/h", detail="qlora.r: must be > 0")),
        _job(sweep, 8, Outcome(ERROR, "m/i", detail="ConnectionError: judge down")),
        _job(sweep, 9),  # killed before it wrote anything
    ]
    summary = summarize("s1", dirs, ledger.path)
    head, *details = summary.lines()
    assert head.startswith("tunebench: 2 completed, 1 skipped, 3 failed, 1 refused by the memory preflight, "
                           "1 running elsewhere, 1 not retried, 1 with no result (process died?) [sweep s1]")
    assert details == ["  running elsewhere: m/f: claimed by n1 pid 7", "  not retried: m/g: failed before at train",
                       "  configuration error: m/h: qlora.r: must be > 0",
                       "  error before the cell ran: m/i: ConnectionError: judge down"]
    assert summary.exit_code == 1


def test_a_clean_sweep_exits_0_and_a_killed_job_with_its_record_is_accounted(tmp_path):
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append(_record("a", COMPLETED))
    ledger.append(_record("b", COMPLETED))
    sweep = tmp_path / "sweep"
    # Job 1 appended its record, then died before writing its outcome: not "no result".
    dirs = [_job(sweep, 0, Outcome(COMPLETED, "m/a", run_key="a", ledger=str(ledger.path))), _job(sweep, 1)]
    summary = summarize("s1", dirs, ledger.path)
    assert summary.lines()[0].startswith("tunebench: 2 completed, 0 skipped, 0 failed [sweep s1]")
    assert summary.exit_code == 0
