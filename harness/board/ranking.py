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
from statistics import fmean

import orjson

from harness.core.ledger import COMPLETED, PRUNED
from harness.core.stats import SAMPLE_MEAN_SUFFIX
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
    """One dataset's runs on one eval set, as they are ranked: the latest record per run key, seeds collapsed
    (collapse_seeds: one row per configuration, then the runs that did not complete)."""

    data: str
    eval_set: str | None
    rows: list[dict]
    title: str
    # The metric names its records carry, in order of first appearance.
    metrics: list[str]


def board_title(data: str, eval_set: str | None, records: list[dict]) -> str:
    samples = {r.get("metric_samples") for r in records if r.get("status") == COMPLETED} - {None}
    n = f", {samples.pop()} eval examples" if len(samples) == 1 else ""
    return f"data={data}" + (f" (eval set {eval_set[:8]}{n})" if eval_set else (f" ({n[2:]})" if n else ""))


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
    """Rows split by dataset, then by eval set, each board's seeds collapsed. A failed run (no eval set) joins
    its dataset's board when the dataset has one eval set, so its failure stays in view; else it gets a board of
    its own."""
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
        out += [Board(data, eval_set, collapse_seeds(members), board_title(data, eval_set, members),
                      list(dict.fromkeys(k for m in members for k in m.get("metrics", {}))))
                for eval_set, members in sets.items()]
    return out


def dataset_boards(records: list[dict]) -> list[Board]:
    """The boards of `records` (in ledger order), one dataset at a time: the latest record per run key of each
    dataset (a run key names its dataset: the data config is hashed into it), split by eval set, seeds
    collapsed."""
    by_data: dict[str, list[dict]] = {}
    for record in records:
        by_data.setdefault(str(record.get("data") or "?"), []).append(record)
    return [board for group in by_data.values() for board in boards(latest_per_key(group))]


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


# A slim record (harness/board/ledger_index.py) carries its configuration_id, computed from the whole record.
CONFIGURATION_KEY = "configuration_id"


def _without_seed(config: dict) -> dict:
    """The config with the seed taken out, copying only the dicts on a seed's path."""
    config = dict(config)
    for path in SEED_PATHS:
        node = config
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                break
            node[part] = dict(node[part])
            node = node[part]
        else:
            node.pop(path[-1], None)
    return config


def configuration_id(row: dict) -> str:
    """Everything that decides a run's result except its seed: config, data bytes, harness version."""
    if row.get(CONFIGURATION_KEY):
        return row[CONFIGURATION_KEY]
    payload = {"config": _without_seed(row.get("config") or {}), "data": row.get("data_hashes"),
               "model": row.get("model"), "method": row.get("method"),
               "harness": (row.get("versions") or {}).get("harness")}
    # orjson: a year of sweeps is 50,000 of these; bytes differ from json.dumps's, so only compare ids made here.
    try:
        text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        text = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def one_per_seed(members: list[dict]) -> list[dict]:
    """Records of one configuration and one seed (a re-run under another run key) are one seed: the latest
    finished stands for it."""
    latest: dict[str, dict] = {}
    for member in members:
        seed = repr(seed_of(member))
        if seed not in latest or str(member.get("finished_at", "")) >= str(latest[seed].get("finished_at", "")):
            latest[seed] = member
    return list(latest.values())


def _mean_dict(dicts: list[dict]) -> dict:
    keys = dict.fromkeys(k for d in dicts for k in d)
    out = {}
    for key in keys:
        values = [d.get(key) for d in dicts]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = fmean(values)
        else:
            out[key] = values[0]
    return out


def _stdev(values: list[float]) -> float:
    """The sample standard deviation in floats (statistics.stdev's exact fractions cost seconds on a year of
    sweeps)."""
    centre = fmean(values)
    return math.sqrt(math.fsum((v - centre) ** 2 for v in values) / (len(values) - 1))


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
        members = sorted(one_per_seed(members), key=lambda r: str(seed_of(r)))
        if len(members) == 1:
            out.append({**members[0], "seeds": [seed_of(members[0])], "runs": [members[0].get("run_key")],
                        "spread": {}})
            continue
        metrics = _mean_dict([m.get("metrics") or {} for m in members])
        spread = {}
        for key in metrics:
            values = [m["metrics"][key] for m in members if isinstance((m.get("metrics") or {}).get(key), int | float)]
            if len(values) > 1:
                spread[key] = {"sd": _stdev(values), "min": min(values), "max": max(values), "n": len(values)}
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
    # Adequate rows whose cost range overlaps the pick's (equal in cost), the pick first; one row: no tie.
    equal_cost: list[dict] = field(default_factory=list)
    # How the pick was made among rows equal in cost ("" when it is simply the cheapest).
    tie_note: str = ""
    # The bounds the pick meets on its point estimate only: its interval reaches past the bar ("" when none).
    caution: str = ""


# Simpler first: what the pick prefers among rows equal in cost and quality. A model as shipped, then shown
# examples, then shown retrieved text, then trained; a non-LLM floor is simpler than any of them.
SIMPLER_FIRST = ("baseline", "base", "base_rag", "causal", "causal_rag", "instruct", "instruct_rag")


def complexity(row: dict) -> tuple[int, int]:
    """(method's place in SIMPLER_FIRST, 1 if few-shot) so base < base few-shot < base_rag < causal < instruct;
    an unknown method comes after every known one."""
    method = str(row.get("method"))
    place = SIMPLER_FIRST.index(method) if method in SIMPLER_FIRST else len(SIMPLER_FIRST)
    fewshot = ((row.get("config") or {}).get("eval") or {}).get("fewshot") or 0
    return place, 1 if isinstance(fewshot, int) and fewshot > 0 else 0


def cost_range(row: dict, key: str) -> tuple[float, float] | None:
    """(low, high) of a row's cost: the range over its generation batches' rates (`<key>_low` / `<key>_high`,
    harness/cell/cost.py), or (value, value) for a record without one (written before batches were timed, a
    single batch, or a cost figure that has no range)."""
    value = value_of(row, key)
    if value is None:
        return None
    cost = row.get("cost") or {}
    low, high = cost.get(f"{key}_low"), cost.get(f"{key}_high")
    if isinstance(low, int | float) and isinstance(high, int | float) and low <= value <= high:
        return float(low), float(high)
    return value, value


def has_cost_range(row: dict, key: str) -> bool:
    found = cost_range(row, key)
    return found is not None and found[0] < found[1]


def quality_range(row: dict, metric: str) -> tuple[float, float] | None:
    """(low, high) of a row's quality: its 95% bootstrap CI (one seed), its range over seeds, else its value."""
    value = value_of(row, metric)
    if value is None:
        return None
    spread = (row.get("spread") or {}).get(metric)
    if spread:
        return float(spread["min"]), float(spread["max"])
    cis = row.get("metrics_ci") or {}
    ci = cis.get(metric) or cis.get(metric + SAMPLE_MEAN_SUFFIX)
    if isinstance(ci, dict) and isinstance(ci.get("low"), int | float) and isinstance(ci.get("high"), int | float):
        return float(ci["low"]), float(ci["high"])
    return value, value


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def pick_cheapest(rows: list[dict], bounds: list[Bound] | dict[str, float], cost_key: str,
                  quality: str | None = None) -> Verdict:
    """The cheapest completed row that meets every bound, and why each other row was not picked.

    Cost is measured wall time, which a busy machine stretches; a margin smaller than the cost's own spread is
    no verdict. So rows whose cost ranges overlap the cheapest's are equal in cost, and among them the pick is the
    best on `quality` (rows whose quality intervals overlap are equal in it too), then the simpler method, then
    the lower cost."""
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
                reach = _interval_across_bar(row, bound)
                reasons.append(f"{bound.key} {value:.3f} {op} {bound.value:g}"
                               + (f" (its 95% interval {reach} reaches the bar: not shown to fall short)"
                                  if reach else ""))
        if reasons:
            verdict.rejected.append((row, "; ".join(reasons)))
        else:
            adequate.append(row)
    if not adequate:
        return verdict
    adequate.sort(key=lambda r: (_num(value_of(r, cost_key)), _num(value_of(r, "usd_total"))))
    cheapest = adequate[0]
    cheapest_range = cost_range(cheapest, cost_key) or (math.inf, math.inf)
    equal = [r for r in adequate if _overlap(cost_range(r, cost_key) or (math.inf, math.inf), cheapest_range)]
    pick, tied_quality, by_quality = _among_equal_cost(equal, quality)
    verdict.pick, verdict.equal_cost = pick, [pick, *[r for r in equal if r is not pick]]
    if len(equal) > 1:
        others = ", ".join(f"{r.get('model')}/{r.get('method')}" for r in equal if r is not pick)
        how = ("the simpler method" if not by_quality
               else f"the simpler method (equal in {quality} too: intervals overlap)" if tied_quality
               else f"the best {quality}")
        verdict.tie_note = f"tie on cost with {others} (their {cost_key} ranges overlap); picked by {how}"
    straddled = [f"{bound.key} {value_of(pick, bound.key):.3f} {interval}" for bound in bounds
                 if (interval := _interval_across_bar(pick, bound))]
    if straddled:
        verdict.caution = (f"meets {', '.join(b.text() for b in bounds)} on its point estimate, but the 95% "
                           f"interval reaches past the bar ({'; '.join(straddled)}): not shown with confidence; "
                           "more eval examples or seeds would narrow it")
    pick_cost = cost_range_text(pick, cost_key)
    equal_ids, tied_ids = {id(r) for r in equal}, {id(r) for r in tied_quality}
    for row in adequate:
        if row is pick:
            continue
        if id(row) in equal_ids:
            if id(row) in tied_ids or not by_quality:
                also = f" and in {quality}" if by_quality else ""
                why = (f"equal in cost ({cost_range_text(row, cost_key)} overlaps {pick_cost}){also}; the pick is "
                       f"the simpler method")
            else:
                why = (f"equal in cost ({cost_range_text(row, cost_key)} overlaps {pick_cost}) but worse "
                       f"{quality} ({_quality_text(row, quality)} vs {_quality_text(pick, quality)})")
        else:
            why = f"adequate but costs more ({cost_key} {cost_range_text(row, cost_key)} > {pick_cost})"
        verdict.rejected.append((row, why))
    return verdict


def _interval_across_bar(row: dict, bound: Bound) -> str:
    """The row's quality interval as text when the bar lies inside it (one end meets `bound`, the other does
    not), else "": a pick that meets the bar, or a row that falls short of it, on its point estimate alone."""
    interval = quality_range(row, bound.key)
    if interval is None or bound.fails(interval[0]) == bound.fails(interval[1]):
        return ""
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _among_equal_cost(equal: list[dict], quality: str | None) -> tuple[dict, list[dict], bool]:
    """(pick, rows equal to it in quality, whether quality was compared) among rows equal in cost (cheapest
    first). Without a quality figure on every row, the simpler method decides alone."""
    if len(equal) == 1:
        return equal[0], [], False
    if quality is None or any(value_of(r, quality) is None for r in equal):
        return min(equal, key=lambda r: (complexity(r), equal.index(r))), [], False
    spec = spec_of(quality)
    sign = -1 if spec is None or spec.higher_is_better else 1
    best = min(equal, key=lambda r: sign * value_of(r, quality))
    best_range = quality_range(best, quality)
    same = [r for r in equal if _overlap(quality_range(r, quality), best_range)]
    pick = min(same, key=lambda r: (complexity(r), equal.index(r)))
    return pick, [r for r in same if r is not pick], True


def cost_range_text(row: dict, key: str) -> str:
    """`$0.012000 [0.010000, 0.015000]`: the cost and its range over generation batches, or the lone value."""
    found = cost_range(row, key)
    if found is None:
        return "-"
    if found[0] < found[1]:
        return f"${value_of(row, key):.6f} [{found[0]:.6f}, {found[1]:.6f}]"
    return f"${found[0]:.6f} (no cost range recorded)"


def _quality_text(row: dict, metric: str) -> str:
    low, high = quality_range(row, metric)
    return f"{value_of(row, metric):.3f} [{low:.3f}, {high:.3f}]"


def _num(value: float | None) -> float:
    return float("inf") if value is None else value


def _cost(row: dict, key: str) -> str:
    value = value_of(row, key)
    return "-" if value is None else f"${value:.6f}"
