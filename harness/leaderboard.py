"""`python -m harness.leaderboard`: rank the ledger's runs and pick the cheapest one that is good enough.

    python -m harness.leaderboard --min rougeL=0.3 --min bleu=0.1

prints a ranked table, writes results/leaderboard.md, and names the cheapest completed run that meets
every floor, saying why each other run was not picked.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.ledger import COMPLETED, Ledger

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


def table_rows(rows: list[dict], metrics: list[str], cost_key: str) -> tuple[list[str], list[list[str]]]:
    header = ["#", "model", "method", "r", "status", *metrics, cost_key, "$ run", "train s", "eval tok/s",
              "peak GB", "run key"]
    body = []
    for index, row in enumerate(rows, start=1):
        m, c = row.get("metrics", {}), row.get("cost", {})
        trained = bool(row.get("train"))
        body.append([
            str(index),
            str(row.get("model")),
            str(row.get("method")),
            str(row.get("config", {}).get("qlora", {}).get("r", "")) if trained else "-",
            str(row.get("status")),
            *[f"{m[name]:.4f}" if name in m else "-" for name in metrics],
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
             f"cost on each run's hardware preset.\n",
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
    args = parser.parse_args(argv)
    # Wide enough for every column when piped to a file or CI log (rich assumes 80 there).
    console = Console(width=None if sys.stdout.isatty() else 220)
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
    ranked = rank(rows, sort_by)
    header, body = table_rows(ranked, metrics, args.cost)
    verdict = pick_cheapest(ranked, floors, args.cost) if floors else None
    out = args.out or args.ledger.parent / "leaderboard.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(header, body, verdict, floors, args.cost, args.ledger), encoding="utf-8")
    return header, body, verdict, out


if __name__ == "__main__":
    sys.exit(main())
