"""What the leaderboard writes: the markdown report, and beside it the Pareto plot and the HTML page."""

from __future__ import annotations

from pathlib import Path

from harness.board.boards import BoardReport
from harness.board.drawing import PendingPlot
from harness.board.options import BoardOptions
from harness.board.ranking import LeaderboardError
from harness.board.report import board_data, write_report
from harness.board.studies import study_fronts
from harness.board.text import render_markdown


def write_markdown(reports: list[BoardReport], options: BoardOptions) -> Path:
    out = options.out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_markdown(reports, options.cost, options.source), encoding="utf-8")
    except OSError as exc:
        raise LeaderboardError(f"--out {out}: cannot write the report ({exc.strerror or exc}); "
                               f"pass --out to a writable file") from None
    return out


def start_plot(reports: list[BoardReport], options: BoardOptions) -> PendingPlot:
    """The Pareto plot of `reports`, drawn from now on (in a forked process where it can be: the caller goes on)."""
    return PendingPlot(reports, options.cost, study_fronts(options.source.ledger_path))


def write_figures(reports: list[BoardReport], options: BoardOptions, plot: PendingPlot | None = None) -> list[Path]:
    """The Pareto plot (start_plot's, or one started here) and the HTML page beside the markdown report
    (options.figure_paths)."""
    png_path, html_path = options.figure_paths
    try:
        plot = plot or start_plot(reports, options)
        boards = board_data(reports, options.source)  # while the plot is drawn
        whole, panels = plot.result()
        png_path.parent.mkdir(parents=True, exist_ok=True)
        png_path.write_bytes(whole)
        html = write_report(reports, options.cost, options.source, html_path, panels, boards)
    except OSError as exc:
        raise LeaderboardError(f"cannot write the plot or the report into {options.out.parent} "
                               f"({exc.strerror or exc}); pass --out to a writable place, or --no-report") from None
    finally:
        if plot is not None:
            plot.close()
    return [png_path, html]
