"""local_gpus: each worker process binds one GPU of the box, never one that another process holds."""

import multiprocessing
import os
import time

from harness.core import gpus


def _pin(lock_dir, job_num, queue, hold_s):
    os.environ[gpus.SLOTS_ENV] = "0,1"
    gpu = gpus.pin_gpu(job_num, lock_dir=lock_dir, wait_s=0.1)
    queue.put((job_num, gpu, os.environ["CUDA_VISIBLE_DEVICES"], time.monotonic()))
    time.sleep(hold_s)


def test_workers_get_distinct_gpus_and_a_third_waits_for_one_to_free(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    # Jobs 0 and 2 both point at GPU 0: the second of them must take GPU 1 or wait, never share GPU 0.
    first = [ctx.Process(target=_pin, args=(tmp_path, n, queue, 1.5)) for n in (0, 2)]
    for p in first:
        p.start()
    got = [queue.get(timeout=30) for _ in first]
    assert sorted(g for _, g, _, _ in got) == ["0", "1"]
    assert all(gpu == visible for _, gpu, visible, _ in got)
    late = ctx.Process(target=_pin, args=(tmp_path, 4, queue, 0))
    late.start()
    _, gpu, _, at = queue.get(timeout=30)
    assert at - max(t for *_, t in got) > 1.0  # it waited for a holder to exit
    for p in [*first, late]:
        p.join(timeout=30)
        assert p.exitcode == 0


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
