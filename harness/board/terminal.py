"""A board in the terminal: a compact table that fits its width, and a comparison of two configurations."""

from __future__ import annotations

import re

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.board.boards import BoardReport, scoring_text
from harness.board.compare import CONFIDENCE, Comparison, verdict_of
from harness.board.ranking import cost_range_text, value_of
from harness.board.text import ci_of, figure_text, heading, row_label, trained
from harness.core.ledger import COMPLETED
from harness.core.stats import SAMPLE_MEAN_SUFFIX

TERMINAL_WIDTH = 100


# Config paths that are not hyperparameters of a row (shown elsewhere, or the same within a board by definition).
# eval.scoring and eval.fewshot have a column of their own (records before them lack the keys).
NOT_SETTINGS = ("model.", "method.", "data.", "hardware.", "judge.", "tracker.", "qlora.seed", "seed", "fail_at",
                "eval.scoring", "eval.fewshot")


# The qlora keys a row that trains nothing still uses (how its base was loaded, how long a prompt may be); its other
# qlora keys are defaults it never used, shown as "-" so a base row does not read as trained for 3 epochs.
UNTRAINED_QLORA_KEYS = ("load_in_4bit", "bnb_4bit_", "max_length")


def applies(key: str, flat: dict, row: dict) -> bool:
    """Whether setting `key` had any effect on `row` (`flat`: its flat config)."""
    if key.startswith("qlora.") and not trained(row):
        return key.removeprefix("qlora.").startswith(UNTRAINED_QLORA_KEYS)
    if key == "eval.max_new_tokens":  # choice scoring generates nothing
        return flat.get("eval.scoring") != "choices"
    return True


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
        held = [repr(f[key]) for f, row in zip(flats, rows, strict=True)
                if f.get(key) is not None and applies(key, f, row)]
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
    settings = varying_settings(report.rows[:len(report.body)])
    names = _short_names(settings)
    joined = len(settings) > MAX_SETTING_COLUMNS
    bound_keys = [b.key for b in report.bounds if b.key not in (report.sort_by, cost_key)]
    header = ["#", "model", "method", "scoring", *(["settings"] if joined else [names[k] for k in settings]),
              f"{heading(report.sort_by)} 95% CI / seeds", *map(heading, dict.fromkeys(bound_keys)),
              COST_HEADINGS.get(cost_key, heading(cost_key)), "status"]
    body = []
    for index, row in enumerate(report.rows[:len(report.body)], start=1):
        flat = {**flat_config(row.get("config") or {}), "hardware": row.get("hardware")}
        values = [_setting_text(flat.get(k) if applies(k, flat, row) else None) for k in settings]
        setting_cells = [" ".join(f"{names[k]}={v}" for k, v in zip(settings, values, strict=True))] if joined \
            else values
        body.append([str(index), str(row.get("model")), str(row.get("method")), scoring_text(row), *setting_cells,
                     _sort_cell(row, report.sort_by),
                     *[figure_text(row, k, 3) for k in dict.fromkeys(bound_keys)],
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


def print_report(console: Console, report: BoardReport, cost_key: str, wide: bool = False) -> None:
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
        left = name in ("model", "method", "scoring", "status", "run keys", "settings")
        if wide:
            table.add_column(name, justify="left" if left else "right")
            continue
        flexible = not fits and name in ("model", "settings")
        table.add_column("\n".join(headings[index]), justify="left" if left else "right", overflow="fold",
                         no_wrap=not flexible, min_width=None if flexible else widths[index])
    for cells in body:
        table.add_row(*map(escape, cells))
    console.print(table)
    if report.hidden:
        console.print(escape(report.more_rows_note()), soft_wrap=True)
    if report.note:
        console.print(escape(report.note), soft_wrap=True)
    verdict = report.verdict
    if verdict is not None:
        wanted = ", ".join(b.text() for b in report.bounds)
        if verdict.pick:
            console.print(f"[bold green]cheapest adequate ({escape(report.board.title)}; {escape(wanted)}):"
                          f"[/bold green] {escape(row_label(verdict.pick))} at "
                          f"{escape(cost_range_text(verdict.pick, cost_key))} ({cost_key})", soft_wrap=True)
            if verdict.tie_note:
                console.print(escape(f"  {verdict.tie_note}"), soft_wrap=True)
            if verdict.caution:
                console.print(f"  [bold yellow]caution:[/bold yellow] {escape(verdict.caution)}", soft_wrap=True)
        else:
            console.print(f"[bold red]no completed run meets every bound ({escape(wanted)}) on "
                          f"{escape(report.board.title)}[/bold red]", soft_wrap=True)
        listed, more = report.listed_rejections()
        for row, reason in listed:
            console.print(escape(f"  not picked: {row_label(row)}: {reason}"), soft_wrap=True)
        if more:
            console.print(f"  and {more} more rows not picked, below the table", soft_wrap=True)
    console.print("")


def _fmt_p(p: float, n_resamples: int = 2000) -> str:
    return f"<{1 / n_resamples:g}" if p == 0 else f"{p:.4f}"


def _seeds_text(seeds: list) -> str:
    return ", ".join(map(str, seeds))


def print_comparison(console: Console, comparison: Comparison) -> None:
    console.print(escape(f"A: {row_label(comparison.a)}; seeds used: {_seeds_text(comparison.seeds_a)}"))
    console.print(escape(f"B: {row_label(comparison.b)}; seeds used: {_seeds_text(comparison.seeds_b)}"))
    if comparison.scoring_note:
        console.print(escape(comparison.scoring_note))
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
