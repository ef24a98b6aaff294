"""What the leaderboard decides, apart from how it prints: one board per dataset, seeds collapsed, rows ranked
the way each metric says is better, and the cheapest row that meets every floor and ceiling.

- A board holds the runs of one dataset scored on one eval set. Nothing is ranked, picked or compared across
  boards: a ROUGE-L on HR questions says nothing about an accuracy on a catalog.
- Runs that differ only in their training seed are one configuration: one row with the mean over seeds, the
  across-seed spread, the number of seeds and every run's key. A row of one seed says so.
- Every figure a bound or a sort names has a declared direction (harness/metrics/keys.py): `--min` is a floor
  on a higher-is-better figure, `--max` a ceiling on a lower-is-better one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from statistics import mean, stdev

from harness.core.ledger import COMPLETED, PRUNED
from harness.metrics.keys import KeySpec, spec_of


class LeaderboardError(ValueError):
    """A user mistake in the leaderboard's options or an empty ledger."""


@dataclass(frozen=True)
class Bound:
    key: str
    value: float
    spec: KeySpec

    @property
    def option(self) -> str:
        return "--min" if self.spec.higher_is_better else "--max"

    def text(self) -> str:
        return f"{self.key} {'>=' if self.spec.higher_is_better else '<='} {self.value:g}"

    def fails(self, value: float) -> bool:
        return value < self.value if self.spec.higher_is_better else value > self.value


def parse_bounds(floors: list[str], ceilings: list[str], known: list[str] | None = None,
                 known_text: str = "") -> list[Bound]:
    """--min KEY=V (floors, higher-is-better keys) and --max KEY=V (ceilings, lower-is-better keys); with
    `known`, a key outside it is refused (listing `known_text`)."""
    bounds = []
    for option, items, wants_higher in (("--min", floors, True), ("--max", ceilings, False)):
        for item in items:
            name, sep, raw = item.partition("=")
            name = name.strip()
            try:
                if not sep or not name:
                    raise ValueError
                value = float(raw)
            except ValueError:
                raise LeaderboardError(f"{option} {item!r}: expected METRIC=NUMBER, e.g. {option} "
                                       f"{'rougeL=0.3' if wants_higher else 'unparseable_rate=0.05'}") from None
            if not math.isfinite(value):
                raise LeaderboardError(f"{option} {item!r}: the bound must be a finite number")
            if known is not None and name not in known:
                raise LeaderboardError(f"unknown metric(s) {[name]}; the ledger has: {known_text or 'none'}")
            spec = spec_of(name)
            if spec is None:
                raise LeaderboardError(f"{option} {name}: this figure declares no direction (higher or lower is "
                                       f"better), so it cannot bound a pick")
            if spec.higher_is_better != wants_higher:
                other = "--max" if wants_higher else "--min"
                raise LeaderboardError(f"{option} {name}={raw}: {name} is {spec.better.value}-is-better, so a bound "
                                       f"on it is a {'ceiling' if wants_higher else 'floor'}: use {other} {name}={raw}")
            bounds.append(Bound(name, value, spec))
    return bounds


def value_of(row: dict, key: str) -> float | None:
    """A row's figure: a quality metric from `metrics`, or a cost / time / memory figure from `cost`."""
    spec = spec_of(key)
    section = row.get("cost") if spec is not None and spec.section == "cost" else row.get("metrics")
    value = (section or {}).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- boards: one per dataset and eval set ------------------------------------------------------------------

@dataclass
class Board:
    data: str
    eval_set: str | None
    rows: list[dict]  # latest record per run key (completed or not); seeds not yet collapsed

    @property
    def title(self) -> str:
        samples = {r.get("metric_samples") for r in self.rows if r.get("status") == COMPLETED} - {None}
        n = f", {samples.pop()} eval examples" if len(samples) == 1 else ""
        return f"data={self.data}" + (f" (eval set {self.eval_set[:8]}{n})" if self.eval_set else
                                      (f" ({n[2:]})" if n else ""))


def latest_per_key(records: list[dict]) -> list[dict]:
    """One row per run key: its latest completed record, else its latest record (a failure)."""
    best: dict[str, dict] = {}
    for record in records:
        key = record.get("run_key")
        current = best.get(key)
        if current is None or record.get("status") == COMPLETED or current.get("status") != COMPLETED:
            best[key] = record
    return latest_per_predictions(list(best.values()))


def latest_per_predictions(rows: list[dict]) -> list[dict]:
    """Completed rows scored from the same stored predictions (a re-scored sweep: same generations, a longer
    metric list, another run key) are one result: the latest scoring stands for it."""
    latest: dict[str, dict] = {}
    for row in rows:
        stage = ((row.get("stages") or {}).get("predictions") or {}).get("key")
        if row.get("status") == COMPLETED and stage:
            if stage not in latest or str(row.get("finished_at", "")) >= str(latest[stage].get("finished_at", "")):
                latest[stage] = row
    kept = {id(row) for row in latest.values()}
    return [row for row in rows if id(row) in kept or row.get("status") != COMPLETED
            or not ((row.get("stages") or {}).get("predictions") or {}).get("key")]


def boards(rows: list[dict]) -> list[Board]:
    """Rows split by dataset, then by eval set. A failed run (no eval set) joins its dataset's board when the
    dataset has one eval set, so its failure stays in view; else it gets a board of its own."""
    by_data: dict[str, list[dict]] = {}
    for row in rows:
        by_data.setdefault(str(row.get("data") or "?"), []).append(row)
    out = []
    for data, group in by_data.items():
        sets: dict[str | None, list[dict]] = {}
        for row in group:
            sets.setdefault(row.get("eval_set"), []).append(row)
        if None in sets and len(sets) == 2:
            unset = sets.pop(None)
            next(iter(sets.values())).extend(unset)
        out += [Board(data, eval_set, members) for eval_set, members in sets.items()]
    return out


# --- seeds: rows that differ only in their training seed are one configuration ------------------------------

SEED_PATHS = (("qlora", "seed"), ("seed",))


def _seed_holder(config: dict, path: tuple[str, ...]) -> dict | None:
    """The dict that holds the seed at `path` (e.g. config["qlora"] for ("qlora", "seed")), if any."""
    node = config
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def seed_of(row: dict):
    config = row.get("config") or {}
    for path in SEED_PATHS:
        holder = _seed_holder(config, path)
        if holder is not None and holder.get(path[-1]) is not None:
            return holder[path[-1]]
    return None


def configuration_id(row: dict) -> str:
    """Everything that decides a run's result except its seed: config, data bytes, harness version."""
    config = json.loads(json.dumps(row.get("config") or {}))
    for path in SEED_PATHS:
        holder = _seed_holder(config, path)
        if holder is not None:
            holder.pop(path[-1], None)
    payload = {"config": config, "data": row.get("data_hashes"), "model": row.get("model"),
               "method": row.get("method"), "harness": (row.get("versions") or {}).get("harness")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mean_dict(dicts: list[dict]) -> dict:
    keys = dict.fromkeys(k for d in dicts for k in d)
    out = {}
    for key in keys:
        values = [d.get(key) for d in dicts]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = mean(values)
        else:
            out[key] = values[0]
    return out


def collapse_seeds(rows: list[dict]) -> list[dict]:
    """Completed rows of one configuration become one row: figures are means over seeds; `seeds`, `runs` and
    `spread` ({key: {sd, min, max}}) say what was averaged. Rows that did not complete stay as they are."""
    groups: dict[str, list[dict]] = {}
    rest = []
    for row in rows:
        if row.get("status") == COMPLETED:
            groups.setdefault(configuration_id(row), []).append(row)
        else:
            rest.append(row)
    out = []
    for members in groups.values():
        members.sort(key=lambda r: str(seed_of(r)))
        if len(members) == 1:
            out.append({**members[0], "seeds": [seed_of(members[0])], "runs": [members[0].get("run_key")],
                        "spread": {}})
            continue
        metrics = _mean_dict([m.get("metrics") or {} for m in members])
        spread = {}
        for key in metrics:
            values = [m["metrics"][key] for m in members if isinstance((m.get("metrics") or {}).get(key), int | float)]
            if len(values) > 1:
                spread[key] = {"sd": stdev(values), "min": min(values), "max": max(values), "n": len(values)}
        out.append({**members[0], "metrics": metrics, "cost": _mean_dict([m.get("cost") or {} for m in members]),
                    "metrics_ci": {}, "seeds": [seed_of(m) for m in members],
                    "runs": [m.get("run_key") for m in members], "spread": spread})
    return out + rest


# --- ranking and the pick --------------------------------------------------------------------------------

def rank(rows: list[dict], metric: str) -> list[dict]:
    """Completed rows best first by `metric` in its declared direction, equal ones cheaper first, then by name (so
    every source of the same runs ranks them alike); the others after them, newest first."""
    spec = spec_of(metric)
    if spec is None:
        raise LeaderboardError(f"--sort {metric}: this figure declares no direction, so it cannot rank runs")
    done = [r for r in rows if r.get("status") == COMPLETED]
    rest = [r for r in rows if r.get("status") != COMPLETED]
    missing = [r for r in done if value_of(r, metric) is None]
    done = [r for r in done if value_of(r, metric) is not None]
    sign = -1 if spec.higher_is_better else 1
    done.sort(key=lambda r: (sign * value_of(r, metric), _num(value_of(r, "usd_total")), str(r.get("model")),
                             str(r.get("method")), str(r.get("run_key"))))
    rest.sort(key=lambda r: r.get("finished_at", ""), reverse=True)
    return done + missing + rest


@dataclass
class Verdict:
    pick: dict | None
    rejected: list[tuple[dict, str]] = field(default_factory=list)


def pick_cheapest(rows: list[dict], bounds: list[Bound] | dict[str, float], cost_key: str) -> Verdict:
    """The cheapest completed row that meets every bound, and why each other row was not picked."""
    if isinstance(bounds, dict):  # {metric: floor}
        bounds = parse_bounds([f"{k}={v}" for k, v in bounds.items()], [])
    adequate, verdict = [], Verdict(pick=None)
    for row in rows:
        if row.get("status") == PRUNED:  # stopped early by its search: never a result, whatever its curve shows
            step = (row.get("train") or {}).get("pruned_at_step")
            verdict.rejected.append((row, f"pruned by its search at training step {step}"))
            continue
        if row.get("status") != COMPLETED:
            verdict.rejected.append((row, f"{row.get('status')}: {row.get('error_type') or 'see ledger'}"))
            continue
        reasons = []
        for bound in bounds:
            value = value_of(row, bound.key)
            if value is None:
                reasons.append(f"{bound.key} not measured")
            elif bound.fails(value):
                op = "<" if bound.spec.higher_is_better else ">"
                reasons.append(f"{bound.key} {value:.3f} {op} {bound.value:g}")
        if reasons:
            verdict.rejected.append((row, "; ".join(reasons)))
        else:
            adequate.append(row)
    adequate.sort(key=lambda r: (_num(value_of(r, cost_key)), _num(value_of(r, "usd_total"))))
    if adequate:
        verdict.pick = adequate[0]
        verdict.rejected += [(r, f"adequate but costs more ({cost_key} {_cost(r, cost_key)} > "
                                 f"{_cost(verdict.pick, cost_key)})") for r in adequate[1:]]
    return verdict


def _num(value: float | None) -> float:
    return float("inf") if value is None else value


def _cost(row: dict, key: str) -> str:
    value = value_of(row, key)
    return "-" if value is None else f"${value:.6f}"
