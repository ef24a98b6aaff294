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

from harness.board.build import build
from harness.board.options import COST_KEYS, DEFAULT_COST, TOP_ROWS, BoardOptions, default_out
from harness.board.outputs import start_plot, write_figures, write_markdown
from harness.board.ranking import LeaderboardError
from harness.board.sources import Source, compare_runs, parse_source
from harness.board.terminal import TERMINAL_WIDTH, print_comparison, print_report
from harness.board.wandb_leaderboard import log_leaderboard
from harness.core.logs import quiet_libraries


def argument_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--cost", choices=COST_KEYS, default=DEFAULT_COST,
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
    parser.add_argument("--all-rows", action="store_true",
                        help="every ranked row in the tables, the markdown and the page (default: the first "
                             f"{TOP_ROWS} per board, with a count of the rest)")
    parser.add_argument("--no-report", action="store_true", help="write no pareto.png / report.html")
    parser.add_argument("--log-wandb", action="store_true",
                        help="also log the boards, the picks and the Pareto plot to a W&B run of job type "
                             "`leaderboard` in the sweep's group (tracker settings: conf/tracker/wandb_offline.yaml "
                             "unless WANDB_MODE says otherwise)")
    parser.add_argument("-v", "--verbose", action="store_true", help="let third-party libraries log and show "
                                                                     "progress bars")
    return parser


def board_options(args: argparse.Namespace) -> BoardOptions:
    """The command line as the board's options: --source, else the ledger named by --ledger; --out, else
    leaderboard.md beside the runs; --group or its synonym --sweep."""
    source = parse_source(args.source) if args.source else Source("ledger", str(args.ledger))
    return BoardOptions(source=source, out=args.out or default_out(source), floors=tuple(args.floors),
                        ceilings=tuple(args.ceilings), sort=args.sort, cost=args.cost, data=args.data,
                        group=args.group or args.sweep, allow_different_samples=args.allow_different_samples,
                        all_rows=args.all_rows)


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    quiet_libraries(verbose=args.verbose)
    # The boards fit 100 columns unless --wide; a comparison and --wide get the terminal's width (220 when piped to a
    # file or CI log, where rich would assume 80).
    full = None if sys.stdout.isatty() else 220
    console = Console(width=full if args.wide or args.compare else TERMINAL_WIDTH)
    if args.metric and not args.compare:
        console.print("[red]error:[/red] --metric goes with --compare; rank with --sort METRIC")
        return 2
    try:
        options = board_options(args)
        if args.compare:
            comparison = compare_runs(options.source, *args.compare, metric=args.metric,
                                      allow_different_samples=options.allow_different_samples, group=options.group)
            print_comparison(console, comparison)
            return 0
        reports = build(options)
        out = write_markdown(reports, options)
        plot = None if args.no_report else start_plot(reports, options)
        for report in reports:  # while the plot is drawn
            print_report(console, report, options.cost, wide=args.wide)
        figures = [] if plot is None else write_figures(reports, options, plot)
        written = [out, *figures]
        if args.log_wandb:
            logged = log_leaderboard(reports, options, figures[0] if figures else None)
            console.print(f"logged to W&B: {logged}", soft_wrap=True)
    except LeaderboardError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    if options.source.skipped:
        console.print(f"left out of {options.source}: " + "; ".join(options.source.skipped), soft_wrap=True)
    console.print("written: " + ", ".join(map(str, written)), soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
