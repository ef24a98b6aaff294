"""Claims on run keys: one holder at a time, stale claims (no heartbeat, dead process) taken over."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from harness.core.claims import Claim, Holder, acquire, claim_path, is_stale, read_holder
from harness.core.failures import failure_kind, recorded_failure_kind


def test_second_acquire_sees_the_holder_then_gets_it_after_release(tmp_path):
    first = acquire(tmp_path, "k1", "sweep-a")
    assert isinstance(first, Claim)
    second = acquire(tmp_path, "k1", "sweep-b")
    assert isinstance(second, Holder)
    assert (second.host, second.pid, second.sweep_id) == (socket.gethostname(), os.getpid(), "sweep-a")
    assert "sweep sweep-a" in second.describe()
    first.release()
    assert not claim_path(tmp_path, "k1").exists()
    third = acquire(tmp_path, "k1", "sweep-b")
    assert isinstance(third, Claim)
    third.release()


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    claim = acquire(tmp_path, "k1", "a", ttl_s=0.6)  # beats every 0.1 s
    try:
        silent = time.time() - 120
        os.utime(claim.path, (silent, silent))  # as if its holder had said nothing for two minutes
        assert "no heartbeat for" in is_stale(read_holder(claim.path), 60)
        deadline = time.monotonic() + 60  # only bounds the wait, should the heartbeat be broken
        while (holder := read_holder(claim.path)).heartbeat_age_s > 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_stale(holder, 60) is None  # the heartbeat brought it back
        assert isinstance(acquire(tmp_path, "k1", "b", ttl_s=60), Holder)
        claim._stop.set()
        claim._thread.join(timeout=30)
        os.utime(claim.path, (silent, silent))
        assert "no heartbeat for" in is_stale(read_holder(claim.path), 60)  # with the heartbeat stopped it stays old
    finally:
        claim.release()


def _write_claim(path, host, pid, pid_started=0.0, token="old"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "pid_started": pid_started, "sweep_id": "dead",
                                "token": token, "claimed_at": 0}))


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = claim_path(tmp_path, "k1")
    _write_claim(path, socket.gethostname(), gone.pid)
    assert "is gone" in is_stale(read_holder(path), 300)
    claim = acquire(tmp_path, "k1", "new")
    assert isinstance(claim, Claim) and read_holder(path).sweep_id == "new"
    assert [p.name for p in path.parent.iterdir()] == ["k1.json"]  # nothing left aside
    claim.release()


def test_claim_without_heartbeat_is_taken_over_but_a_live_remote_one_is_not(tmp_path):
    path = claim_path(tmp_path, "k1")
    _write_claim(path, "other-node", 12345)
    assert isinstance(acquire(tmp_path, "k1", "new", ttl_s=60), Holder)  # fresh heartbeat on another host
    old = time.time() - 120
    os.utime(path, (old, old))
    assert "no heartbeat for" in is_stale(read_holder(path), 60)
    claim = acquire(tmp_path, "k1", "new", ttl_s=60)
    assert isinstance(claim, Claim)
    claim.release()


def test_a_claim_taken_over_is_not_removed_by_its_old_holder(tmp_path):
    claim = acquire(tmp_path, "k1", "a", ttl_s=60)
    claim._stop.set()
    os.unlink(claim.path)  # as a takeover does, then the new holder's file
    _write_claim(claim.path, "other-node", 1, token="new-holder")
    claim.release()
    assert read_holder(claim.path).token == "new-holder"


def _race(results, key, barrier, queue):
    barrier.wait()
    got = acquire(results, key, f"p{os.getpid()}")
    queue.put(isinstance(got, Claim))
    barrier.wait()  # the winner holds its claim until every racer has looked, however slow
    if isinstance(got, Claim):
        got.release()


@pytest.mark.parametrize("stale_first", [False, True])
def test_processes_racing_for_one_key_get_one_claim(tmp_path, stale_first):
    if stale_first:  # all of them see a dead holder's claim and try to take it over at once
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        _write_claim(claim_path(tmp_path, "k1"), socket.gethostname(), gone.pid)
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path, "k1", barrier, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(queue.get() for _ in procs) == [False] * 5 + [True]


def _raise(exc, cause=None):
    try:
        if cause is not None:
            raise exc from cause
        raise exc
    except BaseException as caught:
        return caught


def test_failure_kinds():
    import httpx
    import torch

    assert failure_kind(torch.OutOfMemoryError("CUDA out of memory")) == "transient"
    assert failure_kind(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")) == "transient"
    assert failure_kind(ConnectionError("refused")) == "transient"
    assert failure_kind(httpx.ReadTimeout("slow")) == "transient"
    assert failure_kind(_raise(ValueError("judge gave up"), httpx.ConnectError("no route"))) == "transient"
    assert failure_kind(ValueError("Target modules {'nonexistent_proj'} not found in the base model")) == "deterministic"
    assert failure_kind(RuntimeError("injected failure at train (fail_at=train)")) == "deterministic"
    # Records written before failure_kind existed are judged by their error type and message.
    assert recorded_failure_kind({"status": "failed", "error_type": "OutOfMemoryError"}) == "transient"
    assert recorded_failure_kind({"status": "failed", "error_type": "ValueError", "error": "bad"}) == "deterministic"
    assert recorded_failure_kind({"status": "interrupted"}) == "transient"
    assert recorded_failure_kind({"status": "completed"}) is None
