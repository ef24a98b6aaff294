"""Waiting for a sweep's Slurm job array, job by job, from Slurm's own view of it (squeue).

hydra-submitit-launcher 1.2.0 collects with `job.results()` for every job in turn: the first job that failed
raises and the others are never collected (hydra #1377), and a job Slurm requeued (preemption, `scontrol
requeue`, submitit's own requeue at the time limit) reads as finished, or failed, while it waits to run again.
It also asks sacct at every poll, and on a cluster without accounting each poll prints a warning.

Here a job is done when Slurm says it ended (squeue's state, kept for MinJobAge after the end) or no longer
knows it; one still pending, running or requeued is waited for, whatever result file an earlier attempt left.
Every job is collected, whatever the others did. Whether the cluster keeps accounting is asked once, and said
in one line when it does not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Slurm job states (squeue %T) of a job that is not over: it may still run (again).
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "COMPLETING", "CONFIGURING", "SUSPENDED",
                    "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "REQUEUE_HOLD",
                    "SPECIAL_EXIT"})
# Held after a requeue: only `scontrol release` (or scancel) moves them on.
HELD = frozenset({"REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD"})
RAN = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"})
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED"})
# How long a job that Slurm says ended may take to show its result file (a shared filesystem's cache).
RESULT_GRACE_S = 60.0
# Polls in a row a job must be missing from squeue before it counts as ended (it left after MinJobAge).
MISSING_POLLS = 2


def say(line: str) -> None:
    print(f"tunebench: {line}", file=sys.stderr, flush=True)


@dataclass
class QueuedJob:
    job_id: str  # Slurm's id: "<array id>_<index>" for a job of an array
    label: str  # what it runs, for messages (the overrides that set it apart; "" for a sweep of one)
    result_file: Path  # submitit's result pickle, written when the task returns or raises

    @property
    def name(self) -> str:
        return f"job {self.job_id}" + (f" ({self.label})" if self.label else "")

    @property
    def array_id(self) -> str:
        return self.job_id.split("_", 1)[0]


@dataclass
class Ended:
    job: QueuedJob
    state: str  # the last state Slurm showed ("UNKNOWN": it had forgotten the job)
    requeues: int = 0  # times it was seen going back to the queue after running
    detail: str = ""  # Slurm's reason and exit code, when it still knows them


@dataclass
class _Watch:
    job: QueuedJob
    state: str = "SUBMITTED"
    ran: bool = False
    requeues: int = 0
    missing: int = 0
    ended_at: float | None = None
    said_held: bool = False


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def squeue_states(array_ids: list[str]) -> dict[str, str]:
    """Slurm's state of every job of these arrays that it still knows (pending tasks one by one).
    Raises RuntimeError when squeue cannot answer (controller restarting, network)."""
    try:
        done = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(sorted(set(array_ids))), "-o", "%i %T"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"squeue: {exc}") from exc
    if done.returncode != 0:
        text = (done.stderr or done.stdout).strip()
        if "Invalid job id" in text:  # every job of the arrays is past MinJobAge
            return {}
        raise RuntimeError(f"squeue: {text.splitlines()[-1] if text else f'exit {done.returncode}'}")
    return dict(line.split()[:2] for line in done.stdout.splitlines() if len(line.split()) >= 2)


def job_detail(job_id: str) -> str:
    """Slurm's state, reason and exit code of one job while the controller remembers it ("" once it does not)."""
    try:
        done = _run(["scontrol", "show", "job", job_id, "-o"], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    fields = dict(part.split("=", 1) for part in done.stdout.split() if "=" in part)
    kept = [f"{k}={fields[k]}" for k in ("JobState", "Reason", "ExitCode", "Restarts") if fields.get(k)]
    return " ".join(kept)


def no_accounting_reason(job_id: str) -> str | None:
    """Why sacct cannot tell this job's history (the cluster keeps no accounting), or None when it can."""
    if shutil.which("sacct") is None:
        return "there is no sacct command"
    try:
        done = _run(["sacct", "-n", "-X", "-j", job_id, "-o", "JobID"], timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sacct did not answer ({exc})"
    if done.returncode != 0:
        return f"sacct: {(done.stderr or done.stdout).strip().splitlines()[-1] if (done.stderr or done.stdout) else done.returncode}"
    return None


@dataclass
class Poll:
    """Poll squeue at `first_s`, growing by half each quiet poll up to `max_s`; back to `first_s` whenever
    something changed (a short sweep ends promptly, a long one costs the controller little)."""

    max_s: float
    first_s: float = 2.0
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.current = min(self.first_s, self.max_s)

    def next(self, changed: bool) -> float:
        self.current = min(self.first_s, self.max_s) if changed else min(self.current * 1.5, self.max_s)
        return self.current


def wait_for(jobs: list[QueuedJob], poll_s: float = 30.0, report: Callable[[str], None] = say,
             sleep: Callable[[float], None] = time.sleep, states: Callable[[list[str]], dict[str, str]] = squeue_states,
             detail: Callable[[str], str] = job_detail) -> list[Ended]:
    """Wait until Slurm is done with every job, and say what happened to each: one ended job (failed,
    cancelled, killed) neither stops the wait for the others nor hides their results. A job requeued is
    waited for until its last run ends."""
    watches = {job.job_id: _Watch(job) for job in jobs}
    arrays = [job.array_id for job in jobs]
    poll = Poll(poll_s)
    last_error = None
    while True:
        try:
            known = states(arrays)
            last_error = None
        except RuntimeError as exc:
            if str(exc) != last_error:
                report(f"{exc}; asking again (the jobs keep running)")
                last_error = str(exc)
            sleep(poll.next(False))
            continue
        changed = False
        now = time.monotonic()
        for watch in watches.values():
            state = known.get(watch.job.job_id)
            if state is None:
                watch.missing += 1
                if watch.missing >= MISSING_POLLS and watch.ended_at is None:
                    watch.state, watch.ended_at, changed = "UNKNOWN", now, True
                continue
            watch.missing = 0
            if state != watch.state:
                changed = True
                if watch.ran and state in WAITING:
                    watch.requeues += 1
                    report(f"{watch.job.name} was requeued by Slurm (preempted, requeued "
                           f"or at its time limit): waiting for its next run; the cell resumes from its last "
                           f"checkpoint")
                watch.state = state
            if state in RAN:
                watch.ran = True
            if state in HELD and not watch.said_held:
                watch.said_held = True
                report(f"{watch.job.name} is held by Slurm ({state}): `scontrol release "
                       f"{watch.job.job_id}` runs it again, `scancel {watch.job.job_id}` gives it up; waiting")
            if state in ACTIVE:
                watch.ended_at = None
            elif watch.ended_at is None:
                watch.ended_at = now
        pending = [w for w in watches.values()
                   if w.ended_at is None or (not w.job.result_file.exists() and now - w.ended_at < RESULT_GRACE_S
                                             and w.state == "COMPLETED")]
        if not pending:
            break
        sleep(poll.next(changed))
    return [Ended(w.job, w.state, w.requeues, detail(w.job.job_id) if w.state != "COMPLETED" else "")
            for w in watches.values()]
