"""One GPU per worker process on a multi-GPU box (hydra/launcher=local_gpus).

joblib keeps N worker processes and hands each the next job; CUDA reads CUDA_VISIBLE_DEVICES once per process,
so a GPU is bound to a worker, not to a job. The first job a worker runs takes a free GPU, trying the one its
job number points at first, under an exclusive lock it holds for the life of the process: with as many workers
as GPUs no two cells ever share one, and a second sweep on the same box waits for a GPU instead of doubling up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger("harness")

SLOTS_ENV = "TUNEBENCH_GPU_SLOTS"  # set per job by conf/hydra/launcher/local_gpus.yaml (hydra.job.env_set)
_held: dict[str, object] = {}  # this process's GPU and its lock: a property of the process, like its pid


def visible_gpus() -> list[str]:
    """The GPU ids this box offers: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _resolve(what: str):
    gpus = visible_gpus()
    if what == "count":
        return max(len(gpus), 1)
    return ",".join(gpus)


def register_resolver() -> None:
    OmegaConf.register_new_resolver("tunebench_gpus", _resolve, replace=True, use_cache=True)


def pin_gpu(job_num: int, lock_dir: Path | None = None, wait_s: float = 2.0) -> str | None:
    """Bind this process to one free GPU of TUNEBENCH_GPU_SLOTS (the same one for every later job it runs)."""
    slots = [g for g in os.environ.get(SLOTS_ENV, "").split(",") if g]
    if not slots:
        return None
    if "gpu" in _held:
        return str(_held["gpu"])
    lock_dir = lock_dir or Path(tempfile.gettempdir()) / f"tunebench-gpus-{os.getuid()}"
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = job_num % len(slots)
    order = slots[start:] + slots[:start]
    waited = 0.0
    while True:
        for gpu in order:
            fd = os.open(lock_dir / f"gpu-{gpu}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            _held.update(gpu=gpu, fd=fd)
            log.info("job %d runs on GPU %s (CUDA_VISIBLE_DEVICES=%s)", job_num, gpu, gpu)
            return gpu
        if waited == 0.0:
            log.warning("every GPU of %s is taken (another sweep on this box?): waiting for one", ",".join(slots))
        time.sleep(wait_s)
        waited += wait_s


register_resolver()  # at import: every process that composes or re-resolves a config imports harness.cell.run
