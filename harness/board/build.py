"""From the runs of a source to the boards the leaderboard shows: one per dataset and eval set, seeds collapsed,
ranked, and, given bounds, the cheapest row that meets them (see harness/board/ranking.py for the rules)."""

from __future__ import annotations

from harness.board.boards import BoardReport, check_same_samples, known_metrics
from harness.board.options import TOP_ROWS, BoardOptions
from harness.board.ranking import Board, Bound, LeaderboardError, parse_bounds, pick_cheapest, rank
from harness.board.text import table_rows
from harness.metrics.keys import cost_figures, spec_of

# Preferred ranking metric of a board when neither --sort nor a bound names one it has.
DEFAULT_SORT = ("accuracy", "rougeL", "id_f1", "semantic", "faithfulness")


def build(options: BoardOptions) -> list[BoardReport]:
    """Every board of the source (or the one of options.data), checked against the bounds and the sort metric."""
    source, group = options.source, options.group
    # Only the asked dataset's runs are read: a year of sweeps holds tens of thousands of others.
    all_boards = source.boards(group, data=options.data)
    if not all_boards and options.data and (names := sorted(source.data_names(group))):
        raise LeaderboardError(f"--data {options.data}: no runs on that dataset in {source}; it has: "
                               f"{', '.join(names)}")
    if not all_boards:
        raise LeaderboardError(f"no runs in {source}{' for group ' + group if group else ''}; "
                               "run a sweep first, e.g. python -m harness -m model=smollm2_135m method=base,instruct")
    metrics = list(dict.fromkeys(name for board in all_boards for name in board.metrics))
    cost_keys = cost_figures()
    bounds = parse_bounds(list(options.floors), list(options.ceilings), known=[*metrics, *cost_keys],
                          known_text=", ".join(metrics))
    sort = options.sort
    if sort and sort not in metrics and sort not in cost_keys:
        raise LeaderboardError(f"unknown metric(s) {[sort]}; the ledger has: {', '.join(metrics) or 'none'}")
    if sort and spec_of(sort) is None:
        raise LeaderboardError(f"--sort {sort}: this figure declares no direction, so it cannot rank runs")
    return [board_report(board, bounds, options) for board in all_boards]


def board_report(board: Board, bounds: list[Bound], options: BoardOptions) -> BoardReport:
    """One board: its rows (seeds collapsed) ranked, its table, and its pick under the bounds that apply to it."""
    rows = board.rows
    board_metrics = known_metrics(rows)
    measured = set(board_metrics)
    applies = [b for b in bounds if b.spec.section == "cost" or b.key in measured]
    quality = [b.key for b in applies if b.spec.section != "cost"]
    sort, note = options.sort, ""
    if sort and (sort in measured or sort in cost_figures()):
        sort_by = sort
    else:
        sort_by = next(iter(quality), None) or next((m for m in DEFAULT_SORT if m in measured), None) \
            or next(iter(sorted(measured)), "usd_per_1k_generations")
        if sort:
            note = f"`{sort}` is not measured on this dataset; ranked by `{sort_by}`."
    if not options.allow_different_samples:
        check_same_samples(rows, [m for m in [sort_by, *quality] if m in measured])
    ranked = rank(rows, sort_by)
    shown = len(ranked) if options.all_rows else TOP_ROWS
    header, body = table_rows(ranked, board_metrics, options.cost, ci_metric=sort_by if sort_by in measured else None,
                              limit=shown)
    verdict = None
    if bounds and not applies:
        note += (" " if note else "") + (f"No bound applies to this dataset (bounds on: "
                                         f"{', '.join(b.key for b in bounds)}); no pick.")
    elif applies:
        # Quality that decides among rows equal in cost: the first quality bound, else the ranking metric.
        decider = next(iter(quality), None) or (sort_by if sort_by in measured else None)
        verdict = pick_cheapest(ranked, applies, options.cost, quality=decider)
    return BoardReport(board, sort_by, board_metrics, applies, header, body, verdict, note, ranked)
