"""local_gpus: each worker process binds one GPU of the box, never one that another process holds."""

import multiprocessing
import os
from queue import Empty

import pytest

from harness.core import gpus


def _pin(lock_dir, job_num, queue, release):
    os.environ[gpus.SLOTS_ENV] = "0,1"
    queue.put((job_num, "asking", None))
    gpu = gpus.pin_gpu(job_num, lock_dir=lock_dir, wait_s=0.05)
    queue.put((job_num, gpu, os.environ["CUDA_VISIBLE_DEVICES"]))
    if release is not None:
        release.wait(120)  # hold the GPU (its lock goes with the process) until the test lets go


def _next_pinned(queue) -> tuple:
    while (message := queue.get(timeout=60))[1] == "asking":
        pass
    return message


def test_workers_get_distinct_gpus_and_a_third_waits_for_one_to_free(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    releases = {n: ctx.Event() for n in (0, 2)}
    # Jobs 0 and 2 both point at GPU 0: the second of them must take GPU 1 or wait, never share GPU 0.
    first = {n: ctx.Process(target=_pin, args=(tmp_path, n, queue, releases[n])) for n in (0, 2)}
    late = ctx.Process(target=_pin, args=(tmp_path, 4, queue, None))
    try:
        for p in first.values():
            p.start()
        got = [_next_pinned(queue) for _ in first]
        assert sorted(g for _, g, _ in got) == ["0", "1"]
        assert all(gpu == visible for _, gpu, visible in got)
        holder = {gpu: job for job, gpu, _ in got}
        late.start()
        assert queue.get(timeout=60) == (4, "asking", None)
        with pytest.raises(Empty):  # both GPUs are held: job 4 must not get one (a slow machine can only pass this)
            queue.get(timeout=1.0)
        releases[holder["1"]].set()
        first[holder["1"]].join(timeout=60)
        # Job 4 prefers GPU 0, which is still held: it takes the one that was freed, only once it was freed.
        assert queue.get(timeout=60) == (4, "1", "1")
        assert first[holder["0"]].is_alive()
    finally:
        for event in releases.values():
            event.set()
        for p in [*first.values(), late]:
            p.join(timeout=60)
    assert [p.exitcode for p in [*first.values(), late]] == [0, 0, 0]


def test_a_process_keeps_its_gpu_for_every_later_job(tmp_path, monkeypatch):
    monkeypatch.setenv(gpus.SLOTS_ENV, "3,5")
    monkeypatch.setattr(gpus, "_held", {})
    assert gpus.pin_gpu(1, lock_dir=tmp_path) == "5"
    assert gpus.pin_gpu(0, lock_dir=tmp_path) == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_without_slots_nothing_is_pinned(monkeypatch):
    monkeypatch.delenv(gpus.SLOTS_ENV, raising=False)
    assert gpus.pin_gpu(0) is None


def test_gpu_list_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpus._resolve("list") == "2,3" and gpus._resolve("count") == 2
