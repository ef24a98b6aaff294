"""Training that survives preemption: checkpoints of a cell's training, and resuming from the latest one.

A training cell (instruct, causal) writes a checkpoint into `results/runs/<run key>/checkpoints/` every
`qlora.save_steps` optimizer steps: the adapter, the optimizer and scheduler states, the RNG states and the
trainer state (the global step, hence the position in the seeded data order): transformers' own checkpoint,
which `Trainer.train(resume_from_checkpoint=...)` restores whole, skipping the batches already trained on.
Only the newest checkpoint is kept. The folder belongs to the run key, so the cell's claim (one process per run
key) makes its writer unique; it is removed once the trained adapter is stored (`discard`).

Default interval (`qlora.save_steps: null`): a checkpoint whenever SAVE_EVERY_S of training have passed since
the last one, measured, so that a cell killed without warning loses at most ~10 minutes of training plus one
step on any GPU. Why 10 minutes: a LoRA checkpoint is the adapter and twice its size in Adam moments (r=16 on a
7-8B model's attention projections: ~0.3 GB in fp32), written in a few seconds even to NFS, so one every 10
minutes costs under 1% of the training time; a fixed step count cannot promise either bound, since a step takes
0.1 s on a tiny model and half a minute on a 7B model with gradient accumulation. `qlora.save_steps=N` sets a
step interval instead; 0 turns checkpoints off.

A signal does not wait for the next interval: SIGTERM (Slurm's preemption, `scontrol requeue`, `scancel`),
SIGINT (Ctrl-C) and SIGUSR2 (submitit's time-limit warning) arriving while the trainer runs are held until the
optimizer step in progress ends, a checkpoint is written, and only then does the handler installed before run
(recording the cell `interrupted`, or submitit's requeue). A second signal meanwhile runs it at once.
Slurm's KillWait (30 s by default) bounds that wait: a step longer than it is killed and loses only what
followed the last checkpoint.

Resuming reproduces the uninterrupted run: the same seeded order, the restored RNG states, the same batch
size and accumulation (those a checkpoint was written with, should out-of-memory retries have changed them).
One state transformers does not keep: the global torch RNG as the checkpoint's epoch began. The length-grouped
sampler (qlora.group_by_length) shuffles each epoch from it when the epoch's iterator is made, so a run resumed
in its second epoch or later would otherwise train the rest of that epoch in another order (measured: a causal
cell resumed at step 11 of 40, in its third epoch, ended 1.4e-3 away from the uninterrupted adapter; with the
state kept, 0). Each checkpoint carries it (EPOCH_RNG), and the resumed attempt starts its epoch from it.
A run's recorded training time counts every attempt (`attempts.json` here, updated at each checkpoint and when
an attempt is interrupted), and so does its cost, with each earlier attempt's time before its training began
(`setup_s`: loading the model, building the training set), so the cost of a preempted cell is what it really took.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

log = logging.getLogger("harness")

CHECKPOINTS = "checkpoints"
ATTEMPTS = "attempts.json"
PREFIX = "checkpoint-"
# The derived default interval (see the module docstring).
SAVE_EVERY_S = 600.0
# Signals that mean "stop soon" to a training job: Ctrl-C, Slurm's preemption / requeue / cancel, submitit's
# time-limit warning (sent by Slurm signal_delay_s before the limit).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
# transformers writes trainer_state.json last in a checkpoint: its presence and parse mark a whole one.
TRAINER_STATE = "trainer_state.json"
# The global torch RNG state as the checkpoint's epoch began (see the module docstring), next to transformers' files.
EPOCH_RNG = "epoch_start_rng_state.pt"


def checkpoint_area(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


@dataclass(frozen=True)
class Interval:
    steps: int | None  # qlora.save_steps when set
    seconds: float | None  # the measured-time default


def interval(save_steps: int | None) -> Interval | None:
    """How often to checkpoint; None when checkpoints are off (qlora.save_steps=0)."""
    if save_steps == 0:
        return None
    return Interval(save_steps, None) if save_steps else Interval(None, SAVE_EVERY_S)


def latest(area: Path | None) -> Path | None:
    """The newest whole checkpoint in the area (a torn one, from a kill mid-save, is passed over)."""
    if area is None or not area.is_dir():
        return None
    found = []
    for path in area.glob(f"{PREFIX}*"):
        step = path.name.removeprefix(PREFIX)
        if not step.isdigit():
            continue
        try:
            json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append((int(step), path))
    return max(found)[1] if found else None


def checkpoint_step(path: Path) -> int:
    return int(path.name.removeprefix(PREFIX))


def discard(area: Path | None) -> None:
    """Remove the area: the adapter it was training is stored (or training starts over)."""
    if area is not None and area.exists():
        shutil.rmtree(area, ignore_errors=True)


@dataclass
class Attempts:
    """Every attempt at training this cell: where it started and got to, and how long it trained."""

    path: Path
    batch_size: int | None = None
    grad_accum: int | None = None
    attempts: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, area: Path) -> Attempts:
        path = area / ATTEMPTS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, data.get("batch_size"), data.get("grad_accum"), list(data.get("attempts", [])))
        except (OSError, ValueError, AttributeError):
            return cls(path)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"batch_size": self.batch_size, "grad_accum": self.grad_accum,
                                   "attempts": self.attempts}), encoding="utf-8")
        os.replace(tmp, self.path)

    def begin(self, from_step: int, batch_size: int, grad_accum: int, setup_s: float = 0.0) -> dict:
        self.batch_size, self.grad_accum = batch_size, grad_accum
        attempt = {"from_step": from_step, "to_step": from_step, "train_s": 0.0, "setup_s": round(setup_s, 3),
                   "ended": "running", "pid": os.getpid(), "slurm_job": slurm_job_id()}
        self.attempts.append(attempt)
        self.save()
        return attempt

    @property
    def train_s(self) -> float:
        return sum(float(a.get("train_s", 0.0)) for a in self.attempts)


def slurm_job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


class SignalDeferral:
    """While active, a stop signal is noted instead of handled; `fire()` then runs the handler it would have
    met (installed before: the cell's interrupt handler, submitit's requeue). Only signals whose current handler
    is Python code are deferred; a second signal while one is pending is handled at once."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, object]] = []
        self.previous: dict[int, Callable] = {}
        self.fired = False

    def __enter__(self) -> SignalDeferral:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):
                self.previous[signum] = handler
                signal.signal(signum, self._hold)
        return self

    def _hold(self, signum: int, frame) -> None:
        if self.pending or self.fired:
            self._run(signum, frame)
            return
        self.pending.append((signum, frame))
        log.warning("%s: finishing the training step in progress and writing a checkpoint before stopping "
                    "(send it again to stop at once)", signal.Signals(signum).name)

    def _run(self, signum: int, frame) -> None:
        self.fired = True
        # What follows unwinds the cell and writes its record: the signals that usually come next (Slurm's
        # SIGTERM after submitit's own requeue, a second Ctrl-C) must not tear that write.
        for other in self.previous:
            if other != signal.SIGUSR2:
                signal.signal(other, _stopping)
        self.previous[signum](signum, frame)

    def fire(self) -> None:
        """Run the held signal's handler (it usually raises, ending training)."""
        if self.pending and not self.fired:
            signum, frame = self.pending[0]
            self._run(signum, frame)

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            if self.fired and signum != signal.SIGUSR2:
                continue  # stays ignoring until the cell's own signal scope restores its predecessor
            signal.signal(signum, handler)
        if exc[0] is None and self.pending:
            self.fire()  # arrived after the last step's checkpoint chance: stop now, as asked


def _stopping(signum, frame) -> None:
    log.warning("%s ignored: the cell is already stopping and writing its record", signal.Signals(signum).name)


class CheckpointCallback(TrainerCallback):
    """Asks the trainer for a checkpoint when the interval is up or a stop signal waits; keeps the attempt's
    bookkeeping current at each one; then lets a waiting signal through."""

    def __init__(self, every: Interval, attempts: Attempts, attempt: dict, started: float,
                 deferral: SignalDeferral, resumed_from: Path | None = None) -> None:
        self.every, self.attempts, self.attempt = every, attempts, attempt
        self.started, self.deferral = started, deferral
        self.last_save = time.monotonic()
        self.resumed_from = resumed_from
        self.epoch_rng: torch.Tensor | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        # Called just before the trainer makes the epoch's iterator (which shuffles from this RNG); when resumed at
        # an epoch's start instead of inside one, the trainer loads the checkpoint's RNG after this, as it should.
        if self.resumed_from is not None:
            saved = self.resumed_from / EPOCH_RNG
            if saved.exists():
                torch.set_rng_state(torch.load(saved))
            else:
                log.warning("%s has no %s (written by an older version): the rest of its epoch may be shuffled "
                            "differently from an uninterrupted run", self.resumed_from, EPOCH_RNG)
            self.resumed_from = None
        self.epoch_rng = torch.get_rng_state()

    def on_step_end(self, args, state, control, **kwargs):
        if self.every.seconds is not None and time.monotonic() - self.last_save >= self.every.seconds:
            control.should_save = True
        if self.deferral.pending:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if self.epoch_rng is not None:
            torch.save(self.epoch_rng, Path(args.output_dir) / f"{PREFIX}{state.global_step}" / EPOCH_RNG)
        self.last_save = time.monotonic()
        self.update(state.global_step, "running")
        log.info("checkpoint at step %d of %d", state.global_step, state.max_steps)
        self.deferral.fire()

    def update(self, step: int, ended: str) -> None:
        self.attempt.update(to_step=step, train_s=round(time.perf_counter() - self.started, 3), ended=ended)
        self.attempts.save()


@dataclass
class Resumption:
    """What a training run starts from: the area, the newest checkpoint in it (None: from scratch), and the
    attempts so far."""

    area: Path
    every: Interval
    checkpoint: Path | None
    attempts: Attempts

    @classmethod
    def find(cls, area: Path | None, save_steps: int | None) -> Resumption | None:
        every = interval(save_steps)
        if area is None or every is None:
            return None
        checkpoint = latest(area)
        attempts = Attempts.load(area)
        if checkpoint is None:
            attempts.attempts = [a for a in attempts.attempts if a.get("train_s")]  # time spent still counts
        return cls(area, every, checkpoint, attempts)

    @property
    def from_step(self) -> int:
        return checkpoint_step(self.checkpoint) if self.checkpoint is not None else 0

    def trainer_args(self) -> dict:
        """transformers arguments: where checkpoints go, how often, and only the newest kept."""
        steps = self.every.steps
        return {"output_dir": str(self.area), "save_strategy": "steps" if steps else "no",
                "save_steps": steps or 500, "save_total_limit": 1}

    def batch_from_checkpoint(self) -> tuple[int, int] | None:
        """The batch size and accumulation the checkpoint was trained with, when resuming."""
        if self.checkpoint is None or not self.attempts.batch_size or not self.attempts.grad_accum:
            return None
        return int(self.attempts.batch_size), int(self.attempts.grad_accum)

    def start_over(self) -> None:
        """A fresh start (an out-of-memory retry): the checkpoints go, the time spent stays counted."""
        for path in self.area.glob(f"{PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)
        self.checkpoint = None

    @contextlib.contextmanager
    def attempt(self, trainer, setup_s: float = 0.0):
        """One attempt at training with `trainer`, `setup_s` after its cell began: stop signals deferred to a
        checkpoint, the attempt's time recorded however it ends. Yields the checkpoint to resume from (None: from
        scratch)."""
        args = trainer.args
        attempt = self.attempts.begin(self.from_step, args.per_device_train_batch_size,
                                      args.gradient_accumulation_steps, setup_s)
        if self.checkpoint is not None:
            log.info("resuming training from %s (step %d; attempt %d)", self.checkpoint, self.from_step,
                     len(self.attempts.attempts))
        with SignalDeferral() as deferral:
            callback = CheckpointCallback(self.every, self.attempts, attempt, time.perf_counter(), deferral,
                                          self.checkpoint)
            trainer.add_callback(callback)
            try:
                yield self.checkpoint
            except BaseException as exc:
                ended = "out_of_memory" if "OutOfMemory" in type(exc).__name__ else "interrupted"
                callback.update(trainer.state.global_step, ended)
                raise
            finally:
                trainer.remove_callback(callback)
            callback.update(trainer.state.global_step, "completed")

    def report(self) -> list[dict]:
        """Every attempt, for the run's record."""
        return [{k: a.get(k) for k in ("from_step", "to_step", "train_s", "setup_s", "ended", "slurm_job")}
                for a in self.attempts.attempts]
