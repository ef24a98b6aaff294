"""Verdicts a user can bet money on: metric directions, one board per dataset, seeds, and the leaderboard's
plain refusals (each of these was a silent inversion or a traceback before)."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from harness.board.compare import compare
from harness.board.ranking import collapse_seeds, configuration_id, parse_bounds
from harness.leaderboard import main

IDS = [f"q{i}" for i in range(30)]


def _record(key, data, model, method, metrics, usd_1k, seed=1, lr=2e-4, eval_set=None, **extra):
    return {"run_key": key, "run_id": key + "-id", "status": "completed", "data": data, "model": model,
            "method": method, "sweep_id": "s", "finished_at": "2026-11-29T00:00:00", "eval_set": eval_set or data,
            "metric_samples": len(IDS), "config": {"qlora": {"r": 8, "lr": lr, "seed": seed}, "data": {"name": data}},
            "train": {"steps": 3} if method != "base" else {}, "data_hashes": {"eval.jsonl": data},
            "versions": {"harness": "0.1.0"}, "metrics": dict(metrics),
            "cost": {"usd_per_1k_generations": usd_1k, "usd_total": usd_1k / 10, "peak_memory_gb": 1.0}, **extra}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _out(capsys) -> str:
    return capsys.readouterr().out


@pytest.fixture
def two_datasets(tmp_path):
    """A catalog board (accuracy, unparseable_rate) and an HR board (rougeL) in one ledger."""
    return _write(tmp_path / "runs.jsonl", [
        _record("cat-base", "catalog", "smol", "base", {"accuracy": 0.19, "unparseable_rate": 0.73}, 0.01),
        _record("cat-inst", "catalog", "smol", "instruct", {"accuracy": 0.80, "unparseable_rate": 0.00}, 0.02),
        _record("cat-tfidf", "catalog", "tfidf_logreg", "baseline", {"accuracy": 0.64, "unparseable_rate": 0.0},
                0.000001),
        _record("hr-base", "hr", "smol", "base", {"rougeL": 0.90}, 0.01),
        _record("hr-inst", "hr", "smol", "instruct", {"rougeL": 0.18}, 0.02),
    ])


def _board_rows(out: str, title: str) -> list[str]:
    """Model/method of each row of the board whose title contains `title`, in printed order."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "tunebench leaderboard" in line and title in line)
    rows = []
    for line in lines[start + 1:]:
        if "tunebench leaderboard" in line or line.startswith("written"):
            break
        # the default table separates cells by spaces (names have none); --wide draws │ between them
        cells = [c.strip() for c in line.strip("│ ").split("│")] if "│" in line else line.split()
        if len(cells) > 3 and cells[0].isdigit():
            rows.append(f"{cells[1]}/{cells[2]}")
    return rows


def test_each_dataset_gets_its_own_board_and_pick(two_datasets, capsys):
    assert main(["--ledger", str(two_datasets), "--min", "accuracy=0.5", "--min", "rougeL=0.15"]) == 0
    out = _out(capsys)
    assert _board_rows(out, "data=catalog") == ["smol/instruct", "tfidf_logreg/baseline", "smol/base"]
    # The HR base row's 0.90 ROUGE-L would top a mixed ranking; it only ranks against HR runs.
    assert _board_rows(out, "data=hr") == ["smol/base", "smol/instruct"]
    picks = [line for line in out.splitlines() if line.startswith("cheapest adequate")]
    assert len(picks) == 2
    assert "data=catalog" in picks[0] and "accuracy >= 0.5" in picks[0] and "tfidf_logreg/baseline" in picks[0]
    assert "rougeL" not in picks[0]  # a floor on a metric the dataset does not have does not apply to it
    assert "data=hr" in picks[1] and "smol/base" in picks[1]
    report = (two_datasets.parent / "leaderboard.md").read_text()
    assert "## data=catalog" in report and "## data=hr" in report
    assert "`unparseable_rate` ↓ lower is better (0..1)" in report and "`accuracy` ↑ higher is better" in report


def test_data_option_selects_one_board(two_datasets, capsys):
    assert main(["--ledger", str(two_datasets), "--data", "hr"]) == 0
    out = _out(capsys)
    assert "data=hr" in out and "data=catalog" not in out
    assert main(["--ledger", str(two_datasets), "--data", "nope"]) == 2
    assert "--data nope: no runs on that dataset" in " ".join(_out(capsys).split())


def test_lower_is_better_metrics_rank_and_bound_the_right_way(two_datasets, capsys):
    assert main(["--ledger", str(two_datasets), "--data", "catalog", "--sort", "unparseable_rate"]) == 0
    rows = _board_rows(_out(capsys), "data=catalog")
    assert rows[-1] == "smol/base"  # 73% unparseable ranks last, not first
    assert main(["--ledger", str(two_datasets), "--data", "catalog", "--max", "unparseable_rate=0.05"]) == 0
    out = _out(capsys)
    pick = next(line for line in out.splitlines() if line.startswith("cheapest adequate"))
    assert "unparseable_rate <= 0.05" in pick and "tfidf_logreg/baseline" in pick
    assert "not picked: smol/base [cat-base]: unparseable_rate 0.730 > 0.05" in out
    # A ceiling on cost and memory works the same way.
    assert main(["--ledger", str(two_datasets), "--data", "catalog", "--min", "accuracy=0.7",
                 "--max", "peak_memory_gb=2"]) == 0
    assert "smol/instruct" in next(line for line in _out(capsys).splitlines() if line.startswith("cheapest"))


@pytest.mark.parametrize(("args", "message"), [
    (["--min", "unparseable_rate=0.1"],
     "--min unparseable_rate=0.1: unparseable_rate is lower-is-better, so a bound on it is a ceiling: use --max "
     "unparseable_rate=0.1"),
    (["--max", "accuracy=0.9"], "accuracy is higher-is-better, so a bound on it is a floor: use --min accuracy=0.9"),
    (["--min", "accuracy=nan"], "--min 'accuracy=nan': the bound must be a finite number"),
    (["--max", "unparseable_rate=inf"], "the bound must be a finite number"),
    (["--sort", "meteor"], "unknown metric(s) ['meteor']"),
    (["--compare", "cat-base", "cat-base"], "--compare names the same run twice (cat-base)"),
    (["--compare", "cat-base", "hr-base"], "runs on different datasets are never compared"),
])
def test_bad_leaderboard_options_are_one_plain_line(two_datasets, capsys, args, message):
    assert main(["--ledger", str(two_datasets), *args]) == 2
    out = _out(capsys)
    assert message in " ".join(out.split()) and "Traceback" not in out


def test_a_directory_as_ledger_means_its_runs_jsonl(two_datasets, tmp_path, capsys):
    assert main(["--ledger", str(two_datasets.parent), "--data", "hr"]) == 0
    assert _board_rows(_out(capsys), "data=hr") == ["smol/base", "smol/instruct"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--ledger", str(empty)]) == 2
    assert "is a directory without a runs.jsonl" in " ".join(_out(capsys).split())


def test_unwritable_report_is_a_plain_error(two_datasets, capsys):
    blocker = two_datasets.parent / "a-file"
    blocker.write_text("")
    assert main(["--ledger", str(two_datasets), "--out", str(blocker / "leaderboard.md")]) == 2
    assert "cannot write the report" in " ".join(_out(capsys).split())


def test_a_refusal_over_many_runs_is_summarised(tmp_path, capsys):
    from harness.metrics.ragas import scored_set_hash

    records = []
    for n in range(200):
        row = _record(f"run{n:03d}", "hr", f"m{n}", "instruct", {"rougeL": 0.3, "faithfulness": 0.5}, 0.1)
        scored = IDS[:-1] if n % 50 == 0 else IDS
        row["judge"] = {"metrics": {"faithfulness": {"scored": len(scored), "failed": len(IDS) - len(scored),
                                                     "reasons": {"timeout": len(IDS) - len(scored)},
                                                     "scored_set": scored_set_hash(scored)}}}
        records.append(row)
    ledger = _write(tmp_path / "runs.jsonl", records)
    assert main(["--ledger", str(ledger), "--min", "faithfulness=0.4"]) == 2
    out = " ".join(_out(capsys).split())
    assert "faithfulness was computed on different samples" in out
    assert "and 194 more runs (4 of 200 differ in all)" in out and len(out) < 3000


# --- seeds ------------------------------------------------------------------------------------------------

def _seeded(tmp_path, name, seed, lr, scores):
    key = f"{name}-s{seed}"
    folder = tmp_path / "runs" / key
    folder.mkdir(parents=True)
    path = folder / f"predictions-{key}-id.jsonl"
    path.write_text("".join(json.dumps({"id": i, "reference": "r", "prediction": "p", "rougeL": s}) + "\n"
                            for i, s in zip(IDS, scores, strict=True)))
    return _record(key, "hr", "smol", "instruct", {"rougeL": float(np.mean(scores))}, 0.02, seed=seed, lr=lr,
                   predictions_file=str(path), metrics_ci={"rougeL": {"mean": float(np.mean(scores)), "low": 0.0,
                                                                       "high": 1.0, "n": len(IDS)}})


@pytest.fixture
def seeded(tmp_path):
    rng = np.random.default_rng(7)
    truth = rng.uniform(0.2, 0.6, size=len(IDS))
    records = [
        # Configuration A (lr 1e-4): seeds 1, 2, 3. Configuration B (lr 1e-3): seeds 1, 2 (3 failed), 4.
        *[_seeded(tmp_path, "a", s, 1e-4, (truth + rng.normal(0, 0.02, len(IDS))).tolist()) for s in (1, 2, 3)],
        *[_seeded(tmp_path, "b", s, 1e-3, (truth + 0.1 + rng.normal(0, 0.02, len(IDS))).tolist()) for s in (1, 2, 4)],
        _record("lonely", "hr", "smol", "base", {"rougeL": 0.2}, 0.01, seed=1),
        {**_record("b-s3", "hr", "smol", "instruct", {}, 0.0, seed=3, lr=1e-3), "status": "failed",
         "error_type": "OutOfMemoryError", "metrics": {}, "cost": {}},
    ]
    return _write(tmp_path / "runs.jsonl", records), records


def test_rows_that_differ_only_in_seed_are_one_row(seeded):
    _, records = seeded
    rows = collapse_seeds(records)
    by_seeds = {tuple(r["seeds"]): r for r in rows if r["status"] == "completed"}
    a = by_seeds[(1, 2, 3)]
    assert a["runs"] == ["a-s1", "a-s2", "a-s3"]
    values = [r["metrics"]["rougeL"] for r in records[:3]]
    assert a["metrics"]["rougeL"] == pytest.approx(np.mean(values))
    assert a["spread"]["rougeL"]["sd"] == pytest.approx(np.std(values, ddof=1))
    assert (a["spread"]["rougeL"]["min"], a["spread"]["rougeL"]["max"]) == (min(values), max(values))
    assert by_seeds[(1, 2, 4)]["runs"] == ["b-s1", "b-s2", "b-s4"]
    assert by_seeds[(1,)]["method"] == "base" and by_seeds[(1,)]["spread"] == {}
    assert [r["run_key"] for r in rows if r["status"] == "failed"] == ["b-s3"]  # a failed seed stays in view
    assert configuration_id(records[0]) == configuration_id(records[1]) != configuration_id(records[3])


def test_leaderboard_shows_seed_counts_spread_and_marks_single_seed_rows(seeded, capsys):
    ledger, records = seeded
    assert main(["--ledger", str(ledger), "--min", "rougeL=0.3", "--wide"]) == 0  # every column, run keys too
    out = _out(capsys)
    table = [line for line in out.splitlines() if "│" in line and "smol" in line]
    assert re.search(r"│ +3 │ completed", table[0]) and "over 3 seeds" in table[0] and "b-s1, b-s2, b-s4" in table[0]
    assert "1†" in next(line for line in table if "base" in line)
    assert "OutOfMemoryError" in out
    pick = next(line for line in out.splitlines() if line.startswith("cheapest adequate"))
    assert "(3 seeds)" in pick


def test_compare_pools_the_seeds_two_configurations_share(seeded):
    ledger, records = seeded
    result = compare(ledger, "a-s1", "b-s1", metric="rougeL")
    assert result.seeds_a == result.seeds_b == [1, 2]  # seed 3 failed for B, seed 4 has no A twin
    r = result.results["rougeL"]
    rows = {k: [json.loads(x) for x in open(rec["predictions_file"])] for rec in records[:6]
            for k in [rec["run_key"]]}

    def avg(keys):
        return np.mean([[row["rougeL"] for row in rows[k]] for k in keys], axis=0)

    assert r["mean_diff"] == pytest.approx(float(np.mean(avg(["b-s1", "b-s2"]) - avg(["a-s1", "a-s2"]))))
    assert set(r["per_seed_diffs"]) == {"1", "2"}
    assert r["per_seed_diffs"]["1"] == pytest.approx(float(np.mean(avg(["b-s1"]) - avg(["a-s1"]))))
    assert r["low"] > 0 and r["n"] == len(IDS)


def test_compare_verdict_follows_the_metrics_direction(tmp_path, capsys):
    folder = tmp_path / "runs"
    records = []
    for key, unparseable in (("lenient", [1.0] * 20 + [0.0] * 10), ("strict", [0.0] * 30)):
        (folder / key).mkdir(parents=True)
        path = folder / key / "p.jsonl"
        path.write_text("".join(json.dumps({"id": i, "reference": "r", "prediction": "p", "unparseable_rate": u,
                                            "accuracy": 1.0 - u}) + "\n" for i, u in zip(IDS, unparseable, strict=True)))
        records.append(_record(key, "catalog", "m-" + key, "instruct", {"unparseable_rate": float(np.mean(unparseable))},
                               0.1, predictions_file=str(path)))
    ledger = _write(tmp_path / "runs.jsonl", records)
    result = compare(ledger, "lenient", "strict", metric="unparseable_rate")
    from harness.board.compare import verdict_of

    assert verdict_of(result.results["unparseable_rate"]) == "B better"  # B's rate is lower
    assert main(["--ledger", str(ledger), "--compare", "lenient", "strict"]) == 0
    out = _out(capsys)
    line = next(line for line in out.splitlines() if "unparseable_rate" in line)
    assert "B better" in line and "lower ↓" in line


def test_parse_bounds_knows_floors_from_ceilings():
    floor, ceiling = parse_bounds(["accuracy=0.7"], ["usd_per_1k_generations=0.5"])
    assert floor.fails(0.69) and not floor.fails(0.7)
    assert ceiling.fails(0.51) and not ceiling.fails(0.5)
    assert floor.text() == "accuracy >= 0.7" and ceiling.text() == "usd_per_1k_generations <= 0.5"


def test_settings_only_one_row_has_do_not_count_as_varying():
    from harness.board.terminal import varying_settings

    llm = _record("a", "catalog", "smol", "instruct", {"accuracy": 0.6}, 0.1, lr=1e-3)
    other = _record("b", "catalog", "smol", "instruct", {"accuracy": 0.7}, 0.1, lr=2e-4)
    baseline = {**_record("c", "catalog", "tfidf_logreg", "baseline", {"accuracy": 0.8}, 0.0),
                "config": {"baseline": "tfidf_logreg", "eval_examples": 30, "seed": 42}}
    assert varying_settings([llm, other, baseline]) == ["qlora.lr"]
    assert varying_settings([llm, baseline]) == []


def test_a_setting_a_row_never_used_neither_varies_nor_shows():
    """A base row carries the default qlora.lr and eval.max_new_tokens in its config, but trained nothing and (scored
    on choices) generated nothing: its cells read "-", and a setting only such rows differ in is no column."""
    from harness.board.terminal import varying_settings

    def with_eval(row, scoring, new_tokens):
        config = {**row["config"], "eval": {"scoring": scoring, "max_new_tokens": new_tokens}}
        return {**row, "config": config}

    trained = with_eval(_record("a", "catalog", "smol", "instruct", {"accuracy": 0.7}, 0.1, lr=1e-3), "generate", 8)
    base = with_eval(_record("b", "catalog", "smol", "base", {"accuracy": 0.4}, 0.1, lr=2e-4), "choices", 64)
    assert varying_settings([trained, base]) == []
    other = with_eval(_record("c", "catalog", "smol", "instruct", {"accuracy": 0.6}, 0.1, lr=5e-4), "generate", 16)
    assert varying_settings([trained, base, other]) == ["qlora.lr", "eval.max_new_tokens"]

    from harness.board.terminal import compact_table

    shown = [trained, other, base]  # compact_table reads a report's rows, body (its length), bounds and sort_by
    header, body = compact_table(SimpleNamespace(rows=shown, body=shown, bounds=[], sort_by="accuracy"),
                                 "usd_per_1k_generations")
    cells = {row[2] + row[0]: dict(zip(header, row, strict=True)) for row in body}
    assert (cells["base3"]["lr"], cells["base3"]["max_new_tokens"]) == ("-", "-")
    assert (cells["instruct1"]["lr"], cells["instruct1"]["max_new_tokens"]) == ("0.001", "8")


def test_rows_tied_on_the_ranking_metric_come_cheaper_first_whatever_order_they_arrive_in():
    from harness.board.ranking import rank

    def row(method, rouge, usd, key):
        return {"status": "completed", "model": "m", "method": method, "run_key": key,
                "metrics": {"rougeL": rouge}, "cost": {"usd_total": usd}}

    rows = [row("base", 0.2, 0.3, "k1"), row("instruct", 0.2, 0.1, "k2"), row("causal", 0.5, 0.9, "k3"),
            row("instruct_rag", 0.2, 0.1, "k0")]
    expected = ["causal", "instruct", "instruct_rag", "base"]  # best; then the 0.2 tie: cheaper, then by name
    assert [r["method"] for r in rank(rows, "rougeL")] == expected
    assert [r["method"] for r in rank(rows[::-1], "rougeL")] == expected
