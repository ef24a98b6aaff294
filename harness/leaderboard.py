"""`python -m harness.leaderboard`: one board per dataset, ranked, with the cheapest run that is good enough.

    python -m harness.leaderboard --min rougeL=0.3 --max unparseable_rate=0.05 [--data NAME]

prints, for every dataset (and eval set) in the ledger, a ranked table (runs that differ only in their seed
are one row: mean over seeds, the spread, the number of seeds), writes results/leaderboard.md, and names the
cheapest completed configuration that meets every floor (--min, on a higher-is-better metric) and ceiling
(--max, on a lower-is-better one), saying why each other one was not picked. Nothing is ranked, picked or
compared across datasets.

    python -m harness.leaderboard --compare RUN_KEY_A RUN_KEY_B [--metric rougeL]

compares two configurations on the same eval examples with a paired bootstrap over the seeds they share: is
B's difference from A real? (see harness/board/compare.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.board.boards import BoardReport, check_same_samples, known_metrics
from harness.board.compare import compare
from harness.board.pareto import write_pareto
from harness.board.ranking import (
    Board,
    Bound,
    LeaderboardError,
    Verdict,
    boards,
    collapse_seeds,
    latest_per_key,
    parse_bounds,
    pick_cheapest,
    rank,
)
from harness.board.report import write_report
from harness.board.sources import Source, parse_source, resolve_ledger
from harness.board.terminal import TERMINAL_WIDTH, print_comparison, print_report
from harness.board.text import render_markdown, table_rows
from harness.board.wandb_leaderboard import log_leaderboard
from harness.core.logs import quiet_libraries
from harness.metrics.keys import cost_figures, spec_of

COST_KEYS = ("usd_per_1k_generations", "usd_total", "usd_train", "usd_eval")
# The markdown report's name when --out is not given; its plot and page are then pareto.png and report.html.
DEFAULT_OUT_STEM = "leaderboard"
# Preferred ranking metric of a board when neither --sort nor a bound names one it has.
DEFAULT_SORT = ("accuracy", "rougeL", "id_f1", "semantic", "faithfulness")

__all__ = ["LeaderboardError", "Verdict", "latest_per_key", "main", "pick_cheapest", "rank", "resolve_ledger"]


def source_of(args) -> Source:
    """--source, else the ledger named by --ledger (the default: results/runs.jsonl)."""
    return parse_source(args.source) if args.source else Source("ledger", str(args.ledger))


def default_out_dir(source: Source) -> Path:
    """Where reports go when --out is not given: beside the ledger, else the results folder of offline runs."""
    if source.kind == "ledger":
        return source.ledger_path.parent
    if source.kind == "wandb-offline":
        return Path(source.location).resolve().parent
    return Path("results")


def build(args) -> tuple[list[BoardReport], Path]:
    source = source_of(args)
    group = args.group or args.sweep
    records = source.records(group)
    args.resolved_source = source
    if not records:
        raise LeaderboardError(f"no runs in {source}{' for group ' + group if group else ''}; "
                               "run a sweep first, e.g. python -m harness -m model=smollm2_135m method=base,instruct")
    all_boards = boards(latest_per_key(records))
    if args.data:
        names = sorted({b.data for b in all_boards})
        all_boards = [b for b in all_boards if b.data == args.data]
        if not all_boards:
            raise LeaderboardError(f"--data {args.data}: no runs on that dataset in {source}; it has: "
                                   f"{', '.join(names)}")
    metrics = known_metrics([r for b in all_boards for r in b.rows])
    cost_keys = cost_figures()
    bounds = parse_bounds(args.floors, args.ceilings, known=[*metrics, *cost_keys], known_text=", ".join(metrics))
    if args.sort and args.sort not in metrics and args.sort not in cost_keys:
        raise LeaderboardError(f"unknown metric(s) {[args.sort]}; the ledger has: {', '.join(metrics) or 'none'}")
    if args.sort and spec_of(args.sort) is None:
        raise LeaderboardError(f"--sort {args.sort}: this figure declares no direction, so it cannot rank runs")
    reports = [board_report(board, bounds, args) for board in all_boards]
    out = args.out or default_out_dir(source) / f"{DEFAULT_OUT_STEM}.md"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_markdown(reports, args.cost, source), encoding="utf-8")
    except OSError as exc:
        raise LeaderboardError(f"--out {out}: cannot write the report ({exc.strerror or exc}); "
                               f"pass --out to a writable file") from None
    return reports, out


def board_report(board: Board, bounds: list[Bound], args) -> BoardReport:
    rows = collapse_seeds(board.rows)
    board_metrics = known_metrics(rows)
    measured = set(board_metrics)
    applies = [b for b in bounds if b.spec.section == "cost" or b.key in measured]
    quality = [b.key for b in applies if b.spec.section != "cost"]
    note = ""
    if args.sort and (args.sort in measured or args.sort in cost_figures()):
        sort_by = args.sort
    else:
        sort_by = next(iter(quality), None) or next((m for m in DEFAULT_SORT if m in measured), None) \
            or next(iter(sorted(measured)), "usd_per_1k_generations")
        if args.sort:
            note = f"`{args.sort}` is not measured on this dataset; ranked by `{sort_by}`."
    if not args.allow_different_samples:
        check_same_samples(rows, [m for m in [sort_by, *quality] if m in measured])
    ranked = rank(rows, sort_by)
    header, body = table_rows(ranked, board_metrics, args.cost, ci_metric=sort_by if sort_by in measured else None)
    verdict = None
    if bounds and not applies:
        note += (" " if note else "") + (f"No bound applies to this dataset (bounds on: "
                                         f"{', '.join(b.key for b in bounds)}); no pick.")
    elif applies:
        verdict = pick_cheapest(ranked, applies, args.cost)
    return BoardReport(board, sort_by, board_metrics, applies, header, body, verdict, note, ranked)


# --- the terminal: a table that fits 100 columns unless --wide ------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=None, metavar="KIND:WHERE",
                        help="where runs are read: ledger:PATH (default: --ledger), wandb:ENTITY/PROJECT (the W&B "
                             "public API; needs a login) or wandb-offline:DIR (offline runs, e.g. results/wandb)")
    parser.add_argument("--ledger", type=Path, default=Path("results/runs.jsonl"),
                        help="ledger to read (a directory: its runs.jsonl)")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default: leaderboard.md beside the ledger); the plot and the page are "
                             "written beside it, as pareto.png and report.html, or <stem>-pareto.png and "
                             "<stem>-report.html for another name")
    parser.add_argument("--min", dest="floors", action="append", default=[], metavar="METRIC=VALUE",
                        help="a floor on a higher-is-better metric every picked run must meet; repeatable, "
                             "e.g. --min rougeL=0.3")
    parser.add_argument("--max", dest="ceilings", action="append", default=[], metavar="METRIC=VALUE",
                        help="a ceiling on a lower-is-better figure; repeatable, e.g. --max unparseable_rate=0.05 "
                             "or --max peak_memory_gb=20")
    parser.add_argument("--sort", default=None,
                        help="metric to rank by, in its own direction (default: the first bound, else accuracy / "
                             "rougeL)")
    parser.add_argument("--cost", choices=COST_KEYS, default="usd_per_1k_generations",
                        help="what 'cheapest' means (default: serving cost per 1000 answers)")
    parser.add_argument("--data", default=None, help="only the board of this dataset")
    parser.add_argument("--group", default=None, metavar="SWEEP",
                        help="only runs of this sweep (its W&B group; in the ledger, its sweep id)")
    parser.add_argument("--sweep", default=None, help="only runs of this sweep id (the same as --group)")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_KEY_A", "RUN_KEY_B"), default=None,
                        help="paired bootstrap of configuration B against A on their shared eval examples, over "
                             "the seeds they share (unique prefixes of run keys are accepted)")
    parser.add_argument("--metric", default=None, help="with --compare: only this per-sample metric")
    parser.add_argument("--allow-different-samples", action="store_true",
                        help="rank (or compare) on a metric even where runs were scored on different samples "
                             "(e.g. the judge failed on some); such rows are marked *")
    parser.add_argument("--wide", action="store_true",
                        help="every column (all metrics, costs, timings, run keys) instead of a 100-column table")
    parser.add_argument("--no-report", action="store_true", help="write no pareto.png / report.html")
    parser.add_argument("--log-wandb", action="store_true",
                        help="also log the boards, the picks and the Pareto plot to a W&B run of job type "
                             "`leaderboard` in the sweep's group (tracker settings: conf/tracker/wandb_offline.yaml "
                             "unless WANDB_MODE says otherwise)")
    parser.add_argument("-v", "--verbose", action="store_true", help="let third-party libraries log and show "
                                                                     "progress bars")
    args = parser.parse_args(argv)
    quiet_libraries(verbose=args.verbose)
    # The boards fit 100 columns unless --wide; a comparison and --wide get the terminal's width (220 when piped to a
    # file or CI log, where rich would assume 80).
    full = None if sys.stdout.isatty() else 220
    console = Console(width=full if args.wide or args.compare else TERMINAL_WIDTH)
    if args.metric and not args.compare:
        console.print("[red]error:[/red] --metric goes with --compare; rank with --sort METRIC")
        return 2
    try:
        if args.compare:
            source = source_of(args)
            if source.kind == "ledger":
                comparison = compare(source.ledger_path, *args.compare, metric=args.metric,
                                     allow_different_samples=args.allow_different_samples)
            else:  # W&B: the runs' records and their logged predictions tables
                comparison = compare(str(source), *args.compare, metric=args.metric,
                                     allow_different_samples=args.allow_different_samples,
                                     records=source.records(args.group or args.sweep),
                                     load=source.require_predictions)
            print_comparison(console, comparison)
            return 0
        reports, out = build(args)
        figures = [] if args.no_report else write_figures(reports, args, out)
        written = [out, *figures]
        if args.log_wandb:
            logged = log_leaderboard(reports, args, out.parent, figures[0] if figures else None)
            console.print(f"logged to W&B: {logged}", soft_wrap=True)
    except LeaderboardError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    for report in reports:
        print_report(console, report, args.cost, wide=args.wide)
    source = args.resolved_source
    if source.skipped:
        console.print(f"left out of {source}: " + "; ".join(source.skipped), soft_wrap=True)
    console.print("written: " + ", ".join(map(str, written)), soft_wrap=True)
    return 0


def figure_paths(out: Path) -> tuple[Path, Path]:
    """The Pareto plot and the HTML page that go with the markdown report `out`: pareto.png and report.html beside
    leaderboard.md; beside another name, its stem first (leaderboard-shop.md: leaderboard-shop-pareto.png, ...),
    so two reports written into one folder (e.g. one --data each) keep a picture and a page each."""
    if out.stem == DEFAULT_OUT_STEM:
        return out.parent / "pareto.png", out.parent / "report.html"
    return out.parent / f"{out.stem}-pareto.png", out.parent / f"{out.stem}-report.html"


def write_figures(reports: list[BoardReport], args, out: Path) -> list[Path]:
    """The Pareto plot and the HTML page beside the markdown report (figure_paths)."""
    png_path, html_path = figure_paths(out)
    try:
        png = write_pareto(reports, args.cost, png_path)
        html = write_report(reports, args, html_path)
    except OSError as exc:
        raise LeaderboardError(f"cannot write the plot or the report into {out.parent} ({exc.strerror or exc}); "
                               f"pass --out to a writable place, or --no-report") from None
    return [png, html]


if __name__ == "__main__":
    sys.exit(main())
