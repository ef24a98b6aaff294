"""`python -m harness.leaderboard`: one board per dataset, ranked, with the cheapest run that is good enough.

    python -m harness.leaderboard --min rougeL=0.3 --max unparseable_rate=0.05 [--data NAME]

prints, for every dataset (and eval set) in the ledger, a ranked table (runs that differ only in their seed
are one row: mean over seeds, the spread, the number of seeds), writes results/leaderboard.md, and names the
cheapest completed configuration that meets every floor (--min, on a higher-is-better metric) and ceiling
(--max, on a lower-is-better one), saying why each other one was not picked. Nothing is ranked, picked or
compared across datasets.

    python -m harness.leaderboard --compare RUN_KEY_A RUN_KEY_B [--metric rougeL]

compares two configurations on the same eval examples with a paired bootstrap over the seeds they share: is
B's difference from A real? (see harness/compare.py)
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.compare import CONFIDENCE, Comparison, compare, verdict_of
from harness.ledger import COMPLETED
from harness.metrics.keys import cost_figures, spec_of
from harness.ranking import (
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
    value_of,
)
from harness.logs import quiet_libraries
from harness.sources import Source, parse_source, resolve_ledger
from harness.stats import SAMPLE_MEAN_SUFFIX

COST_KEYS = ("usd_per_1k_generations", "usd_total", "usd_train", "usd_eval")
# The markdown report's name when --out is not given; its plot and page are then pareto.png and report.html.
DEFAULT_OUT_STEM = "leaderboard"
# Preferred ranking metric of a board when neither --sort nor a bound names one it has.
DEFAULT_SORT = ("accuracy", "rougeL", "id_f1", "semantic", "faithfulness")
# Rows listed in a refusal before the rest is summarised.
MAX_LISTED = 6

__all__ = ["LeaderboardError", "Verdict", "latest_per_key", "main", "pick_cheapest", "rank", "resolve_ledger"]


def known_metrics(rows: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.get("metrics", {})))
    return list(names)


def judged(row: dict, metric: str) -> dict | None:
    """The judge's accounting for `metric` in this run (scored, failed, reasons, scored_set), if it judged it."""
    return (row.get("judge") or {}).get("metrics", {}).get(metric)


def sample_set(row: dict, metric: str) -> str | None:
    """Fingerprint of the samples `metric` was computed on: the judge's scored set for a judged metric, else
    the run's eval set; None for records written before fingerprints existed (not checked)."""
    counts = judged(row, metric)
    return counts["scored_set"] if counts else row.get("eval_set")


def _coverage(row: dict, metric: str) -> str:
    counts = judged(row, metric)
    if not counts:
        return f"{row.get('metric_samples', '?')} eval examples"
    text = f"{counts['scored']} of {counts['scored'] + counts['failed']} scored"
    if counts["failed"]:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in counts["reasons"].items()) + ")"
    return text


def mismatched_samples(rows: list[dict], metric: str) -> list[dict]:
    """Completed rows with `metric` whose sample set differs from the most common one ([] when they agree)."""
    having = [r for r in rows if r.get("status") == COMPLETED and metric in r.get("metrics", {})
              and sample_set(r, metric) is not None]
    counts: dict[str, int] = {}
    for row in having:
        counts[sample_set(row, metric)] = counts.get(sample_set(row, metric), 0) + 1
    if len(counts) < 2:
        return []
    # The biggest group is the reference; ties go to the set with the most scored samples.
    common = max(counts, key=lambda key: (counts[key], max(_scored(r, metric) for r in having
                                                            if sample_set(r, metric) == key)))
    return [r for r in having if sample_set(r, metric) != common]


def _scored(row: dict, metric: str) -> int:
    counts = judged(row, metric)
    return counts["scored"] if counts else int(row.get("metric_samples") or 0)


def check_same_samples(rows: list[dict], metrics: list[str]) -> None:
    """Refuse to rank or pick on a metric computed on different samples in different runs: a judge that failed
    on two hard questions for one run would otherwise hand it a better mean."""
    for metric in dict.fromkeys(metrics):
        odd = mismatched_samples(rows, metric)
        if odd:
            having = [r for r in rows if r.get("status") == COMPLETED and metric in r.get("metrics", {})]
            # The differing rows first; a ledger of hundreds of runs gets a summary, not a page per run.
            shown = [r for r in having if r in odd] + [r for r in having if r not in odd]
            detail = "; ".join(f"{r.get('model')}/{r.get('method')} [{r.get('run_key')}]: {_coverage(r, metric)}"
                               + (" <- differs" if r in odd else "") for r in shown[:MAX_LISTED])
            if len(shown) > MAX_LISTED:
                detail += f"; and {len(shown) - MAX_LISTED} more runs ({len(odd)} of {len(having)} differ in all)"
            raise LeaderboardError(
                f"{metric} was computed on different samples in different runs, so their means do not compare: "
                f"{detail}. Re-score the failed samples (judge replies are cached, so only they cost anything), "
                f"filter with --sweep, or pass --allow-different-samples to rank anyway (such rows are marked *).")


def _label(row: dict) -> str:
    qlora = (row.get("config") or {}).get("qlora")
    tuned = f" r={qlora.get('r')} lr={qlora.get('lr')}" if row.get("train") and isinstance(qlora, dict) else ""
    seeds = row.get("seeds") or []
    runs = row.get("runs") or [row.get("run_key")]
    seeded = f" ({len(seeds)} seeds)" if len(seeds) > 1 else ""
    return f"{row.get('model')}/{row.get('method')}{tuned}{seeded} [{', '.join(map(str, runs))}]"


def ci_of(row: dict, metric: str) -> tuple[str, dict] | None:
    """(name, {mean, low, high, n}) of a row's bootstrap CI for `metric`, if the run recorded one."""
    cis = row.get("metrics_ci") or {}
    for name in (metric, metric + SAMPLE_MEAN_SUFFIX):
        if name in cis:
            return name, cis[name]
    return None


def _fmt_ci(ci: dict) -> str:
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def interval_cell(row: dict, metric: str) -> str:
    """One seed: the bootstrap CI over examples. Several: the spread across seeds (sd, and the range)."""
    spread = (row.get("spread") or {}).get(metric)
    if spread:
        return f"±{spread['sd']:.3f} sd [{spread['min']:.3f}, {spread['max']:.3f}] over {spread['n']} seeds"
    ci = ci_of(row, metric)
    return _fmt_ci(ci[1]) if ci else "-"


def _metric_cell(row: dict, name: str, odd: set[str]) -> str:
    """`0.8123`; `0.8123 (18/20)` when the judge failed on some samples; `*` when its samples differ from
    most rows' (only shown with --allow-different-samples)."""
    value = row.get("metrics", {}).get(name)
    if value is None:
        return "-"
    counts = judged(row, name)
    partial = f" ({counts['scored']}/{counts['scored'] + counts['failed']})" if counts and counts["failed"] else ""
    return f"{value:.4f}{partial}" + ("*" if row.get("run_key") in odd else "")


def _heading(name: str) -> str:
    spec = spec_of(name)
    return f"{name} {spec.arrow()}" if spec else name


def _seeds_cell(row: dict) -> str:
    if row.get("status") != COMPLETED:
        return "-"
    seeds = row.get("seeds") or [None]
    return str(len(seeds)) if len(seeds) > 1 else "1†"


def _cost_text(row: dict, key: str) -> str:
    value = value_of(row, key)
    return "-" if value is None else f"${value:.6f}"


def _figure(row: dict, key: str, digits: int) -> str:
    value = value_of(row, key)
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(rows: list[dict], metrics: list[str], cost_key: str,
               ci_metric: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Table cells; with `ci_metric`, a column with its 95% CI (one seed) or its spread over seeds."""
    odd = {name: {r.get("run_key") for r in mismatched_samples(rows, name)} for name in metrics}
    interval_header = [f"{ci_metric} 95% CI / seed spread"] if ci_metric else []
    header = ["#", "model", "method", "r", "seeds", "status", *map(_heading, metrics), *interval_header,
              _heading(cost_key), "$ run ↓", "train s ↓", "eval tok/s ↑", "peak GB ↓", "run keys"]
    body = []
    for index, row in enumerate(rows, start=1):
        trained = bool(row.get("train"))
        qlora = (row.get("config") or {}).get("qlora")
        body.append([
            str(index),
            str(row.get("model")),
            str(row.get("method")),
            str(qlora.get("r", "")) if trained and isinstance(qlora, dict) else "-",
            _seeds_cell(row),
            str(row.get("status")),
            *[_metric_cell(row, name, odd[name]) for name in metrics],
            *([interval_cell(row, ci_metric)] if ci_metric else []),
            _cost_text(row, cost_key),
            _cost_text(row, "usd_total"),
            _figure(row, "train_s", 1) if trained else "-",
            _figure(row, "eval_tokens_per_s", 1),
            _figure(row, "peak_memory_gb", 2),
            ", ".join(str(k) for k in (row.get("runs") or [row.get("run_key")])),
        ])
    return header, body


@dataclass
class BoardReport:
    board: Board
    sort_by: str
    metrics: list[str]
    bounds: list[Bound]  # the bounds that apply to this board (their metric is measured here)
    header: list[str]
    body: list[list[str]]
    verdict: Verdict | None
    note: str = ""
    rows: list[dict] = field(default_factory=list)  # ranked, seeds collapsed: what header/body show


def legend(metrics: list[str]) -> str:
    parts = []
    for name in metrics:
        spec = spec_of(name)
        parts.append(f"`{name}` {spec.arrow()} {spec.better.value} is better ({spec.range_text()})" if spec
                     else f"`{name}`: no declared direction")
    return "; ".join(parts)


def render_markdown(reports: list[BoardReport], cost_key: str, source) -> str:
    lines = [f"# Leaderboard\n\nSource: `{source}`. One board per dataset and eval set: rows are never ranked, "
             f"picked or compared across boards. ↑ higher is better, ↓ lower is better. Runs that differ only in "
             f"their training seed are one row: figures are means over seeds, `seeds` counts them (`1†`: a single "
             f"seed, so nothing shows how much the seed alone moves it), and the interval column gives the "
             f"spread across seeds. A one-seed row's interval is a 95% bootstrap CI over eval examples, "
             f"`mean [low, high]`; `_sample_mean` marks a corpus metric (BLEU, chrF) whose interval is for the "
             f"mean of per-example scores. `(18/20)`: the LLM judge scored 18 of 20 samples (the mean is over "
             f"those). `*`: computed on other samples than most rows. Compare two configurations with "
             f"`--compare KEY_A KEY_B`; cost on each run's hardware preset.\n"]
    for report in reports:
        lines += [f"## {report.board.title}\n", f"Ranked by `{report.sort_by}`. Metrics: {legend(report.metrics)}.\n",
                  "| " + " | ".join(report.header) + " |", "|" + "---|" * len(report.header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in report.body]
        if report.note:
            lines.append(f"\n{report.note}")
        if report.verdict is not None:
            wanted = ", ".join(b.text() for b in report.bounds)
            lines.append(f"\n### Cheapest adequate ({wanted}; cheapest by {cost_key})\n")
            lines.append(f"**{_label(report.verdict.pick)}** at {_cost_text(report.verdict.pick, cost_key)}"
                         if report.verdict.pick else "**None**: no completed run meets every bound.")
            lines.append("\nNot picked:\n")
            lines += [f"- {_label(row)}: {reason}" for row, reason in report.verdict.rejected]
        lines.append("")
    return "\n".join(lines) + "\n"


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

TERMINAL_WIDTH = 100
# Config paths that are not hyperparameters of a row (shown elsewhere, or the same within a board by definition).
NOT_SETTINGS = ("model.", "method.", "data.", "hardware.", "judge.", "tracker.", "qlora.seed", "seed", "fail_at")
# Short headings of the cost keys (the column must stay narrow).
COST_HEADINGS = {"usd_per_1k_generations": "$/1k answers ↓", "usd_total": "$ run ↓", "usd_train": "$ train ↓",
                 "usd_eval": "$ eval ↓"}
# More varying settings than this share one column ("r=8 lr=0.0002").
MAX_SETTING_COLUMNS = 3


def flat_config(config: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if not isinstance(value, list) else tuple(value)
    return out


def varying_settings(rows: list[dict]) -> list[str]:
    """Config paths whose value differs between the completed rows of a board (the hardware preset's name
    included): what tells its configurations apart."""
    done = [r for r in rows if r.get("status") == COMPLETED]
    rows = done if len(done) > 1 else rows
    flats = [flat_config(r.get("config") or {}) for r in rows]
    for flat, row in zip(flats, rows, strict=True):
        flat["hardware"] = row.get("hardware")
    keys = dict.fromkeys(k for flat in flats for k in flat)

    def varies(key: str) -> bool:
        # A setting only some rows have (the TF-IDF baseline has no LoRA keys) tells nothing apart by itself.
        held = [repr(f[key]) for f in flats if f.get(key) is not None]
        return len(held) > 1 and len(set(held)) > 1

    return [k for k in keys if not k.startswith(NOT_SETTINGS) and varies(k)]


def _setting_text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def _short_names(keys: list[str]) -> dict[str, str]:
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (name if last.count(name) == 1 else k) for k, name in zip(keys, last, strict=True)}


def _sort_cell(row: dict, metric: str) -> str:
    """`0.412 [0.380,0.450]` (one seed: 95% CI), `0.412 ±0.012 x3` (three seeds: sd across them)."""
    value = value_of(row, metric)
    if value is None:
        return "-"
    spread = (row.get("spread") or {}).get(metric)
    if spread:
        return f"{value:.3f} ±{spread['sd']:.3f} x{spread['n']}"
    ci = ci_of(row, metric)
    return f"{value:.3f} [{ci[1]['low']:.3f},{ci[1]['high']:.3f}]" if ci else f"{value:.3f}"


def compact_table(report: BoardReport, cost_key: str) -> tuple[list[str], list[list[str]]]:
    """model, method, the settings that vary on this board, the sort metric with its CI or seed spread, the
    bound metrics, the cost, the status."""
    settings = varying_settings(report.rows)
    names = _short_names(settings)
    joined = len(settings) > MAX_SETTING_COLUMNS
    bound_keys = [b.key for b in report.bounds if b.key not in (report.sort_by, cost_key)]
    header = ["#", "model", "method", *(["settings"] if joined else [names[k] for k in settings]),
              f"{_heading(report.sort_by)} 95% CI / seeds", *map(_heading, dict.fromkeys(bound_keys)),
              COST_HEADINGS.get(cost_key, _heading(cost_key)), "status"]
    body = []
    for index, row in enumerate(report.rows, start=1):
        flat = {**flat_config(row.get("config") or {}), "hardware": row.get("hardware")}
        values = [_setting_text(flat.get(k)) for k in settings]
        setting_cells = [" ".join(f"{names[k]}={v}" for k, v in zip(settings, values, strict=True))] if joined \
            else values
        body.append([str(index), str(row.get("model")), str(row.get("method")), *setting_cells,
                     _sort_cell(row, report.sort_by),
                     *[_figure(row, k, 3) for k in dict.fromkeys(bound_keys)],
                     _short_cost(value_of(row, cost_key)), str(row.get("status"))])
    return header, body


def wrap_heading(text: str, width: int) -> list[str]:
    """`unparseable_rate ↓` in 12 columns -> [`unparseable_`, `rate ↓`]: break after `_` or at a space."""
    tokens = [t for t in re.split(r"(?<=_)|\s+", text) if t]
    lines: list[str] = []
    for token in tokens:
        joiner = "" if lines and lines[-1].endswith("_") else " "
        if lines and len(lines[-1]) + len(joiner) + len(token) <= width:
            lines[-1] += joiner + token
        else:
            lines.append(token)
    return lines or [text]


def _short_cost(value: float | None) -> str:
    return "-" if value is None else f"${value:.3g}"


def _print_report(console: Console, report: BoardReport, cost_key: str, wide: bool = False) -> None:
    title = f"tunebench leaderboard: {report.board.title}, ranked by {report.sort_by}"
    if wide:
        header, body = report.header, report.body
        table = Table(title=title)
    else:
        header, body = compact_table(report, cost_key)
        table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
    # Figures and names keep their width; a long heading goes onto two lines instead (at `_` or a space).
    cells_width = [max((len(cells[i]) for cells in body), default=1) for i in range(len(header))]
    headings = [wrap_heading(name, max(cells_width[i], 8)) for i, name in enumerate(header)]
    widths = [max(cells_width[i], *map(len, headings[i])) for i in range(len(header))]
    fits = sum(widths) + len(widths) - 1 <= TERMINAL_WIDTH
    for index, name in enumerate(header):
        left = name in ("model", "method", "status", "run keys", "settings")
        if wide:
            table.add_column(name, justify="left" if left else "right")
            continue
        flexible = not fits and name in ("model", "settings")
        table.add_column("\n".join(headings[index]), justify="left" if left else "right", overflow="fold",
                         no_wrap=not flexible, min_width=None if flexible else widths[index])
    for cells in body:
        table.add_row(*map(escape, cells))
    console.print(table)
    if report.note:
        console.print(escape(report.note), soft_wrap=True)
    verdict = report.verdict
    if verdict is not None:
        wanted = ", ".join(b.text() for b in report.bounds)
        if verdict.pick:
            console.print(f"[bold green]cheapest adequate ({escape(report.board.title)}; {escape(wanted)}):"
                          f"[/bold green] {escape(_label(verdict.pick))} at {_cost_text(verdict.pick, cost_key)} "
                          f"({cost_key})", soft_wrap=True)
        else:
            console.print(f"[bold red]no completed run meets every bound ({escape(wanted)}) on "
                          f"{escape(report.board.title)}[/bold red]", soft_wrap=True)
        for row, reason in verdict.rejected:
            console.print(escape(f"  not picked: {_label(row)}: {reason}"), soft_wrap=True)
    console.print("")


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
            from harness.wandb_leaderboard import log_leaderboard

            logged = log_leaderboard(reports, args, out.parent, figures[0] if figures else None)
            console.print(f"logged to W&B: {logged}", soft_wrap=True)
    except LeaderboardError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    for report in reports:
        _print_report(console, report, args.cost, wide=args.wide)
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
    from harness.pareto import write_pareto
    from harness.report import write_report

    png_path, html_path = figure_paths(out)
    try:
        png = write_pareto(reports, args.cost, png_path)
        html = write_report(reports, args, html_path)
    except OSError as exc:
        raise LeaderboardError(f"cannot write the plot or the report into {out.parent} ({exc.strerror or exc}); "
                               f"pass --out to a writable place, or --no-report") from None
    return [png, html]


def _fmt_p(p: float, n_resamples: int = 2000) -> str:
    return f"<{1 / n_resamples:g}" if p == 0 else f"{p:.4f}"


def _seeds_text(seeds: list) -> str:
    return ", ".join(map(str, seeds))


def print_comparison(console: Console, comparison: Comparison) -> None:
    console.print(escape(f"A: {_label(comparison.a)}; seeds used: {_seeds_text(comparison.seeds_a)}"))
    console.print(escape(f"B: {_label(comparison.b)}; seeds used: {_seeds_text(comparison.seeds_b)}"))
    if not comparison.shared_seeds:
        console.print("the two configurations share no seed: each side's scores are averaged over its own seeds")
    seeded = any("per_seed_diffs" in r for r in comparison.results.values())
    table = Table(title=f"paired bootstrap, B - A, {CONFIDENCE:.0%} CI over eval examples")
    columns = ["metric", "mean A", "mean B", "diff (B-A)", f"{CONFIDENCE:.0%} CI", "p", "n",
               *(["diff per seed"] if seeded else []), "verdict", "better"]
    for name in columns:
        table.add_column(name, justify="left" if name in ("metric", "verdict", "diff per seed") else "right")
    for name, r in comparison.results.items():
        cells = [name, f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}",
                 f"{r['mean_diff']:+.4f}", f"[{r['low']:+.4f}, {r['high']:+.4f}]", _fmt_p(r["p_value"]), str(r["n"])]
        if seeded:
            diffs = r.get("per_seed_diffs") or {}
            cells.append(", ".join(f"{s}: {d:+.3f}" for s, d in diffs.items()) or "-")
        cells += [verdict_of(r), "higher ↑" if r.get("higher_is_better", True) else "lower ↓"]
        table.add_row(*map(escape, cells))
    console.print(table)
    for name, why in comparison.skipped.items():
        console.print(escape(f"not compared: {name}: {why}"))
    if any(name.endswith(SAMPLE_MEAN_SUFFIX) for name in comparison.results):
        console.print("_sample_mean: a corpus metric (BLEU, chrF) compared on its mean per-example score")
    if seeded:
        console.print("diff per seed: B - A trained with the same seed. Where they disagree in sign, or the "
                      "difference is smaller than their spread, the seed alone moves the result that much.")


if __name__ == "__main__":
    sys.exit(main())
