"""Sweeps as users run them, under Hydra's parallel launchers and with processes that die: the ledger holds
every cell once, the summary and exit status are right, claims keep concurrent sweeps from running a cell twice."""

import json
import math
import os
import pickle
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO

from harness.core.ledger import Ledger

TINY = ("model=tiny_random", "qlora.max_steps=3", "eval.num_examples=4", "eval.max_new_tokens=8", "progress=false",
        "tracker=none")
# Long enough to be caught mid-training: ~0.1-0.5 s a step on a loaded 2-core CPU.
LONG_TRAIN = ("model=tiny_random", "qlora.max_steps=40", "eval.num_examples=2", "eval.max_new_tokens=4",
              "progress=true", "tracker=none")


def _records(results: Path) -> list[dict]:
    return Ledger(results / "runs.jsonl").records()


def _sweep_dirs(results: Path) -> list[Path]:
    return sorted((results / "hydra" / "multirun").iterdir())


@pytest.mark.parametrize(
    "launcher",
    [("hydra/launcher=submitit_local",), ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")],
    ids=["submitit_local", "joblib"],
)
def test_parallel_launcher_records_every_cell_once_and_reports_from_the_ledger(run_harness, tmp_path, launcher):
    results = tmp_path / "results"
    # fail_at=train fails the cell that trains (instruct); base completes.
    proc = run_harness("-m", *TINY, "method=base,instruct", "fail_at=train", "objective=rougeL", *launcher,
                       results_dir=results)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "tunebench: 1 completed, 0 skipped, 1 failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    rows = _records(results)
    assert sorted((r["method"], r["status"]) for r in rows) == [("base", "completed"), ("instruct", "failed")]
    assert len({r["run_key"] for r in rows}) == 2
    (sweep_dir,) = _sweep_dirs(results)
    assert {r["sweep_id"] for r in rows} == {sweep_dir.name}
    assert f"[sweep {sweep_dir.name}]" in proc.stderr
    # Short job folders, one per cell, each with what its job decided and the objective it returned.
    outcomes = {d.name: json.loads((d / "outcome.json").read_text()) for d in sweep_dir.iterdir() if d.name.isdigit()}
    assert sorted(outcomes) == ["0", "1"]
    by_status = {o["status"]: o for o in outcomes.values()}
    assert by_status["completed"]["objective"] == next(r for r in rows if r["status"] == "completed")["metrics"]["rougeL"]
    assert math.isnan(by_status["failed"]["objective"])
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["failed_stage"] == "train" and failed["failure_kind"] == "deterministic"
    if launcher[0].endswith("submitit_local"):
        # The task function's return value is what submitit hands back to a sweeper.
        returns = []
        for pkl in sweep_dir.glob(".submitit/*/*_result.pkl"):
            outcome, job_return = pickle.loads(pkl.read_bytes())
            returns.append(job_return.return_value)
        assert len(returns) == 2 and sum(math.isnan(v) for v in returns) == 1


def test_deterministic_failure_is_not_retried_unless_asked(run_harness, tmp_path):
    results = tmp_path / "results"
    first = run_harness("-m", *TINY, "method=base,instruct", "fail_at=train", results_dir=results)
    assert first.returncode == 1
    again = run_harness("-m", *TINY, "method=base,instruct", "fail_at=train", results_dir=results)
    assert again.returncode == 1, again.stderr[-3000:]
    assert "tunebench: 0 completed, 1 skipped, 0 failed, 1 not retried" in again.stderr
    assert "not retried: tiny_random/instruct" in again.stderr and "retry_failed=true" in again.stderr
    assert "failed before at train with RuntimeError: injected failure at train" in again.stderr
    assert len(_records(results)) == 2
    retried = run_harness(*TINY, "method=instruct", "fail_at=train", "retry_failed=true", results_dir=results)
    assert retried.returncode == 1
    assert "tunebench: 0 completed, 0 skipped, 1 failed" in retried.stderr
    assert [r["status"] for r in _records(results) if r["method"] == "instruct"] == ["failed", "failed"]


def _start(args: list[str], results: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *args, f"results_dir={results}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def test_two_sweeps_that_overlap_run_each_shared_cell_once(tmp_path):
    """Sweep A is held (SIGSTOP) while it owns the instruct cell's claim, and sweep B runs the same cells: B leaves
    that cell to A, naming A as its holder, and runs the other; A, resumed, finishes its cell and skips B's."""
    import socket

    results = tmp_path / "results"
    args = ["-m", *LONG_TRAIN, "method=instruct,base"]
    a = _start(args, results, TUNEBENCH_PROGRESS_EVERY_S="0")
    seen_a = _wait_for_training(a)
    a.send_signal(signal.SIGSTOP)
    try:
        (claim,) = (results / "claims").iterdir()
        assert json.loads(claim.read_text())["pid"] == a.pid
        b = _start(args, results)
        out_b = b.communicate(timeout=600)[1]
    finally:
        a.send_signal(signal.SIGCONT)
    out_a = "".join(seen_a) + a.communicate(timeout=600)[1]
    assert a.returncode == 0 and b.returncode == 0, out_a[-2000:] + out_b[-2000:]
    assert "tunebench: 1 completed, 0 skipped, 0 failed, 1 running elsewhere" in out_b
    assert f"claimed by {socket.gethostname()} pid {a.pid} (sweep " in out_b
    assert "tunebench: 1 completed, 1 skipped, 0 failed" in out_a
    rows = _records(results)
    assert Counter(r["status"] for r in rows) == {"completed": 2}
    assert len({r["run_key"] for r in rows}) == 2  # no cell ran twice
    by_method = {r["method"]: r["sweep_id"] for r in rows}
    assert by_method["instruct"] != by_method["base"]  # A ran instruct, B ran base
    assert rows[0]["method"] == "base" and rows[0]["run_key"] != claim.stem  # B finished first, while A was held
    assert rows[1]["run_key"] == claim.stem
    assert len(_sweep_dirs(results)) == 2 and set(by_method.values()) <= {d.name for d in _sweep_dirs(results)}
    assert not list((results / "claims").iterdir())  # every claim released


def _wait_for_training(proc: subprocess.Popen) -> list[str]:
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "[progress] train: step 2/" in line:
            return seen
    raise AssertionError("training never started:\n" + "".join(seen[-40:]))


def test_sweep_killed_mid_cell_resumes_running_the_killed_cell_once(tmp_path):
    results = tmp_path / "results"
    args = ["-m", *LONG_TRAIN, "method=base,instruct"]
    killed = _start(args, results, TUNEBENCH_PROGRESS_EVERY_S="0")
    _wait_for_training(killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    rows = _records(results)
    assert [(r["method"], r["status"]) for r in rows] == [("base", "completed")]
    (left_claim,) = (results / "claims").iterdir()  # the dead process's claim on the instruct cell

    again = _start(args, results)
    err = again.communicate(timeout=600)[1]
    assert again.returncode == 0, err[-3000:]
    assert "tunebench: 1 completed, 1 skipped, 0 failed" in err
    rows = _records(results)
    assert [(r["method"], r["status"]) for r in rows] == [("base", "completed"), ("instruct", "completed")]
    assert rows[1]["run_key"] == left_claim.stem
    assert not left_claim.exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_cell_records_interrupted_and_the_next_sweep_reruns_it(tmp_path, signum, code):
    results = tmp_path / "results"
    args = [*LONG_TRAIN, "method=instruct"]
    proc = _start(args, results, TUNEBENCH_PROGRESS_EVERY_S="0")
    _wait_for_training(proc)
    proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    (row,) = _records(results)
    assert row["status"] == "interrupted" and row["failed_stage"] == "train"
    assert row["error"] == f"interrupted by {signal.Signals(signum).name} during train"
    assert not list((results / "claims").iterdir())
    if signum == signal.SIGTERM:
        again = _start(args, results)
        err = again.communicate(timeout=600)[1]
        assert again.returncode == 0, err[-3000:]
        assert [r["status"] for r in _records(results)] == ["interrupted", "completed"]


def _launcher(*overrides: str):
    """The launcher as `python -m harness -m ...` builds it: composed, then instantiated, which Hydra does before
    HydraConfig exists (so a preset that interpolates ${hydra:...} fails here as it would there)."""
    from conftest import CONF
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from harness.core import config, gpus  # noqa: F401  (the schema; the ${tunebench_gpus:...} resolver)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra = compose("config", overrides=list(overrides), return_hydra_config=True).hydra
    assert not HydraConfig.initialized()
    return hydra, instantiate(hydra.launcher)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "conf" / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_preset_resolves_and_instantiates_where_hydra_builds_it(preset):
    from omegaconf import OmegaConf

    hydra, launcher = _launcher(f"hydra/launcher={preset}")
    resolved = OmegaConf.to_container(hydra.launcher, resolve=True)  # raises on anything unresolvable
    assert "${" not in str(resolved) and type(launcher).__name__ in ("TunebenchSlurmLauncher", "JoblibLauncher")


def test_launcher_presets_compose_with_their_promises(monkeypatch):
    slurm, launcher = _launcher("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=proj",
                                "hydra.launcher.qos=high")
    slurm = slurm.launcher
    assert type(launcher).__name__ == "TunebenchSlurmLauncher"
    assert (slurm.gpus_per_node, slurm.tasks_per_node, slurm.partition, slurm.account, slurm.qos) == (1, 1, "gpu",
                                                                                                       "proj", "high")
    assert slurm.max_num_timeout > 0 and slurm.signal_delay_s > 0 and slurm.array_parallelism > 0
    cpu = _launcher("hydra/launcher=slurm_cpu")[0].launcher
    assert (cpu.gpus_per_node, cpu._target_) == (0, slurm._target_)
    # local_gpus: one worker per GPU in CUDA_VISIBLE_DEVICES; with none visible, one worker and no GPU to bind.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    local = _launcher("hydra/launcher=local_gpus")[0]
    assert local.launcher._target_.endswith("JoblibLauncher")
    assert local.launcher.n_jobs == 3 and local.job.env_set.TUNEBENCH_GPU_SLOTS == "0,1,2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    none = _launcher("hydra/launcher=local_gpus")[0]
    assert none.launcher.n_jobs == 1 and none.job.env_set.TUNEBENCH_GPU_SLOTS == ""


def test_local_gpus_runs_one_worker_per_gpu_each_bound_to_its_own(run_harness, tmp_path):
    """Submitted through the preset's joblib backend on this CPU box: CUDA_VISIBLE_DEVICES names two GPUs, so two
    workers each bind one (the cells themselves run on the CPU, hardware=cpu)."""
    results = tmp_path / "results"
    locks = tmp_path / "tmp"  # the GPU locks live in the temporary folder: this test's own, not the machine's
    locks.mkdir()
    proc = run_harness("-m", "hydra/launcher=local_gpus", *TINY, "method=base", "eval.max_new_tokens=2,4,6,8",
                       results_dir=results, env={"CUDA_VISIBLE_DEVICES": "0,1", "TMPDIR": str(locks)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tunebench: 4 completed, 0 skipped, 0 failed" in proc.stderr
    rows = _records(results)
    assert len(rows) == 4 and len({r["run_key"] for r in rows}) == 4
    (sweep_dir,) = _sweep_dirs(results)
    outcomes = [json.loads(p.read_text()) for p in sweep_dir.glob("*/outcome.json")]
    assert len(outcomes) == 4
    gpu_of = {}
    for outcome in outcomes:  # a worker keeps the GPU it took for every later cell it runs
        assert gpu_of.setdefault(outcome["pid"], outcome["gpu"]) == outcome["gpu"]
    assert sorted(gpu_of.values()) == ["0", "1"]  # two workers, two GPUs, never one GPU for both
    assert sorted(p.name for p in locks.glob("tunebench-gpus-*/*.lock")) == ["gpu-0.lock", "gpu-1.lock"]


def test_each_invocation_gets_its_own_sweep_id_placed_among_the_overrides():
    from harness.__main__ import with_sweep_id

    first = with_sweep_id(["harness", "-m", "model=a,b", "--config-name", "config"])
    second = with_sweep_id(["harness", "-m", "model=a,b", "--config-name", "config"])
    assert first[:3] == ["harness", "-m", "model=a,b"] and first[3].startswith("sweep_id=")
    assert first[4:] == ["--config-name", "config"]
    assert first[3] != second[3]  # same second, different suffix
    assert with_sweep_id(["harness", "sweep_id=mine", "-m"]) == ["harness", "sweep_id=mine", "-m"]
    assert with_sweep_id(["harness", "--cfg", "job"]) == ["harness", "--cfg", "job"]


def test_plan_lists_cells_and_emits_commands_without_running_anything(run_harness, tmp_path):
    results = tmp_path / "results"
    done = run_harness(*TINY, "method=base", results_dir=results)
    assert done.returncode == 0, done.stderr[-3000:]
    (base,) = _records(results)
    plan = run_harness("-m", *TINY, "method=base,instruct", "plan=true", results_dir=results)
    assert plan.returncode == 0, plan.stderr[-3000:]
    table = {line.split()[1]: line for line in plan.stdout.splitlines() if line[:1].isdigit()}
    assert base["run_key"] in table["tiny_random/base"] and " done " in table["tiny_random/base"]
    assert "median of 1 (data=hr_handbook)" in table["tiny_random/base"]
    assert " pending " in table["tiny_random/instruct"] and " yes " in table["tiny_random/instruct"]
    assert "tunebench plan: 2 cells, 1 to run" in plan.stdout
    commands = run_harness("-m", *TINY, "method=base,instruct", "plan=commands", results_dir=results)
    lines = [x for x in commands.stdout.splitlines() if x.startswith("python -m harness ")]
    assert len(lines) == 1 and "method=instruct" in lines[0] and f"results_dir={results}" in lines[0]
    assert "plan=" not in lines[0] and "sweep_id=" not in lines[0]
    assert _records(results) == [base]  # nothing ran
    assert [p.name for p in (results / "runs").iterdir()] == [base["run_key"]]


def test_a_cell_claimed_by_a_live_process_is_skipped_and_its_holder_named(run_harness, tmp_path):
    import socket

    from harness.core.claims import acquire

    results = tmp_path / "results"
    plan = run_harness("-m", *TINY, "method=base", "plan=true", results_dir=results)
    key = next(line.split()[2] for line in plan.stdout.splitlines() if line.startswith("0 "))
    claim = acquire(results, key, "other-sweep")
    try:
        proc = run_harness("-m", *TINY, "method=base", results_dir=results)
    finally:
        claim.release()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tunebench: 0 completed, 0 skipped, 0 failed, 1 running elsewhere" in proc.stderr
    assert f"claimed by {socket.gethostname()} pid {os.getpid()} (sweep other-sweep" in proc.stderr
    assert _records(results) == []


def test_sigterm_to_a_submitit_job_records_interrupted_without_a_traceback(tmp_path):
    import time

    results = tmp_path / "results"
    proc = _start(["-m", *LONG_TRAIN, "qlora.max_steps=400", "method=instruct", "hydra/launcher=submitit_local"],
                  results, TUNEBENCH_PROGRESS_EVERY_S="0")
    deadline = time.monotonic() + 300
    job_log = None
    while time.monotonic() < deadline:  # the job process holds the cell's claim: that names its pid
        claims = list((results / "claims").glob("*.json")) if (results / "claims").is_dir() else []
        job_log = next(iter(results.glob("hydra/multirun/*/.submitit/*/*_log.err")), None)
        if claims and job_log and "[progress] train: step" in job_log.read_text():
            pid = json.loads(claims[0].read_text())["pid"]
            break
        time.sleep(1)
    else:
        proc.kill()
        raise AssertionError("the submitit job never started training")
    os.kill(pid, signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 1, err[-3000:]
    assert "tunebench: 0 completed, 0 skipped, 1 failed (1 interrupted)" in err
    assert "Traceback" not in err and "Traceback" not in job_log.read_text()
    (row,) = _records(results)
    assert row["status"] == "interrupted" and row["error"] == "interrupted by SIGTERM during train"
