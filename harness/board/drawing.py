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
    """plot_and_panels(reports, cost_key, front), started now; result() waits for it, close() gives it up."""

    def __init__(self, reports: list, cost_key: str, front: dict[str, str] | None = None) -> None:
        self._args = (reports, cost_key, front)
        self._process = self._receive = None
        if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
            context = multiprocessing.get_context("fork")
            self._receive, send = context.Pipe(duplex=False)
            self._process = context.Process(target=_draw_and_send, args=(send, self._receive, *self._args),
                                            daemon=True)
            self._process.start()
            send.close()

    @property
    def forked(self) -> bool:
        """Whether a child process draws it (else result() draws it here)."""
        return self._process is not None

    def result(self) -> tuple[bytes, list[bytes]]:
        """(the whole plot, each board's panel), as PNG bytes; an error drawing raises here."""
        kind, value = "not forked", None
        if self._process is not None:
            try:
                kind, value = self._receive.recv()
            except (EOFError, OSError):
                pass  # the child died (killed, out of memory): drawn here
            finally:
                self.close()
        if kind == "error":
            raise value
        return value if kind == "drawn" else plot_and_panels(*self._args)

    def close(self) -> None:
        """Give the drawing up (the child's send fails, and it exits); idempotent."""
        if self._process is not None:
            self._receive.close()
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None


def _draw_and_send(send, parents_end, reports: list, cost_key: str, front: dict[str, str] | None) -> None:
    parents_end.close()  # the fork's copy: open here, the parent closing its own would not end a send
    try:
        outcome = ("drawn", plot_and_panels(reports, cost_key, front))
    except Exception as exc:  # noqa: BLE001 - raised in the parent, as if it had drawn
        outcome = ("error", exc)
    try:
        send.send(outcome)
    except Exception:  # noqa: BLE001 - the parent gave up, or the error does not pickle: it draws itself on EOF
        pass
    send.close()
