"""What kind of failure a cell had (worth retrying or not), and signals turned into a clean `interrupted`."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator

from harness.core.ledger import DETERMINISTIC, FAILED, INTERRUPTED, TRANSIENT

# Exception classes (anywhere in the MRO of the error or of an error it was raised from) that may pass on a
# re-run: the machine was busy or a server was away, not a mistake in the cell's settings.
TRANSIENT_TYPES = frozenset({
    "OutOfMemoryError",  # torch.OutOfMemoryError (CUDA, MPS)
    "MemoryError",
    "ConnectionError",  # builtin and requests'
    "TimeoutError",
    "TransportError",  # httpx: ConnectError, ReadTimeout, RemoteProtocolError, ...
    "APIConnectionError",  # openai (APITimeoutError is a subclass)
    "Timeout",  # requests
    "ChunkedEncodingError",
    # submitit: the job reached its time limit more often than max_num_timeout allows requeueing it; its
    # checkpoints are kept, and the next sweep resumes the cell.
    "UncompletedJobError",
})
# Older torch raises a plain RuntimeError for CUDA OOM; NCCL/driver hiccups read the same way.
TRANSIENT_MESSAGE = re.compile(r"out of memory|CUDA error: (an illegal memory access|unspecified launch failure)"
                               r"|connection (refused|reset)|timed out", re.IGNORECASE)


def failure_kind(exc: BaseException) -> str:
    """TRANSIENT or DETERMINISTIC, from the error and the chain of errors behind it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, Interrupted | KeyboardInterrupt):
            return TRANSIENT
        if {cls.__name__ for cls in type(current).__mro__} & TRANSIENT_TYPES:
            return TRANSIENT
        if TRANSIENT_MESSAGE.search(str(current)):
            return TRANSIENT
        current = current.__cause__ or current.__context__
    return DETERMINISTIC


def recorded_failure_kind(record: dict) -> str | None:
    """The failure kind of a ledger record (None for one that did not fail). Records written before the
    field existed are judged by their error type and message."""
    if record.get("status") == INTERRUPTED:
        return TRANSIENT
    if record.get("status") != FAILED:
        return None
    if record.get("failure_kind") in (TRANSIENT, DETERMINISTIC):
        return record["failure_kind"]
    if record.get("error_type") in TRANSIENT_TYPES or TRANSIENT_MESSAGE.search(str(record.get("error") or "")):
        return TRANSIENT
    return DETERMINISTIC


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while a cell ran. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way records it as the cell's failure."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}"


def interrupt_exit_code(exc: BaseException) -> int:
    if isinstance(exc, Interrupted):
        return exc.exit_code
    return 128 + signal.SIGINT


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread while the block runs; a second signal while
    the first is being handled (the record being written) is ignored rather than tearing that write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
