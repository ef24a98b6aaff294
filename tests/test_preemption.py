"""Training survives preemption (harness/cell/checkpoints.py), end to end through `python -m harness`, no Slurm:
SIGTERM mid-training leaves an `interrupted` record and a checkpoint; the same command again resumes from that
checkpoint and trains the adapter an uninterrupted run trains, and the record's cost counts both attempts.

The signal is sent once a checkpoint at step >= 10 exists, so the stop is a real mid-training preemption: the
cell finishes the step in progress, writes one more checkpoint there, and records itself interrupted.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from safetensors.torch import load_file

from harness.core.ledger import COMPLETED, INTERRUPTED, Ledger

pytestmark = pytest.mark.slow

STEPS = 40
# One thread: the same float reductions in every run, whatever else the machine is doing.
CELL = ("model=tiny_random", f"qlora.max_steps={STEPS}", "qlora.save_steps=5", "hardware.num_threads=1",
        "eval.num_examples=2", "eval.max_new_tokens=4", "tracker=none", "progress=false")
# What a resumed adapter may differ by from the uninterrupted one, per weight (fp32 on the CPU).
TOLERANCE = 1e-6


def _harness(args: list[str], results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *args, f"results_dir={results}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _checkpoint_steps(results: Path) -> list[int]:
    """Steps of the whole checkpoints in the cell's area (transformers writes trainer_state.json last)."""
    return sorted(int(p.parent.name.removeprefix("checkpoint-"))
                  for p in results.glob("runs/*/checkpoints/checkpoint-*/trainer_state.json"))


def _adapter(results: Path) -> dict:
    (path,) = results.glob("stages/adapter/*/adapter/adapter_model.safetensors")
    return load_file(path)


def _preempt_at_step_10(args: list[str], results: Path) -> tuple[int, str]:
    """Run the cell, send SIGTERM once a checkpoint at step >= 10 exists; the exit status and stderr."""
    proc = _harness(args, results)
    deadline = time.monotonic() + 600
    while not any(step >= 10 for step in _checkpoint_steps(results)):
        assert proc.poll() is None, f"the run ended before step 10:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint at step 10 within 10 minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    return _finish(proc)


@pytest.mark.parametrize("method", ["instruct", "causal"])
def test_sigterm_in_training_then_the_same_command_resumes_and_trains_the_uninterrupted_adapter(method, tmp_path):
    args = ["-m", *CELL, f"method={method}"]  # -m: as a sweep runs it, the summary line included
    preempted, straight = tmp_path / "preempted", tmp_path / "straight"

    code, err = _preempt_at_step_10(args, preempted)
    assert code != 0, err[-3000:]
    (stopped,) = Ledger(preempted / "runs.jsonl").records()
    assert (stopped["status"], stopped["failed_stage"]) == (INTERRUPTED, "train"), err[-3000:]
    assert stopped["error"] == "interrupted by SIGTERM during train"
    (log,) = preempted.glob("hydra/multirun/*/0/tunebench.log")
    assert "SIGTERM: finishing the training step in progress and writing a checkpoint" in log.read_text()
    kept = _checkpoint_steps(preempted)
    assert len(kept) == 1 and 10 <= kept[0] < STEPS, kept  # the newest only, written when the signal came

    code, err = _finish(_harness(args, preempted))
    assert code == 0, err[-3000:]
    first, resumed = Ledger(preempted / "runs.jsonl").records()
    assert first == stopped and resumed["status"] == COMPLETED
    train = resumed["train"]
    assert train["resumed_from_step"] == kept[0] and train["steps"] == STEPS
    assert [(a["from_step"], a["to_step"], a["ended"]) for a in train["attempts"]] == [
        (0, kept[0], "interrupted"), (kept[0], STEPS, "completed")]
    # The cost counts both attempts' training time, not only the one that finished, and the first attempt's
    # time before its training (its load, building the training set), which this process did not see.
    assert all(a["train_s"] > 0 and a["setup_s"] > 0 for a in train["attempts"])
    both = sum(a["train_s"] for a in train["attempts"])
    assert train["train_s"] == pytest.approx(both, abs=0.01)
    cost = resumed["cost"]
    assert cost["train_s"] == pytest.approx(both, abs=0.01) and cost["train_s"] > train["attempts"][-1]["train_s"]
    assert cost["prep_s"] >= train["attempts"][0]["setup_s"]
    assert cost["total_s"] == pytest.approx(cost["load_s"] + cost["prep_s"] + cost["train_s"] + cost["eval_s"])
    assert not list(preempted.glob("runs/*/checkpoints"))  # discarded once the adapter was stored

    code, err = _finish(_harness(args, straight))
    assert code == 0, err[-3000:]
    (uninterrupted,) = Ledger(straight / "runs.jsonl").records()
    assert uninterrupted["train"]["resumed_from_step"] is None and len(uninterrupted["train"]["attempts"]) == 1
    assert uninterrupted["run_key"] == resumed["run_key"]

    a, b = _adapter(preempted), _adapter(straight)
    assert a.keys() == b.keys() and a
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= TOLERANCE, f"resumed adapter differs from the uninterrupted one by up to {worst:.3g}"
    # Same data order and steps: the same loss at every step (logged every step; the checkpoint carries the
    # first attempt's log).
    assert [s for s, _ in train["losses"]] == list(range(1, STEPS + 1))
    straight_losses = dict(uninterrupted["train"]["losses"])
    assert max(abs(loss - straight_losses[s]) for s, loss in train["losses"]) <= 1e-5
