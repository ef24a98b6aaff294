"""`python -m harness.leaderboard`: rank the ledger's runs and pick the cheapest one that is good enough.

    python -m harness.leaderboard --min rougeL=0.3 --min bleu=0.1

prints a ranked table (with a 95% bootstrap CI of the sort metric), writes results/leaderboard.md, and
names the cheapest completed run that meets every floor, saying why each other run was not picked.

    python -m harness.leaderboard --compare RUN_KEY_A RUN_KEY_B [--metric rougeL]

compares two runs on the same eval examples with a paired bootstrap: is B's difference from A real?
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.ledger import COMPLETED, Ledger
from harness.stats import SAMPLE_MEAN_SUFFIX, ci_name, paired_bootstrap, verdict

COST_KEYS = ("usd_per_1k_generations", "usd_total", "usd_train", "usd_eval")


class LeaderboardError(ValueError):
    """A user mistake in the leaderboard's options or an empty ledger."""


@dataclass
class Verdict:
    pick: dict | None
    rejected: list[tuple[dict, str]] = field(default_factory=list)


def latest_per_key(records: list[dict]) -> list[dict]:
    """One row per run key: its latest completed record, else its latest record (a failure)."""
    best: dict[str, dict] = {}
    for record in records:
        key = record.get("run_key")
        current = best.get(key)
        if current is None or record.get("status") == COMPLETED or current.get("status") != COMPLETED:
            best[key] = record
    return list(best.values())


def parse_floors(items: list[str]) -> dict[str, float]:
    floors = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            floors[name.strip()] = float(value)
        except ValueError:
            raise LeaderboardError(f"--min {item!r}: expected METRIC=NUMBER, e.g. --min rougeL=0.3") from None
    return floors


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
            detail = "; ".join(f"{r.get('model')}/{r.get('method')} [{r.get('run_key')}]: {_coverage(r, metric)}"
                               + (" <- differs" if r in odd else "") for r in having)
            raise LeaderboardError(
                f"{metric} was computed on different samples in different runs, so their means do not compare: "
                f"{detail}. Re-score the failed samples (judge replies are cached, so only they cost anything), "
                f"filter with --sweep, or pass --allow-different-samples to rank anyway (such rows are marked *).")


def rank(rows: list[dict], metric: str) -> list[dict]:
    """Completed runs by `metric`, best first; failed runs after them, newest first."""
    done = [r for r in rows if r.get("status") == COMPLETED]
    rest = [r for r in rows if r.get("status") != COMPLETED]
    done.sort(key=lambda r: r.get("metrics", {}).get(metric, float("-inf")), reverse=True)
    rest.sort(key=lambda r: r.get("finished_at", ""), reverse=True)
    return done + rest


def pick_cheapest(rows: list[dict], floors: dict[str, float], cost_key: str) -> Verdict:
    adequate, verdict = [], Verdict(pick=None)
    for row in rows:
        if row.get("status") != COMPLETED:
            verdict.rejected.append((row, f"{row.get('status')}: {row.get('error_type') or 'see ledger'}"))
            continue
        reasons = []
        for name, floor in floors.items():
            value = row.get("metrics", {}).get(name)
            if value is None:
                reasons.append(f"{name} not measured")
            elif value < floor:
                reasons.append(f"{name} {value:.3f} < {floor:g}")
        if reasons:
            verdict.rejected.append((row, "; ".join(reasons)))
        else:
            adequate.append(row)
    adequate.sort(key=lambda r: (r.get("cost", {}).get(cost_key, float("inf")), r.get("cost", {}).get("usd_total", 0)))
    if adequate:
        verdict.pick = adequate[0]
        pick_cost = _cost(verdict.pick, cost_key)
        verdict.rejected += [(r, f"adequate but costs more ({cost_key} {_cost(r, cost_key)} > {pick_cost})")
                             for r in adequate[1:]]
    return verdict


def _cost(row: dict, key: str) -> str:
    value = row.get("cost", {}).get(key)
    return "-" if value is None else f"${value:.6f}"


def _label(row: dict) -> str:
    qlora = row.get("config", {}).get("qlora", {})
    tuned = f" r={qlora.get('r')} lr={qlora.get('lr')}" if row.get("train") else ""
    return f"{row.get('model')}/{row.get('method')}{tuned} [{row.get('run_key')}]"


def ci_of(row: dict, metric: str) -> tuple[str, dict] | None:
    """(name, {mean, low, high, n}) of a row's bootstrap CI for `metric`, if the run recorded one."""
    cis = row.get("metrics_ci") or {}
    for name in (metric, metric + SAMPLE_MEAN_SUFFIX):
        if name in cis:
            return name, cis[name]
    return None


def _fmt_ci(ci: dict) -> str:
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _metric_cell(row: dict, name: str, odd: set[str]) -> str:
    """`0.8123`; `0.8123 (18/20)` when the judge failed on some samples; `*` when its samples differ from
    most rows' (only shown with --allow-different-samples)."""
    value = row.get("metrics", {}).get(name)
    if value is None:
        return "-"
    counts = judged(row, name)
    partial = f" ({counts['scored']}/{counts['scored'] + counts['failed']})" if counts and counts["failed"] else ""
    return f"{value:.4f}{partial}" + ("*" if row.get("run_key") in odd else "")


def table_rows(rows: list[dict], metrics: list[str], cost_key: str,
               ci_metric: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Table cells; with `ci_metric`, a column with its 95% CI (`mean [low, high]`) after the metrics."""
    odd = {name: {r.get("run_key") for r in mismatched_samples(rows, name)} for name in metrics}
    found = [ci for row in rows if ci_metric and (ci := ci_of(row, ci_metric))]
    ci_header = [f"{found[0][0]} 95% CI"] if found else []
    header = ["#", "model", "method", "r", "status", *metrics, *ci_header, cost_key, "$ run", "train s",
              "eval tok/s", "peak GB", "run key"]
    body = []
    for index, row in enumerate(rows, start=1):
        c = row.get("cost", {})
        trained = bool(row.get("train"))
        body.append([
            str(index),
            str(row.get("model")),
            str(row.get("method")),
            str(row.get("config", {}).get("qlora", {}).get("r", "")) if trained else "-",
            str(row.get("status")),
            *[_metric_cell(row, name, odd[name]) for name in metrics],
            *([_fmt_ci(ci[1]) if (ci := ci_of(row, ci_metric)) else "-"] if ci_header else []),
            _cost(row, cost_key),
            _cost(row, "usd_total"),
            f"{c['train_s']:.1f}" if trained and "train_s" in c else "-",
            f"{c['eval_tokens_per_s']:.1f}" if "eval_tokens_per_s" in c else "-",
            f"{c['peak_memory_gb']:.2f}" if "peak_memory_gb" in c else "-",
            str(row.get("run_key")),
        ])
    return header, body


def render_markdown(header, body, verdict: Verdict | None, floors, cost_key: str, source: Path) -> str:
    lines = [f"# Leaderboard\n\nSource: `{source}`. Metrics are 0..1, higher is better; "
             f"cost on each run's hardware preset. A 95% CI is a bootstrap interval over eval examples, "
             f"`mean [low, high]`; `_sample_mean` marks a corpus metric (BLEU, chrF) whose interval is "
             f"for the mean of per-example scores. `(18/20)`: the LLM judge scored 18 of 20 samples (the mean is over "
             f"those; failures are in the ledger's `judge` field). `*`: computed on other samples than most rows. "
             f"Compare two runs with `--compare KEY_A KEY_B`.\n",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    if verdict is not None:
        wanted = ", ".join(f"{k} >= {v:g}" for k, v in floors.items())
        lines.append(f"\n## Cheapest adequate run ({wanted}; cheapest by {cost_key})\n")
        lines.append(f"**{_label(verdict.pick)}** at {_cost(verdict.pick, cost_key)}" if verdict.pick
                     else "**None**: no completed run meets every floor.")
        lines.append("\nNot picked:\n")
        lines += [f"- {_label(row)}: {reason}" for row, reason in verdict.rejected]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", type=Path, default=Path("results/runs.jsonl"), help="ledger to read")
    parser.add_argument("--out", type=Path, default=None, help="markdown report (default: beside the ledger)")
    parser.add_argument("--min", dest="floors", action="append", default=[], metavar="METRIC=VALUE",
                        help="a floor every picked run must meet; repeatable, e.g. --min rougeL=0.3")
    parser.add_argument("--sort", default=None, help="metric to rank by (default: the first floor, else rougeL)")
    parser.add_argument("--cost", choices=COST_KEYS, default="usd_per_1k_generations",
                        help="what 'cheapest' means (default: serving cost per 1000 answers)")
    parser.add_argument("--sweep", default=None, help="only runs of this sweep id")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_KEY_A", "RUN_KEY_B"), default=None,
                        help="paired bootstrap of run B against run A on their shared eval examples "
                             "(unique prefixes of run keys are accepted)")
    parser.add_argument("--metric", default=None, help="with --compare: only this per-sample metric")
    parser.add_argument("--allow-different-samples", action="store_true",
                        help="rank (or compare) on a metric even where runs were scored on different samples "
                             "(e.g. the judge failed on some); such rows are marked *")
    args = parser.parse_args(argv)
    # Wide enough for every column when piped to a file or CI log (rich assumes 80 there).
    console = Console(width=None if sys.stdout.isatty() else 220)
    if args.metric and not args.compare:
        console.print("[red]error:[/red] --metric goes with --compare; rank with --sort METRIC")
        return 2
    if args.compare:
        try:
            comparison = compare(args.ledger, *args.compare, metric=args.metric,
                                 allow_different_samples=args.allow_different_samples)
        except LeaderboardError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            return 2
        print_comparison(console, comparison)
        return 0
    try:
        report = build(args)
    except LeaderboardError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    header, body, verdict, out = report
    table = Table(title=f"tunebench leaderboard ({args.ledger})")
    for name in header:
        table.add_column(name, justify="right" if name not in ("model", "method", "status", "run key") else "left")
    for cells in body:
        table.add_row(*map(escape, cells))
    console.print(table)
    if verdict is not None:
        if verdict.pick:
            console.print(f"[bold green]cheapest adequate:[/bold green] {escape(_label(verdict.pick))} "
                          f"at {_cost(verdict.pick, args.cost)} ({args.cost})")
        else:
            console.print("[bold red]no completed run meets every floor[/bold red]")
        for row, reason in verdict.rejected:
            console.print(escape(f"  not picked: {_label(row)}: {reason}"))
    console.print(f"written: {out}")
    return 0


def build(args):
    floors = parse_floors(args.floors)
    records = Ledger(args.ledger).records()
    if args.sweep:
        records = [r for r in records if r.get("sweep_id") == args.sweep]
    if not records:
        raise LeaderboardError(f"no runs in {args.ledger}{' for sweep ' + args.sweep if args.sweep else ''}; "
                               "run a sweep first, e.g. python -m harness -m model=smollm2_135m method=base,instruct")
    rows = latest_per_key(records)
    metrics = known_metrics(rows)
    unknown = [name for name in [*floors, *([args.sort] if args.sort else [])] if name not in metrics]
    if unknown:
        raise LeaderboardError(f"unknown metric(s) {unknown}; the ledger has: {', '.join(metrics) or 'none'}")
    sort_by = args.sort or next(iter(floors), "rougeL" if "rougeL" in metrics else (metrics or [""])[0])
    if not args.allow_different_samples:
        check_same_samples(rows, [sort_by, *floors])
    ranked = rank(rows, sort_by)
    header, body = table_rows(ranked, metrics, args.cost, ci_metric=sort_by)
    verdict = pick_cheapest(ranked, floors, args.cost) if floors else None
    out = args.out or args.ledger.parent / "leaderboard.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(header, body, verdict, floors, args.cost, args.ledger), encoding="utf-8")
    return header, body, verdict, out


# Fields of a predictions-*.jsonl row that are not per-sample metric scores.
ROW_FIELDS = frozenset({"id", "question", "reference", "prediction", "generated_tokens"})
CONFIDENCE = 0.95


@dataclass
class Comparison:
    a: dict
    b: dict
    results: dict[str, dict]  # metric name -> paired_bootstrap result
    # metric name -> why it was not compared (scored on different samples, e.g. judge failures)
    skipped: dict[str, str] = field(default_factory=dict)


def resolve_run(records: list[dict], prefix: str, ledger: Path) -> dict:
    """The latest completed record whose run key is `prefix` or starts with it (uniquely)."""
    keys = list(dict.fromkeys(r.get("run_key") for r in records if str(r.get("run_key", "")).startswith(prefix)))
    if prefix in keys:
        keys = [prefix]
    if not keys:
        raise LeaderboardError(f"no run key starting with {prefix!r} in {ledger}")
    if len(keys) > 1:
        raise LeaderboardError(f"run key prefix {prefix!r} is ambiguous in {ledger}: {', '.join(sorted(keys))}")
    done = [r for r in records if r.get("run_key") == keys[0] and r.get("status") == COMPLETED]
    if not done:
        raise LeaderboardError(f"run {keys[0]} has no completed record in {ledger}, so no predictions to compare")
    return done[-1]


def load_predictions(record: dict, ledger: Path) -> list[dict]:
    """The run's per-example rows; also looked for beside the ledger, in case results/ was moved."""
    stored = record.get("predictions_file")
    if not stored:
        raise LeaderboardError(f"run {record.get('run_key')} records no predictions file")
    candidates = [Path(stored), ledger.parent / "runs" / str(record.get("run_key")) / Path(stored).name]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise LeaderboardError(f"predictions file of run {record.get('run_key')} not found: {stored}")
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise LeaderboardError(f"cannot read predictions file {path}: {exc}") from None


def _is_score(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _by_id(rows: list[dict], record: dict) -> dict[str, dict]:
    by_id = {}
    for row in rows:
        if row.get("id") in by_id:
            raise LeaderboardError(f"run {record.get('run_key')}: example id {row.get('id')!r} appears twice")
        by_id[row.get("id")] = row
    return by_id


def _some(ids) -> str:
    ids = sorted(map(str, ids))
    return ", ".join(ids[:10]) + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")


def paired_rows(a: dict, b: dict, ledger: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Two completed runs' prediction rows by example id, checked to cover the same examples with the same
    references (anything paired across runs, a bootstrap or a judge's comparison, needs that)."""
    rows_a, rows_b = _by_id(load_predictions(a, ledger), a), _by_id(load_predictions(b, ledger), b)
    sets = f"A={a.get('run_key')} (data={a.get('data')}, {len(rows_a)} examples), " \
           f"B={b.get('run_key')} (data={b.get('data')}, {len(rows_b)} examples)"
    only_a, only_b = rows_a.keys() - rows_b.keys(), rows_b.keys() - rows_a.keys()
    if only_a or only_b:
        raise LeaderboardError(
            f"different eval sets cannot be compared: {sets}; "
            + "; ".join(f"ids only in {side}: {_some(ids)}" for side, ids in (("A", only_a), ("B", only_b)) if ids))
    changed = [i for i in rows_a if rows_a[i].get("reference") != rows_b[i].get("reference")]
    if changed:
        raise LeaderboardError(f"different eval sets cannot be compared: {sets}; same ids but different "
                               f"references for: {_some(changed)}")
    return rows_a, rows_b


def compare(ledger: Path, key_a: str, key_b: str, metric: str | None = None, n_resamples: int = 2000,
            seed: int = 0, allow_different_samples: bool = False) -> Comparison:
    """Paired bootstrap of every per-sample metric the two runs share, on the same eval examples."""
    records = Ledger(ledger).records()
    if not records:
        raise LeaderboardError(f"no runs in {ledger}")
    a, b = resolve_run(records, key_a, ledger), resolve_run(records, key_b, ledger)
    rows_a, rows_b = paired_rows(a, b, ledger)
    ids = list(rows_a)
    keys = [k for k in dict.fromkeys(k for i in ids for k in (*rows_a[i], *rows_b[i]))
            if k not in ROW_FIELDS and not k.endswith("_error")
            and any(_is_score(rows_a[i].get(k)) for i in ids) and any(_is_score(rows_b[i].get(k)) for i in ids)]
    if metric is not None:
        wanted = [k for k in keys if metric in (k, k + SAMPLE_MEAN_SUFFIX) or metric == ci_name(k, a.get("metrics", {}).get(k))]
        if not wanted:
            raise LeaderboardError(f"metric {metric!r} is not a per-sample score of both runs; they share: "
                                   f"{', '.join(keys) or 'none'}")
        keys = wanted
    results, skipped = {}, {}
    for key in keys:
        scored_a = [i for i in ids if _is_score(rows_a[i].get(key))]
        both = [i for i in scored_a if _is_score(rows_b[i].get(key))]
        # Named as its interval is in run A's record: from A's corpus value and A's own per-sample mean.
        name = ci_name(key, a.get("metrics", {}).get(key), sum(rows_a[i][key] for i in scored_a) / len(scored_a))
        if len(both) < len(ids):
            scored_b = sum(_is_score(rows_b[i].get(key)) for i in ids)
            what = f"scored on different samples (A: {len(scored_a)}, B: {scored_b} of {len(ids)}; both: {len(both)})"
            if not allow_different_samples or not both:
                skipped[name] = what + ("" if not both else "; --allow-different-samples compares the shared ones")
                continue
            name += f" (on {len(both)} shared)"
        results[name] = paired_bootstrap([rows_a[i][key] for i in both], [rows_b[i][key] for i in both],
                                         n_resamples=n_resamples, confidence=CONFIDENCE, seed=seed)
    if not results and not skipped:
        raise LeaderboardError("the two runs share no per-sample metric scores")
    return Comparison(a=a, b=b, results=results, skipped=skipped)


def _fmt_p(p: float, n_resamples: int = 2000) -> str:
    return f"<{1 / n_resamples:g}" if p == 0 else f"{p:.4f}"


def print_comparison(console: Console, comparison: Comparison) -> None:
    console.print(escape(f"A: {_label(comparison.a)}"))
    console.print(escape(f"B: {_label(comparison.b)}"))
    table = Table(title=f"paired bootstrap, B - A, {CONFIDENCE:.0%} CI over eval examples")
    for name in ("metric", "mean A", "mean B", "diff (B-A)", f"{CONFIDENCE:.0%} CI", "p", "n", "verdict"):
        table.add_column(name, justify="left" if name in ("metric", "verdict") else "right")
    for name, r in comparison.results.items():
        cells = [name, f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}", f"{r['mean_diff']:+.4f}",
                 f"[{r['low']:+.4f}, {r['high']:+.4f}]", _fmt_p(r["p_value"]), str(r["n"]), verdict(r, CONFIDENCE)]
        table.add_row(*map(escape, cells))
    console.print(table)
    for name, why in comparison.skipped.items():
        console.print(escape(f"not compared: {name}: {why}"))
    if any(name.endswith(SAMPLE_MEAN_SUFFIX) for name in comparison.results):
        console.print("_sample_mean: a corpus metric (BLEU, chrF) compared on its mean per-example score")


if __name__ == "__main__":
    sys.exit(main())
