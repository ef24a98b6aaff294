"""Progress of the long steps (load, train, predict, score): a rich bar on a terminal, plain lines at a bounded
rate when output goes to a file (Slurm, nohup, a CI log), where a bar would never draw.

Rates and ETAs are measured here, as work done over the time since the step started (its clock starts when
its total is known, e.g. when the trainer begins): rich's own speed estimate samples only the last few
updates, which misreads steps that advance in large, uneven jumps.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
from rich.text import Text

console = Console(stderr=True)
# Seconds between two plain progress lines (the first and the last are always written).
PLAIN_EVERY_S = float(os.environ.get("TUNEBENCH_PROGRESS_EVERY_S", "30"))


class Meter:
    """Completed/total, the step's clock, and the fields shown beside it (loss, tok/s)."""

    def __init__(self, description: str, total: int | None, unit: str, clock: Callable[[], float] = time.monotonic):
        self.description, self.total, self.unit, self.clock = description, total, unit, clock
        self.completed = 0
        self.fields: dict[str, object] = {}
        self.started = clock() if total is not None else None

    def advance(self, n: int = 1, total: int | None = None, **fields) -> None:
        if total is not None:
            self.total = total
            if self.started is None:
                self.started = self.clock()
        if self.started is None and n:
            self.started = self.clock()
        self.completed += n
        self.fields.update(fields)

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else max(self.clock() - self.started, 0.0)

    @property
    def rate(self) -> float | None:
        """Units per second since the step started; None before anything completed."""
        elapsed = self.elapsed
        return self.completed / elapsed if self.completed and elapsed > 0 else None

    @property
    def eta(self) -> float | None:
        rate = self.rate
        if rate is None or self.total is None:
            return None
        return max(self.total - self.completed, 0) / rate

    def rate_text(self) -> str:
        rate = self.rate
        if rate is None:
            return ""
        # A slow step reads better per unit: "7.1 s/step" rather than "0.14 step/s".
        return f"{rate:.2f} {self.unit}/s" if rate >= 1 else f"{rate:.2f} {self.unit}/s ({1 / rate:.1f} s/{self.unit})"

    def line(self) -> str:
        count = f"{self.completed}/{self.total}" if self.total is not None else f"{self.completed}"
        pct = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.description}: {self.unit} {count}{pct}"]
        parts += [f"{k}={v}" for k, v in self.fields.items()]
        if self.rate_text():
            parts.append(self.rate_text())
        parts.append(f"elapsed {_clock(self.elapsed)}")
        if self.eta is not None:
            parts.append(f"ETA {_clock(self.eta)}")
        return "[progress] " + " | ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _MeterColumn(ProgressColumn):
    def __init__(self, meter: Meter, what: str) -> None:
        super().__init__()
        self.meter, self.what = meter, what

    def render(self, task) -> Text:
        m = self.meter
        if self.what == "rate":
            return Text(m.rate_text())
        if self.what == "eta":
            return Text(f"ETA {_clock(m.eta)}" if m.eta is not None else "ETA -:--:--")
        if self.what == "elapsed":
            return Text(_clock(m.elapsed))
        return Text(" ".join(f"{k}={v}" for k, v in m.fields.items()))


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, unit: str = "it", enabled: bool = True
) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, total=None, **fields)`; the total may be set late (a trainer knows it at start)."""
    if not enabled:
        yield lambda n=1, total=None, **fields: None
        return
    meter = Meter(description, total, unit)
    if console.is_terminal:
        with _rich_bar(meter) as advance:
            yield advance
    else:
        with _plain_lines(meter) as advance:
            yield advance


@contextlib.contextmanager
def _rich_bar(meter: Meter) -> Iterator[Callable[..., None]]:
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               _MeterColumn(meter, "rate"), _MeterColumn(meter, "fields"), _MeterColumn(meter, "elapsed"),
               _MeterColumn(meter, "eta")]
    with Progress(*columns, console=console, transient=False, refresh_per_second=4) as progress:
        task = progress.add_task(meter.description, total=meter.total)

        def advance(n: int = 1, total: int | None = None, **fields) -> None:
            meter.advance(n, total, **fields)
            progress.update(task, completed=meter.completed, total=meter.total)

        yield advance


@contextlib.contextmanager
def _plain_lines(meter: Meter, every_s: float | None = None,
                 write: Callable[[str], None] | None = None) -> Iterator[Callable[..., None]]:
    every = PLAIN_EVERY_S if every_s is None else every_s
    out = write or (lambda text: print(text, file=sys.stderr, flush=True))
    shown: dict[str, float | None] = {"at": None, "completed": None}

    def show() -> None:
        shown["at"], shown["completed"] = meter.clock(), meter.completed
        out(meter.line())

    def advance(n: int = 1, total: int | None = None, **fields) -> None:
        meter.advance(n, total, **fields)
        if n and (shown["at"] is None or meter.clock() - shown["at"] >= every):
            show()

    yield advance
    if meter.completed and shown["completed"] != meter.completed:
        show()  # the step's final figures
