"""Progress bars with rates and ETA for the long steps (load, train, predict, score)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:.2f} {self.unit}/s")


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, unit: str = "it", enabled: bool = True
) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, total=None, **fields)`; the total may be set late (a trainer knows it at start)."""
    if not enabled:
        yield lambda n=1, total=None, **fields: None
        return
    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False, refresh_per_second=4) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, total: int | None = None, **fields) -> None:
            update = {"advance": n}
            if total is not None:
                update["total"] = total
            if fields:
                update["info"] = " ".join(f"{k}={v}" for k, v in fields.items())
            progress.update(task, **update)

        yield advance
