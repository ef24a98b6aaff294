"""`python -m harness.leaderboard --compare A B`: is configuration B really better than A on the same examples?

Both runs must be on the same dataset and eval set (same ids, same references): nothing is compared across
datasets. A run stands for its configuration: when the ledger holds the same configuration trained with other
seeds, every seed the two share is used (all of each side's seeds where they share none). Each example's
score is averaged over those seeds per side, and a paired bootstrap over examples gives the interval of B - A.
The spread across seeds is reported beside it: the difference of each seed alone. A difference whose
interval holds zero is "no significant difference", whatever its sign; "better" follows each metric's
declared direction (a lower unparseable rate is better).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.board.boards import scoring_of, scoring_text
from harness.board.ranking import LeaderboardError, configuration_id, seed_of
from harness.core.ledger import COMPLETED, Ledger
from harness.core.stats import SAMPLE_MEAN_SUFFIX, ci_name, paired_bootstrap, verdict
from harness.metrics.keys import spec_of

# Fields of a predictions-*.jsonl row that are not per-sample metric scores.
ROW_FIELDS = frozenset({"id", "question", "reference", "prediction", "generated_tokens"})
CONFIDENCE = 0.95


@dataclass
class Comparison:
    a: dict
    b: dict
    results: dict[str, dict]  # metric name -> paired_bootstrap result (+ per_seed_diffs, better)
    # metric name -> why it was not compared (scored on different samples, e.g. judge failures)
    skipped: dict[str, str] = field(default_factory=dict)
    seeds_a: list = field(default_factory=list)
    seeds_b: list = field(default_factory=list)
    shared_seeds: bool = True
    # Set when A and B obtained their answers differently (eval.scoring, eval.fewshot): the pairs are the same
    # examples and references, but a difference measures the scoring as much as the model.
    scoring_note: str = ""


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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeaderboardError(f"cannot read predictions file {path}: {exc}") from None


def _is_score(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def rows_by_id(rows: list[dict], record: dict) -> dict[str, dict]:
    """A run's prediction rows by example id; an id that appears twice is refused (nothing could pair it)."""
    by_id = {}
    for row in rows:
        if row.get("id") in by_id:
            raise LeaderboardError(f"run {record.get('run_key')}: example id {row.get('id')!r} appears twice")
        by_id[row.get("id")] = row
    return by_id


def _some(ids) -> str:
    ids = sorted(map(str, ids))
    return ", ".join(ids[:10]) + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")


def check_same_dataset(a: dict, b: dict) -> None:
    if a.get("data") != b.get("data"):
        raise LeaderboardError(f"runs on different datasets are never compared: A={a.get('run_key')} is on "
                               f"data={a.get('data')}, B={b.get('run_key')} on data={b.get('data')}")


def paired_rows(a: dict, b: dict, ledger: Path, load=None) -> tuple[dict[str, dict], dict[str, dict]]:
    """Two completed runs' prediction rows by example id, checked to be on the same dataset and to cover the
    same examples with the same references (anything paired across runs, a bootstrap or a judge's comparison,
    needs that)."""
    check_same_dataset(a, b)
    load = load or (lambda record: load_predictions(record, ledger))
    rows_a, rows_b = rows_by_id(load(a), a), rows_by_id(load(b), b)
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


def seed_runs(records: list[dict], run: dict) -> dict:
    """seed -> the latest completed record of `run`'s configuration with that seed (run's own seed included)."""
    wanted = configuration_id(run)
    out = {}
    for record in records:
        if record.get("status") == COMPLETED and configuration_id(record) == wanted:
            out[seed_of(record)] = record
    out[seed_of(run)] = run
    return out


def score_keys(rows_a: dict, rows_b: dict) -> list[str]:
    """The per-sample scores two runs' rows (by id) both hold a number for somewhere: what can be compared."""
    ids = list(rows_a)
    return [k for k in dict.fromkeys(k for i in ids for k in (*rows_a[i], *rows_b[i]))
            if k not in ROW_FIELDS and not k.endswith("_error")
            and any(_is_score(rows_a[i].get(k)) for i in ids) and any(_is_score(rows_b[i].get(k)) for i in ids)]


def compare(ledger: Path, key_a: str, key_b: str, metric: str | None = None, n_resamples: int = 2000,
            seed: int = 0, allow_different_samples: bool = False, records: list[dict] | None = None,
            load=None) -> Comparison:
    """Paired bootstrap of every per-sample metric the two configurations share, on the same eval examples,
    over the seeds they share. `records` and `load(record) -> predictions rows` read another source than the
    ledger file (a W&B project; `ledger` then only names it in messages)."""
    records = Ledger(ledger).records() if records is None else records
    if not records:
        raise LeaderboardError(f"no runs in {ledger}")
    a, b = resolve_run(records, key_a, ledger), resolve_run(records, key_b, ledger)
    if a.get("run_key") == b.get("run_key"):
        raise LeaderboardError(f"--compare names the same run twice ({a.get('run_key')}); name two different runs")
    check_same_dataset(a, b)
    runs_a, runs_b = seed_runs(records, a), seed_runs(records, b)
    if configuration_id(a) == configuration_id(b):
        runs_a, runs_b = {seed_of(a): a}, {seed_of(b): b}  # two seeds of one configuration: compare just those
    shared = [s for s in runs_a if s in runs_b]
    seeds_a, seeds_b = (shared, shared) if shared else (list(runs_a), list(runs_b))
    # Every seed's rows are checked against A's; each predictions file is read once.
    read = load or (lambda record: load_predictions(record, ledger))
    loaded: dict[str, list[dict]] = {}

    def load_once(record: dict) -> list[dict]:
        if record.get("run_key") not in loaded:
            loaded[record.get("run_key")] = read(record)
        return loaded[record.get("run_key")]

    rows_a = {s: paired_rows(a, runs_a[s], ledger, load_once)[1] for s in seeds_a}
    rows_b = {s: paired_rows(a, runs_b[s], ledger, load_once)[1] for s in seeds_b}
    first_a, first_b = rows_a[seeds_a[0]], rows_b[seeds_b[0]]
    ids = list(first_a)
    keys = score_keys(first_a, first_b)
    if metric is not None:
        wanted = [k for k in keys if metric in (k, k + SAMPLE_MEAN_SUFFIX) or metric == ci_name(k, a.get("metrics", {}).get(k))]
        if not wanted:
            raise LeaderboardError(f"metric {metric!r} is not a per-sample score of both runs; they share: "
                                   f"{', '.join(keys) or 'none'}")
        keys = wanted
    results, skipped = {}, {}
    for key in keys:
        spec = spec_of(key)
        if spec is None:
            skipped[key] = "declares no direction (higher or lower is better)"
            continue
        scored_a = [i for i in ids if all(_is_score(rows_a[s][i].get(key)) for s in seeds_a)]
        both = [i for i in scored_a if all(_is_score(rows_b[s][i].get(key)) for s in seeds_b)]
        # Named as its interval is in run A's record: from A's corpus value and A's own per-sample mean.
        mean_a = sum(first_a[i][key] for i in scored_a) / len(scored_a) if scored_a else None
        name = ci_name(key, a.get("metrics", {}).get(key), mean_a)
        if len(both) < len(ids):
            scored_b = sum(all(_is_score(rows_b[s][i].get(key)) for s in seeds_b) for i in ids)
            what = f"scored on different samples (A: {len(scored_a)}, B: {scored_b} of {len(ids)}; both: {len(both)})"
            if not allow_different_samples or not both:
                skipped[name] = what + ("" if not both else "; --allow-different-samples compares the shared ones")
                continue
            name += f" (on {len(both)} shared)"

        def per_example(rows: dict, seeds: list, i: str) -> float:
            return sum(rows[s][i][key] for s in seeds) / len(seeds)

        result = paired_bootstrap([per_example(rows_a, seeds_a, i) for i in both],
                                  [per_example(rows_b, seeds_b, i) for i in both],
                                  n_resamples=n_resamples, confidence=CONFIDENCE, seed=seed)
        if shared and len(shared) > 1:
            result["per_seed_diffs"] = {str(s): sum(rows_b[s][i][key] - rows_a[s][i][key] for i in both) / len(both)
                                        for s in shared}
        result["higher_is_better"] = spec.higher_is_better
        results[name] = result
    if not results and not skipped:
        raise LeaderboardError("the two runs share no per-sample metric scores")
    return Comparison(a=a, b=b, results=results, skipped=skipped, seeds_a=seeds_a, seeds_b=seeds_b,
                      shared_seeds=bool(shared), scoring_note=scoring_note(a, b))


def scoring_note(a: dict, b: dict) -> str:
    """What a comparison across scoring modes (or shot counts) says about itself; "" when both scored alike."""
    if scoring_of(a) == scoring_of(b):
        return ""
    return (f"across scoring modes: A is scored by {scoring_text(a)}, B by {scoring_text(b)}; same examples and "
            "references, paired per example, but a difference measures how answers were obtained as much as "
            "the model (choices ranks the labels by log-likelihood, generate parses free text)")


def verdict_of(result: dict) -> str:
    """Which configuration is better on this metric, in its declared direction, or no significant difference."""
    return verdict(result, CONFIDENCE, higher_is_better=result.get("higher_is_better", True))
