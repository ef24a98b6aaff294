"""results/pareto.png: quality against cost, one panel per board (dataset and eval set), never mixed.

Each completed row is a point: its quality metric (the board's ranking metric) with its 95% CI over eval
examples, or, for a row that collapses several seeds, the mean with the range across seeds (a wider cap marks
it, and its label says how many seeds); its cost on a log scale. Floors and ceilings are drawn as lines, the
Pareto front (no other row is both cheaper and better) is joined, and the pick is starred and labelled. The
axes say which way is better, from each key's declared direction (harness/metrics/keys.py).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.board.ranking import cost_range, value_of
from harness.board.text import ci_of
from harness.core.ledger import COMPLETED
from harness.metrics.keys import spec_of

PANEL_W, PANEL_H, DPI = 6.0, 4.4, 90
# Each panel's axes inside its cell (inches): room for the tick labels and the axis label on the left and below,
# the title above. Fixed, so a panel is its cell of the picture: no layout pass measures every text first.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_BOTTOM, MARGIN_TOP = 0.9, 0.2, 0.6, 0.35
# Beyond this many points a board's markers shrink and the legend takes a fixed corner.
LABELLED = 60


@dataclass
class Point:
    index: int  # the row's place in the board's table (1-based)
    row: dict
    cost: float
    value: float
    low: float
    high: float
    seeds: int
    # The cost's range over the run's generation batches (board/ranking.py cost_range); the cost itself without one.
    cost_low: float = 0.0
    cost_high: float = 0.0


def quality_metric(report) -> str | None:
    """The metric a board's picture shows: its ranking metric when that is a quality metric, else the first
    quality bound, else the first metric it measured."""
    spec = spec_of(report.sort_by)
    if report.sort_by in report.metrics and spec is not None and spec.section != "cost":
        return report.sort_by
    bound = next((b.key for b in report.bounds if b.spec.section != "cost"), None)
    return bound or next((m for m in report.metrics if spec_of(m) is not None), None)


def points(report, metric: str, cost_key: str) -> tuple[list[Point], list[str]]:
    """Plottable rows and a note for each completed row that cannot be placed (no cost, no metric)."""
    out, left_out = [], []
    for index, row in enumerate(report.rows, start=1):
        if row.get("status") != COMPLETED:
            continue
        cost, value = value_of(row, cost_key), value_of(row, metric)
        if cost is None or value is None or cost <= 0 or not math.isfinite(value):
            left_out.append(f"#{index} ({'no ' + metric if value is None else 'no positive ' + cost_key})")
            continue
        spread = (row.get("spread") or {}).get(metric)
        ci = ci_of(row, metric)
        if spread:
            low, high = spread["min"], spread["max"]
        elif ci and ci[0] == metric:  # a `_sample_mean` interval is about another number than the plotted one
            low, high = min(ci[1]["low"], value), max(ci[1]["high"], value)
        else:
            low = high = value
        cost_low, cost_high = cost_range(row, cost_key)
        out.append(Point(index, row, cost, value, low, high, len(row.get("seeds") or [None]), cost_low, cost_high))
    return out, left_out


def pareto_front(pts: list[Point], higher_is_better: bool) -> list[Point]:
    """Points no other point beats on both cost (lower) and quality (in its direction), cheapest first."""
    front, best = [], None
    for p in sorted(pts, key=lambda p: (p.cost, -p.value if higher_is_better else p.value)):
        if best is None or (p.value > best if higher_is_better else p.value < best):
            front.append(p)
            best = p.value
    return front


def draw_board(ax, report, cost_key: str, front: dict[str, str] | None = None) -> None:
    from matplotlib.ticker import (  # deferred, heavy: only drawing the Pareto plot imports it
        FuncFormatter,
        LogLocator,
        NullFormatter,
    )

    metric = quality_metric(report)
    # At the axes' top (as matplotlib places it when nothing is drawn above the axes), given: placing it itself
    # measures every tick label of the panel first.
    ax.set_title(report.board.title, fontsize=10, y=1.0)
    if metric is None:
        ax.text(0.5, 0.5, "no quality metric measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])  # nothing is placed: no scale to read
        ax.set_yticks([])
        return
    spec, cost_spec = spec_of(metric), spec_of(cost_key)
    pts, left_out = points(report, metric, cost_key)
    pick = report.verdict.pick if report.verdict is not None else None
    ax.set_xscale("log")
    ax.set_xlabel(f"{cost_key} (log scale)  ← {cost_spec.better.value if cost_spec else 'lower'} is better")
    ax.set_ylabel(f"{metric}  {spec.arrow()} {spec.better.value} is better" if spec else metric)
    ax.grid(True, which="both", alpha=0.25)
    if pts:  # before anything is drawn: a single point would leave autoscaling a zero-width range
        costs = [c for p in pts for c in (p.cost_low, p.cost_high)] + [b.value for b in report.bounds
                                                                          if b.key == cost_key]
        ax.set_xlim(min(costs) / 1.6, max(costs) * 1.6)
    # The rows the table shows get their bars and labels, one errorbar call per kind; the rows below it are dots
    # (a board of a year of sweeps has thousands, and an artist per point takes minutes and hides the front).
    shown = max(len(report.body), 1)
    below = [p for p in pts if p.index > shown]
    if below:
        ax.scatter([p.cost for p in below], [p.value for p in below], s=4, color="#bbbbbb", zorder=1,
                   label=f"{len(below)} rows below the table")
    for seeded in (False, True):
        kind = [p for p in pts if (p.seeds > 1) == seeded and p.index <= shown]
        if kind:
            ax.errorbar([p.cost for p in kind], [p.value for p in kind],
                        yerr=[[p.value - p.low for p in kind], [p.high - p.value for p in kind]],
                        xerr=[[p.cost - p.cost_low for p in kind], [p.cost_high - p.cost for p in kind]],
                        fmt="s" if seeded else "o", color="#1f77b4" if seeded else "#555555",
                        ecolor="#1f77b4" if seeded else "#999999", capsize=6 if seeded else 3, markersize=6,
                        zorder=3, linestyle="none")
    for p in pts:
        if (pick is not None and p.row is pick) or p.index > shown:
            continue  # the pick is labelled below, with its name; rows below the table are not
        text = f"#{p.index}" + (f" ({p.seeds} seeds)" if p.seeds > 1 else "")
        dx, align = _label_side(ax, p.cost, text, 8, 6)
        ax.annotate(text, (p.cost, p.value), textcoords="offset points", xytext=(dx, 4), fontsize=8, ha=align)
    # What the two kinds of bar mean, in the legend (empty plots only add the entries).
    if any(p.seeds == 1 and p.index <= shown for p in pts):
        ax.errorbar([], [], yerr=[], fmt="o", color="#555555", ecolor="#999999", capsize=3, label="one seed: 95% CI")
    if any(p.cost_low < p.cost_high and p.index <= shown for p in pts):
        ax.plot([], [], "-", color="#999999", label=f"{cost_key}: range over generation batches")
    if any(p.seeds > 1 and p.index <= shown for p in pts):
        ax.errorbar([], [], yerr=[], fmt="s", color="#1f77b4", capsize=6, label="seeds: mean, range across them")
    if pts and spec is not None:
        front = pareto_front(pts, spec.higher_is_better)
        ax.plot([p.cost for p in front], [p.value for p in front], "-o", color="#2ca02c", linewidth=1.5,
                markersize=13, markerfacecolor="none", markeredgewidth=1.5, zorder=2,
                label="Pareto front (nothing cheaper is better)")
    searched = [p for p in pts if p.row.get("run_key") in (front or {})]
    if searched:  # the search's own front (harness/board/studies.py): what its objectives found, on this board
        ax.plot([p.cost for p in searched], [p.value for p in searched], "D", color="#9467bd", markersize=15,
                markerfacecolor="none", markeredgewidth=1.5, zorder=2, label="search study's front (Optuna)")
    for bound in report.bounds:
        if bound.key == metric:
            ax.axhline(bound.value, color="#d62728", linestyle="--", linewidth=1, label=bound.text())
        elif bound.key == cost_key:
            ax.axvline(bound.value, color="#d62728", linestyle=":", linewidth=1, label=bound.text())
    chosen = next((p for p in pts if pick is not None and p.row is pick), None)
    if chosen is not None:
        ax.plot([chosen.cost], [chosen.value], "*", color="#ff7f0e", markersize=18, zorder=4,
                markeredgecolor="black", label="pick (cheapest adequate)")
        seeds = f" ({chosen.seeds} seeds)" if chosen.seeds > 1 else ""
        text = f"pick #{chosen.index}: {chosen.row.get('model')}/{chosen.row.get('method')}{seeds}"
        dx, align = _label_side(ax, chosen.cost, text, 9, 10)
        ax.annotate(text, (chosen.cost, chosen.value), textcoords="offset points", xytext=(dx, 8), fontsize=9,
                    fontweight="bold", color="#b35900", ha=align)
    if spec is not None and spec.low is not None and spec.high is not None and pts:
        lows = [p.low for p in pts] + [b.value for b in report.bounds if b.key == metric]
        highs = [p.high for p in pts] + [b.value for b in report.bounds if b.key == metric]
        pad = max((max(highs) - min(lows)) * 0.15, 0.02)
        ax.set_ylim(max(spec.low, min(lows) - pad), min(spec.high, max(highs) + pad))
    # Dollars at 1, 2, 5 x 10^k within two decades, at powers of ten beyond (a TF-IDF row can sit five decades
    # below an LLM's): readable, never crowded as the default minor labels get.
    low, high = ax.get_xlim()
    decades = math.log10(high / low) if low > 0 and high > low else 0.0
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"${x:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if left_out:
        ax.text(0.01, 0.01, "not placed: " + ", ".join(left_out), transform=ax.transAxes, fontsize=7, va="bottom")
    if ax.get_legend_handles_labels()[0]:
        # "best" measures every point against every spot: fine for a sweep, minutes for a year of them.
        ax.legend(fontsize=7, loc="best" if len(pts) <= LABELLED else "lower right")


def _label_side(ax, cost: float, text: str, fontsize: float, gap: float) -> tuple[float, str]:
    """(x offset in points, alignment) of a point's label: right of the point, or left of it where the right has
    not the room the label needs and the left has more: a label stays inside its panel."""
    low, high = ax.get_xlim()
    where = math.log(cost / low) / math.log(high / low) if low > 0 and high > low and cost > 0 else 0.0
    width = ax.get_position().width * ax.figure.get_figwidth() * 72  # the axes' width in points
    right, left = (1 - where) * width, where * width
    needed = gap + 0.62 * fontsize * len(text)  # an average glyph of the default sans font
    return (gap, "left") if right >= needed or right >= left else (-gap, "right")


def panel_box(index: int, cols: int) -> tuple[int, int]:
    """(column, row from the top) of board `index`'s panel: row by row, `cols` a row."""
    return index % cols, index // cols


def figure(reports: list, cost_key: str, front: dict[str, str] | None = None):
    """One panel per board, two a row, each in a cell of PANEL_W x PANEL_H inches with its axes at fixed margins.
    Drawn with the Agg canvas alone (no pyplot: no GUI backend, no figure kept open)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred, heavy: only drawing imports it
    from matplotlib.figure import Figure  # deferred, heavy: only drawing the Pareto plot imports it

    n = max(len(reports), 1)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(PANEL_W * cols, PANEL_H * rows), dpi=DPI)
    FigureCanvasAgg(fig)
    width, height = PANEL_W * cols, PANEL_H * rows
    for index, report in enumerate(reports):
        col, row = panel_box(index, cols)
        left = col * PANEL_W + MARGIN_LEFT
        bottom = (rows - 1 - row) * PANEL_H + MARGIN_BOTTOM
        ax = fig.add_axes((left / width, bottom / height, (PANEL_W - MARGIN_LEFT - MARGIN_RIGHT) / width,
                           (PANEL_H - MARGIN_BOTTOM - MARGIN_TOP) / height))
        draw_board(ax, report, cost_key, front)
    return fig


def _png(pixels) -> bytes:
    import matplotlib.image  # deferred, heavy: only drawing the Pareto plot imports it

    buffer = io.BytesIO()
    # zlib level 3: a third of the default's time, and flat-coloured plots come out no bigger.
    matplotlib.image.imsave(buffer, np.ascontiguousarray(pixels), format="png", pil_kwargs={"compress_level": 3})
    return buffer.getvalue()


def _drawn(reports: list, cost_key: str, front: dict[str, str] | None):
    """The figure's pixels (rows from the top), RGBA."""
    fig = figure(reports, cost_key, front)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())


def png_bytes(reports: list, cost_key: str, front: dict[str, str] | None = None) -> bytes:
    return _png(_drawn(reports, cost_key, front))


def plot_and_panels(reports: list, cost_key: str, front: dict[str, str] | None = None) -> tuple[bytes, list[bytes]]:
    """The plot of every board and each board's own panel cut from it (PNG bytes): one drawing for both, where a
    drawing per board costs a second each on a year of sweeps."""
    pixels = _drawn(reports, cost_key, front)
    cols = min(max(len(reports), 1), 2)
    cell_w, cell_h = round(PANEL_W * DPI), round(PANEL_H * DPI)
    panels = []
    for index in range(len(reports)):
        col, row = panel_box(index, cols)
        panels.append(_png(pixels[row * cell_h:(row + 1) * cell_h, col * cell_w:(col + 1) * cell_w]))
    return _png(pixels), panels


def write_pareto(reports: list, cost_key: str, path: Path, front: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(reports, cost_key, front))
    return path
