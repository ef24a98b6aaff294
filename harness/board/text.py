"""A board as text: cells, intervals, the legend and the markdown report (shared by the terminal, the HTML page,
the Pareto plot and the W&B table)."""

from __future__ import annotations

from harness.board.boards import BoardReport, judged, mismatched_samples, scoring_of, scoring_text
from harness.board.ranking import cost_range_text, value_of
from harness.core.ledger import COMPLETED
from harness.core.stats import SAMPLE_MEAN_SUFFIX
from harness.metrics.keys import spec_of


def trained(row: dict) -> bool:
    """Whether the row trained (a row that trained nothing, `base`, records an empty `train`): its LoRA settings
    mean something only then."""
    return bool(row.get("train"))


def row_label(row: dict) -> str:
    qlora = (row.get("config") or {}).get("qlora")
    tuned = f" r={qlora.get('r')} lr={qlora.get('lr')}" if trained(row) and isinstance(qlora, dict) else ""
    seeds = row.get("seeds") or []
    runs = row.get("runs") or [row.get("run_key")]
    seeded = f" ({len(seeds)} seeds)" if len(seeds) > 1 else ""
    scored = f" ({scoring_text(row)})" if scoring_of(row) != ("generate", 0) and scoring_text(row) != "-" else ""
    return f"{row.get('model')}/{row.get('method')}{scored}{tuned}{seeded} [{', '.join(map(str, runs))}]"


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


def heading(name: str) -> str:
    spec = spec_of(name)
    return f"{name} {spec.arrow()}" if spec else name


def _seeds_cell(row: dict) -> str:
    if row.get("status") != COMPLETED:
        return "-"
    seeds = row.get("seeds") or [None]
    return str(len(seeds)) if len(seeds) > 1 else "1†"


def cost_text(row: dict, key: str) -> str:
    value = value_of(row, key)
    return "-" if value is None else f"${value:.6f}"


def figure_text(row: dict, key: str, digits: int) -> str:
    value = value_of(row, key)
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(rows: list[dict], metrics: list[str], cost_key: str,
               ci_metric: str | None = None, limit: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Table cells; with `ci_metric`, a column with its 95% CI (one seed) or its spread over seeds; with `limit`,
    of the first `limit` rows only (the samples check still sees them all)."""
    odd = {name: {r.get("run_key") for r in mismatched_samples(rows, name)} for name in metrics}
    interval_header = [f"{ci_metric} 95% CI / seed spread"] if ci_metric else []
    header = ["#", "model", "method", "scoring", "r", "seeds", "status", *map(heading, metrics), *interval_header,
              heading(cost_key), "$ run ↓", "train s ↓", "eval tok/s ↑", "peak GB ↓", "run keys"]
    body = []
    for index, row in enumerate(rows[:limit], start=1):
        qlora = (row.get("config") or {}).get("qlora")
        body.append([
            str(index),
            str(row.get("model")),
            str(row.get("method")),
            scoring_text(row),
            str(qlora.get("r", "")) if trained(row) and isinstance(qlora, dict) else "-",
            _seeds_cell(row),
            str(row.get("status")),
            *[_metric_cell(row, name, odd[name]) for name in metrics],
            *([interval_cell(row, ci_metric)] if ci_metric else []),
            cost_text(row, cost_key),
            cost_text(row, "usd_total"),
            figure_text(row, "train_s", 1) if trained(row) else "-",
            figure_text(row, "eval_tokens_per_s", 1),
            figure_text(row, "peak_memory_gb", 2),
            ", ".join(str(k) for k in (row.get("runs") or [row.get("run_key")])),
        ])
    return header, body


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
        if report.hidden:
            lines.append(f"\n{report.more_rows_note()}")
        if report.note:
            lines.append(f"\n{report.note}")
        if report.verdict is not None:
            wanted = ", ".join(b.text() for b in report.bounds)
            lines.append(f"\n### Cheapest adequate ({wanted}; cheapest by {cost_key})\n")
            lines.append(f"**{row_label(report.verdict.pick)}** at {cost_range_text(report.verdict.pick, cost_key)}"
                         + (f"; {report.verdict.tie_note}" if report.verdict.tie_note else "")
                         + (f"\n\n**Caution**: {report.verdict.caution}." if report.verdict.caution else "")
                         if report.verdict.pick else "**None**: no completed run meets every bound.")
            lines.append("\nNot picked:\n")
            listed, more = report.listed_rejections()
            lines += [f"- {row_label(row)}: {reason}" for row, reason in listed]
            lines += [f"- and {more} more rows below the table"] if more else []
        lines.append("")
    return "\n".join(lines) + "\n"
