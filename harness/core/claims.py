"""Claims on run keys: a cell being run holds `results/claims/<run key>.json`, so a second sweep (another
process, another node on the same shared filesystem) skips it instead of running it twice.

A claim is created with O_CREAT|O_EXCL, which is atomic on local filesystems and NFSv3+, unlike flock.
A thread refreshes the file's mtime (the heartbeat) while the cell runs. A claim is stale, and is taken
over, when its heartbeat is older than the TTL, or when its holder ran on this host and that process is
gone (kill -9, OOM killer). Takeover renames the stale file away (only one racer's rename can succeed),
checks that what it moved is the claim it judged stale, and then creates its own with O_EXCL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger("harness")

# A holder refreshes its heartbeat every TTL/6; a claim unrefreshed for a whole TTL belongs to a dead process
# (or a host cut off from the filesystem). Long enough for clock skew between nodes and a slow NFS server.
DEFAULT_TTL_S = 300.0


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    pid_started: float
    sweep_id: str
    token: str
    claimed_at: float
    heartbeat_age_s: float

    def describe(self) -> str:
        return (f"{self.host} pid {self.pid} (sweep {self.sweep_id or '?'}, "
                f"heartbeat {self.heartbeat_age_s:.0f} s ago)")


class Claim:
    """A held claim: keep it alive with a heartbeat thread, release it when the cell's record is written."""

    def __init__(self, path: Path, token: str, ttl_s: float) -> None:
        self.path, self.token, self.ttl_s = path, token, ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-heartbeat-{path.stem}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(self.ttl_s / 6, 0.05)):
            if not self.held():
                log.warning("claim %s was taken over by another process (this one looked dead to it)", self.path)
                return
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def held(self) -> bool:
        holder = read_holder(self.path)
        return holder is not None and holder.token == self.token

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.held():  # never remove a claim someone else took over
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_path(results_dir: Path, key: str) -> Path:
    return Path(results_dir) / "claims" / f"{key}.json"


def read_holder(path: Path) -> Holder | None:
    """Who holds a claim file; None when there is none. A file being written (empty, half) reads as a fresh
    claim of an unknown holder: its creator is alive a moment ago, so it is not taken over."""
    try:
        age = max(time.time() - path.stat().st_mtime, 0.0)
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(str(data["host"]), int(data["pid"]), float(data.get("pid_started", 0.0)),
                      str(data.get("sweep_id", "")), str(data["token"]), float(data.get("claimed_at", 0.0)), age)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        try:
            age = max(time.time() - path.stat().st_mtime, 0.0)
        except FileNotFoundError:
            return None
        return Holder("?", -1, 0.0, "", "", 0.0, age)


def is_stale(holder: Holder, ttl_s: float) -> str | None:
    """Why a claim no longer protects a running cell, or None while it does."""
    if holder.heartbeat_age_s > ttl_s:
        return f"no heartbeat for {holder.heartbeat_age_s:.0f} s (ttl {ttl_s:.0f} s)"
    if holder.host == socket.gethostname() and holder.pid > 0 and not _alive(holder.pid, holder.pid_started):
        return f"process {holder.pid} on this host is gone"
    return None


def _alive(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        # A recycled pid belongs to a process that started later than the holder did.
        return not started or abs(process.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, but we may not inspect it: assume alive


def acquire(results_dir: Path, key: str, sweep_id: str, ttl_s: float = DEFAULT_TTL_S) -> Claim | Holder:
    """The claim on `key`, or the live holder that has it (then the caller skips the cell)."""
    path = claim_path(results_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # a few rounds: a holder may release, or another process take over, between our steps
        claim = _create(path, sweep_id, ttl_s)
        if claim is not None:
            return claim
        holder = read_holder(path)
        if holder is None:
            continue  # released between our create and read
        reason = is_stale(holder, ttl_s)
        if reason is None:
            return holder
        if _remove_stale(path, holder):
            log.warning("claim on %s held by %s is stale (%s): taking it over", key, holder.describe(), reason)
    holder = read_holder(path)
    return holder if holder is not None else Holder("?", -1, 0.0, "", "", 0.0, 0.0)


def _create(path: Path, sweep_id: str, ttl_s: float) -> Claim | None:
    token = uuid.uuid4().hex
    me = psutil.Process()
    body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "pid_started": me.create_time(),
                       "sweep_id": sweep_id, "token": token, "claimed_at": time.time()})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return Claim(path, token, ttl_s)


def _remove_stale(path: Path, judged: Holder) -> bool:
    """Move the stale claim aside; if what moved is not the claim judged stale (someone took over first and
    holds a fresh one), put it back without overwriting anything."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_holder(aside)
    if moved is not None and moved.token != judged.token:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True
