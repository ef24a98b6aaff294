"""The end-of-sweep summary from the ledger (by sweep id) and the jobs' outcome files."""

from harness.core.ledger import COMPLETED, FAILED, INTERRUPTED, SKIPPED, Ledger, RunRecord
from harness.core.outcome import (
    CONFIG_ERROR,
    DONE_BEFORE,
    ERROR,
    JOB_ENDED,
    NOT_RETRIED,
    RUNNING_ELSEWHERE,
    Outcome,
    write_outcome,
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
    assert details == ["  failed: m/base [b]",
                       "  running elsewhere: m/f: claimed by n1 pid 7", "  not retried: m/g: failed before at train",
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


def test_records_that_did_not_complete_and_jobs_that_ended_without_a_result_are_named(tmp_path):
    ledger = Ledger(tmp_path / "runs.jsonl")
    failed = _record("a", FAILED)
    failed.error, failed.error_type, failed.failed_stage = "injected failure at train\nTraceback ...", "RuntimeError", \
        "train"
    interrupted = _record("b", INTERRUPTED)
    interrupted.error = "interrupted by SIGTERM during train"
    for record in (failed, interrupted, _record("c", COMPLETED)):
        ledger.append(record)
    sweep = tmp_path / "sweep"
    dirs = [_job(sweep, 0, Outcome(FAILED, "m/a", run_key="a", ledger=str(ledger.path))),
            _job(sweep, 1, Outcome(INTERRUPTED, "m/b", run_key="b", ledger=str(ledger.path))),
            _job(sweep, 2, Outcome(COMPLETED, "m/c", run_key="c", ledger=str(ledger.path)))]
    # A job Slurm ended before Hydra wrote anything: its launcher left only an outcome.
    died = sweep / "3"
    write_outcome(died, Outcome(JOB_ENDED, "m/d", detail="Slurm job 7_3 ended FAILED (ExitCode=1:0); log: x.err"))
    dirs.append(died)
    summary = summarize("s1", dirs, ledger.path)
    head, *details = summary.lines()
    assert head.startswith("tunebench: 1 completed, 0 skipped, 2 failed (1 interrupted), 1 with no result")
    assert details == ["  failed: m/base [a] at train: RuntimeError: injected failure at train",
                       "  interrupted: m/base [b]: interrupted by SIGTERM during train; the same command resumes it",
                       "  no result: m/d: Slurm job 7_3 ended FAILED (ExitCode=1:0); log: x.err"]
    assert summary.exit_code == 1


def test_a_job_folder_with_only_its_launchers_outcome_is_part_of_the_sweep(tmp_path):
    from omegaconf import OmegaConf

    from harness.sweep import job_dirs

    sweep = tmp_path / "sweep"
    _job(sweep, 0)
    write_outcome(sweep / "1", Outcome(JOB_ENDED, "m/d", detail="ended CANCELLED"))
    (sweep / ".submitit").mkdir()
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    assert [p.name for p in job_dirs(config, multirun=True)] == ["0", "1"]
