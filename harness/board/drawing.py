"""The Pareto plot drawn in a forked process while the leaderboard computes the page's statistics.

Drawing is most of a leaderboard's time on a year of sweeps (matplotlib's import, then the text of every panel)
and needs nothing the page's paired bootstraps do: on a machine with a second core, the two run side by side.
The child is forked from the process that holds the boards (nothing is copied to it) and sends back PNG bytes.
Where fork is not available, or the process runs threads (a fork copies none of them, and a lock one holds
stays locked in the child), or the child dies, the plot is drawn in this process instead: the same bytes.
"""

from __future__ import annotations

import multiprocessing
import threading

from harness.board.pareto import plot_and_panels


class PendingPlot:
    """plot_and_panels(reports, cost_key, front), started now; result() waits for it."""

    def __init__(self, reports: list, cost_key: str, front: dict[str, str] | None = None) -> None:
        self._args = (reports, cost_key, front)
        self._process = self._receive = None
        if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
            context = multiprocessing.get_context("fork")
            self._receive, send = context.Pipe(duplex=False)
            self._process = context.Process(target=_draw_and_send, args=(send, *self._args), daemon=True)
            self._process.start()
            send.close()

    @property
    def forked(self) -> bool:
        """Whether a child process draws it (else result() draws it here)."""
        return self._process is not None

    def result(self) -> tuple[bytes, list[bytes]]:
        """(the whole plot, each board's panel), as PNG bytes; an error drawing raises here."""
        if self._process is not None:
            try:
                kind, value = self._receive.recv()
            except (EOFError, OSError):
                kind, value = "died", None
            finally:
                self._receive.close()
                self._process.join()
            if kind == "error":
                raise value
            if kind == "drawn":
                return value
        return plot_and_panels(*self._args)


def _draw_and_send(send, reports: list, cost_key: str, front: dict[str, str] | None) -> None:
    try:
        outcome = ("drawn", plot_and_panels(reports, cost_key, front))
    except Exception as exc:  # noqa: BLE001 - raised in the parent, as if it had drawn
        outcome = ("error", exc)
    send.send(outcome)
    send.close()
