"""Sweeps on a real Slurm cluster (one node, started by the `slurm` fixture: tests/slurm_cluster.py), through the
shipped presets: every cell recorded once, failures named without aborting the rest, scancel, scontrol requeue
and the time limit survived with training resumed from its checkpoint, overlapping sweeps, array_parallelism.

Timing-dependent steps wait on states (squeue, job logs, the launching command's lines), never on sleeps, with
generous deadlines: the 2-core machine these run on is shared and loaded.
"""

import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest import REPO

from harness.core.ledger import COMPLETED, INTERRUPTED, Ledger
from harness.core.study import open_storage

pytestmark = pytest.mark.slow

# The shipped GPU preset on the test node, which has no GPU: what the README says CI submits.
GPU_PRESET_ON_CPU = ("hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
                     "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4")
CPU_PRESET = ("hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1")
TINY = ("model=tiny_random", "qlora.max_steps=3", "eval.num_examples=4", "eval.max_new_tokens=8", "progress=false",
        "tracker=none")
# A training cell long enough to be caught mid-training; one thread per cell keeps a step near 0.1-0.2 s on a
# busy 2-core box (two threads each would fight over the cores).
LONG = ("model=tiny_random", "method=base,instruct", "qlora.max_steps=200", "qlora.save_steps=20",
        "hardware.num_threads=1", "eval.num_examples=2", "eval.max_new_tokens=4", "tracker=none")
DEADLINE_S = 900


def readme_command() -> list[str]:
    """The README's Slurm try-out command, word for word (the block after 'CI runs exactly this command')."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("CI runs exactly this command", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return shlex.split(block.replace("\\\n", " "))


class Sweep:
    """`python -m harness` running in the background against the cluster, its stderr collected line by line."""

    def __init__(self, args: list[str], results: Path, slurm, **env: str) -> None:
        self.results = results
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "harness", *args, f"results_dir={results}"], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **slurm.env, "TUNEBENCH_PROGRESS_EVERY_S": "0", **env})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float = DEADLINE_S) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the sweep did not end in time:\n" + self.stderr[-4000:]) from None
        self._reader.join(timeout=30)
        return self.proc.returncode

    def summary(self) -> str:
        return next((x for x in self.lines if x.startswith("tunebench: ") and " completed, " in x), "(none)")


def _run(args: list[str], results: Path, slurm) -> tuple[int, Sweep]:
    sweep = Sweep(args, results, slurm)
    return sweep.wait(), sweep


def _records(results: Path) -> list[dict]:
    return Ledger(results / "runs.jsonl").records()


def _wait_until(what: str, check, timeout: float = DEADLINE_S, every: float = 0.5, sweep: Sweep | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if sweep is not None and sweep.proc.poll() is not None:
            raise AssertionError(f"the sweep ended while waiting for {what}:\n{sweep.stderr[-4000:]}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{sweep.stderr[-4000:]}" if sweep else ""))


def _job_log(results: Path, index: int) -> Path | None:
    """The stderr log of the sweep's job `index`: .submitit/<array>_<i>/<array>_<i>_0_log.err in an array,
    .submitit/<job>/<job>_0_log.err for a sweep of one cell."""
    for log in results.glob("hydra/multirun/*/.submitit/*/*_0_log.err"):
        folder = log.parent.name
        if folder.partition("_")[2] == str(index) or (index == 0 and folder.isdigit()):
            return log
    return None


def _training_step(log: Path | None) -> int:
    """The latest training step the job's log shows (0 before training)."""
    if log is None or not log.exists():
        return 0
    steps = re.findall(r"\[progress\] train: step (\d+)/", log.read_text(errors="replace"))
    return int(steps[-1]) if steps else 0


def _job_id(log: Path) -> str:
    return log.name.removesuffix("_0_log.err")


def _completed_once(rows: list[dict]) -> Counter:
    return Counter(r["run_key"] for r in rows if r["status"] == COMPLETED)


def test_the_readme_sweep_records_four_cells_once_and_says_no_accounting_once(slurm, tmp_path):
    results = tmp_path / "results"
    command = readme_command()
    assert command[:3] == ["python", "-m", "harness"] and "hydra/launcher=slurm_cpu" in command
    code, sweep = _run(command[3:], results, slurm)
    assert code == 0, sweep.stderr[-4000:]
    rows = _records(results)
    assert len(rows) == 4 and all(r["status"] == COMPLETED for r in rows)
    assert sorted(_completed_once(rows).values()) == [1, 1, 1, 1]  # 4 cells, 0 duplicates
    assert sorted((r["method"], r["config"]["qlora"]["r"]) for r in rows) == [("base", 4), ("base", 8),
                                                                              ("instruct", 4), ("instruct", 8)]
    (sweep_id,) = {r["sweep_id"] for r in rows}
    ledger = results / "runs.jsonl"
    assert sweep.summary().rstrip("\n") == (f"tunebench: 4 completed, 0 skipped, 0 failed [sweep {sweep_id}] (ledger: "
                                            f"{ledger}; table: python -m harness.leaderboard --ledger {ledger})")
    assert sweep.stderr.count("keeps no job accounting") == 1
    assert "Bypassing sacct" not in sweep.stderr and "Traceback" not in sweep.stderr
    array = re.search(r"submitted 4 cell\(s\) to Slurm as job array (\d+)", sweep.stderr).group(1)
    assert all(state == "COMPLETED" for job, state in slurm.jobs().items() if job.startswith(f"{array}_"))


def test_a_job_that_dies_is_named_and_the_rest_of_the_shipped_gpu_preset_sweep_is_collected(slurm, tmp_path):
    results = tmp_path / "results"
    # The instruct cell's process is killed in training, as the out-of-memory killer would; base completes.
    code, sweep = _run(["-m", *GPU_PRESET_ON_CPU, *TINY, "method=instruct,base", "crash_at=train"], results, slurm)
    assert code == 1, sweep.stderr[-4000:]
    assert [(r["method"], r["status"]) for r in _records(results)] == [("base", COMPLETED)]
    assert sweep.summary().startswith("tunebench: 1 completed, 0 skipped, 0 failed, 1 with no result")
    died = next(x for x in sweep.lines if x.startswith("  no result: "))
    assert re.match(r"  no result: tiny_random/instruct: Slurm job \d+_0 ended (FAILED|CANCELLED)", died), died
    assert "_0_0_log.err" in died
    assert "Traceback" not in sweep.stderr


def test_scancel_records_the_cell_interrupted_and_the_same_command_runs_only_it_from_its_checkpoint(slurm,
                                                                                                     tmp_path):
    results = tmp_path / "results"
    args = ["-m", *CPU_PRESET, *LONG]
    sweep = Sweep(args, results, slurm)
    log = _wait_until("instruct's training", lambda: (p := _job_log(results, 1)) and _training_step(p) >= 5 and p,
                      sweep=sweep)
    slurm.run("scancel", _job_id(log))
    assert sweep.wait() == 1, sweep.stderr[-4000:]
    rows = _records(results)
    assert sorted((r["method"], r["status"]) for r in rows) == [("base", COMPLETED), ("instruct", INTERRUPTED)]
    assert next(r for r in rows if r["method"] == "instruct")["error"] == "interrupted by SIGTERM during train"
    assert "  interrupted: tiny_random/instruct [" in sweep.stderr

    code, again = _run(args, results, slurm)
    assert code == 0, again.stderr[-4000:]
    assert again.summary().startswith("tunebench: 1 completed, 1 skipped, 0 failed")
    rows = _records(results)
    assert [(r["method"], r["status"]) for r in rows][-1] == ("instruct", COMPLETED) and len(rows) == 3
    assert rows[-1]["train"]["resumed_from_step"] >= 5 and rows[-1]["train"]["steps"] == 200


def test_scontrol_requeue_is_waited_for_and_the_requeued_job_finishes_the_cell(slurm, tmp_path):
    results = tmp_path / "results"
    sweep = Sweep(["-m", *CPU_PRESET, *LONG], results, slurm)
    log = _wait_until("instruct's training", lambda: (p := _job_log(results, 1)) and _training_step(p) >= 5 and p,
                      sweep=sweep)
    job = _job_id(log)
    slurm.run("scontrol", "requeue", job)
    _wait_until("the requeue to be reported", lambda: f"job {job} (" in sweep.stderr and "was requeued" in
                sweep.stderr, sweep=sweep)
    assert sweep.proc.poll() is None  # still waiting, not reporting the cell failed
    # Slurm holds a requeued job ~2 minutes before it may start again (its begin time); let it start now.
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    assert sweep.wait() == 0, sweep.stderr[-4000:]
    assert sweep.summary().startswith("tunebench: 2 completed, 0 skipped, 0 failed")
    rows = _records(results)
    instruct = [r for r in rows if r["method"] == "instruct"]
    assert [r["status"] for r in instruct] == [INTERRUPTED, COMPLETED]
    assert sorted(_completed_once(rows).values()) == [1, 1]
    train = instruct[-1]["train"]
    assert train["resumed_from_step"] >= 5
    assert [a["slurm_job"] for a in train["attempts"]] == [job, job]
    assert train["train_s"] == pytest.approx(sum(a["train_s"] for a in train["attempts"]), abs=0.01)


def test_the_time_limit_warning_requeues_the_job_and_the_cell_completes_on_its_next_attempt(slurm, tmp_path):
    results = tmp_path / "results"
    # USR2 comes 60 s before a 2-minute limit: about 60 s in, well into training (a job starts in 15-40 s here).
    # 2000 steps cannot be trained in that time (~30 step/s at best here); after the requeue the job gets a
    # longer limit, so it finishes on this next attempt whatever the load.
    sweep = Sweep(["-m", *CPU_PRESET, "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60",
                   "model=tiny_random", "method=instruct", "qlora.max_steps=2000", "qlora.save_steps=500",
                   "hardware.num_threads=1", "eval.num_examples=2", "eval.max_new_tokens=4", "tracker=none"],
                  results, slurm)
    log = _wait_until("the job's log", lambda: _job_log(results, 0), sweep=sweep)
    job = _job_id(log)
    _wait_until("Slurm's warning signal", lambda: "Caught signal SIGUSR2" in log.read_text(errors="replace"),
                sweep=sweep)
    _wait_until("submitit's requeue", lambda: "DUE TO JOB REQUEUE" in log.read_text(errors="replace"), sweep=sweep)
    assert "this job is timed-out" in log.read_text(errors="replace")
    _wait_until("the requeue to be reported", lambda: "was requeued" in sweep.stderr, sweep=sweep)
    slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=30", "StartTime=now")
    assert sweep.wait() == 0, sweep.stderr[-4000:]
    rows = _records(results)
    assert [r["status"] for r in rows] == [INTERRUPTED, COMPLETED]
    assert rows[0]["error"].startswith("stopped by exit") and rows[0]["failed_stage"] == "train"
    assert 0 < rows[1]["train"]["resumed_from_step"] < 2000 and rows[1]["train"]["steps"] == 2000
    assert len(rows[1]["train"]["attempts"]) == 2


def test_two_overlapping_sweeps_submitted_at_once_compute_each_cell_once(slurm, tmp_path):
    results = tmp_path / "results"
    first = Sweep(["-m", *CPU_PRESET, *TINY, "method=base,instruct"], results, slurm)
    second = Sweep(["-m", *CPU_PRESET, *TINY, "method=instruct,causal"], results, slurm)
    assert first.wait() == 0, first.stderr[-4000:]
    assert second.wait() == 0, second.stderr[-4000:]
    rows = _records(results)
    assert Counter(r["status"] for r in rows) == {COMPLETED: 3}
    assert sorted(r["method"] for r in rows) == ["base", "causal", "instruct"]
    assert sorted(_completed_once(rows).values()) == [1, 1, 1]
    # The shared cell: one sweep ran it, the other found it done or running elsewhere.
    told = first.summary() + second.summary()
    assert re.search(r"1 skipped|1 running elsewhere", told), told


def test_array_parallelism_caps_the_running_jobs_of_the_array(slurm, tmp_path):
    results = tmp_path / "results"
    # One CPU per job on a node with two: Slurm could run two at once, the array limit allows one.
    sweep = Sweep(["-m", *CPU_PRESET, "hydra.launcher.array_parallelism=1", *TINY, "method=base",
                   "eval.max_new_tokens=4,6,8"], results, slurm)
    running, reasons = [], set()
    while sweep.proc.poll() is None:
        out = slurm.run("squeue", "-h", "-r", "-o", "%i %T %r", check=False).stdout.split("\n")
        jobs = [line.split() for line in out if line.strip()]
        running.append(sum(1 for j in jobs if j[1] == "RUNNING"))
        reasons |= {j[2] for j in jobs if j[1] == "PENDING"}
        time.sleep(0.5)
    assert sweep.wait() == 0, sweep.stderr[-4000:]
    assert max(running) == 1, running
    assert "JobArrayTaskLimit" in reasons, reasons  # the limit, not the node, held the others back
    assert len(_records(results)) == 3


def test_a_search_prunes_its_trials_on_slurm_jobs_through_a_journal_file(slurm, tmp_path):
    """hydra/sweeper=tunebench over the Slurm launcher: each trial is a job of its own array, which reaches its study
    only through the journal file on the shared disk (a job shares no memory with the sweeper), reports there and is
    stopped by the pruner it rebuilt from the storage."""
    results = tmp_path / "results"
    journal = tmp_path / "shared" / "study.journal"
    code, sweep = _run(["-m", "hydra/sweeper=tunebench", *CPU_PRESET, *TINY, "method=instruct", "data=shop_catalog",
                        "qlora.max_steps=4", "qlora.eval_steps=2", "qlora.validation_examples=8",
                        "qlora.r=choice(4,8)", "sweep_id=slurm-search", "hydra.sweeper.sampler=grid",
                        "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", f"hydra.sweeper.storage=journal:{journal}",
                        "hydra.sweeper.pruner.name=threshold", "hydra.sweeper.pruner.lower=0.5"], results, slurm)
    assert code == 0, sweep.stderr[-4000:]
    assert re.search(r"submitted 2 cell\(s\) to Slurm as job array \d+", sweep.stderr), sweep.stderr[-4000:]
    rows = _records(results)
    assert sorted(r["status"] for r in rows) == ["pruned", "pruned"]
    assert sorted(r["config"]["qlora"]["r"] for r in rows) == [4, 8]
    assert all(r["train"]["pruned_at_step"] == 2 for r in rows)
    trials = optuna.load_study(study_name="slurm-search", storage=open_storage(f"journal:{journal}")).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(set(t.intermediate_values) == {2} for t in trials)
