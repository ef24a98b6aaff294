"""Bootstrap CIs (coverage, width, paired test, determinism), their naming, and `leaderboard --compare`."""

import json

import numpy as np
import pytest

from harness.core.stats import bootstrap_ci, ci_name, metric_cis, paired_bootstrap, verdict
from harness.leaderboard import main
from harness.metrics import MetricResult


def test_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(123)
    reps, hits = 200, 0
    for rep in range(reps):
        sample = rng.normal(0.5, 0.2, size=50).tolist()
        mean, low, high = bootstrap_ci(sample, n_resamples=400, seed=rep)
        assert low <= mean <= high
        hits += low <= 0.5 <= high
    # Nominal 95%; 200 repetitions have a binomial SD of about 1.5 points.
    assert 0.91 <= hits / reps <= 0.99


def test_interval_shrinks_with_more_examples():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 200, 2000):
        _, low, high = bootstrap_ci(rng.normal(0.5, 0.2, size=n).tolist(), n_resamples=500)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # ~1/sqrt(n): 100x the examples, about a tenth of the width.
    assert 0.05 < widths[2] / widths[0] < 0.2


def test_paired_bootstrap_detects_a_real_shift():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 0.8, size=60)
    b = a + 0.1 + rng.normal(0, 0.02, size=60)
    result = paired_bootstrap(a.tolist(), b.tolist())
    assert result["n"] == 60
    assert result["mean_diff"] == pytest.approx(float(np.mean(b - a)))
    assert 0 < result["low"] < result["mean_diff"] < result["high"]
    assert result["p_value"] < 0.01
    assert verdict(result) == "B better"
    assert verdict(paired_bootstrap(b.tolist(), a.tolist())) == "A better"


def test_paired_bootstrap_finds_no_difference_in_zero_mean_noise():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, size=80)
    noise = rng.normal(0, 0.05, size=80)
    noise -= noise.mean()  # mean exactly 0
    result = paired_bootstrap(a.tolist(), (a + rng.permutation(noise)).tolist())
    assert result["low"] < 0 < result["high"]
    assert result["p_value"] > 0.5
    assert verdict(result) == "no significant difference at 95%"
    identical = paired_bootstrap(a.tolist(), a.tolist())
    assert identical["low"] == identical["high"] == 0 and identical["p_value"] == 1.0


def test_seeded_and_deterministic():
    values = np.random.default_rng(4).uniform(size=40).tolist()
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)
    other = np.random.default_rng(5).uniform(size=40).tolist()
    assert paired_bootstrap(values, other, seed=7) == paired_bootstrap(values, other, seed=7)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_ci([]), "non-empty"),
        (lambda: bootstrap_ci([0.1, float("nan")]), "NaN"),
        (lambda: bootstrap_ci([0.1], confidence=1.0), "confidence"),
        (lambda: paired_bootstrap([0.1, 0.2], [0.1]), "same examples"),
    ],
)
def test_bad_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_ci_names_mark_corpus_metrics_as_sample_means():
    assert ci_name("rougeL") == "rougeL"
    assert ci_name("bleu") == "bleu_sample_mean" and ci_name("chrf") == "chrf_sample_mean"
    assert ci_name("newmetric", corpus=0.5, sample_mean=0.5) == "newmetric"
    assert ci_name("newmetric", corpus=0.5, sample_mean=0.3) == "newmetric_sample_mean"
    scores = {
        "rouge": MetricResult(values={"rougeL": 0.25}, per_sample={"rougeL": [0.0, 0.5, 0.25, 0.25]}),
        "bleu": MetricResult(values={"bleu": 0.4}, per_sample={"bleu": [0.1, 0.2, 0.3, 0.4]}),
    }
    cis = metric_cis(scores, seed=42)
    assert set(cis) == {"rougeL", "bleu_sample_mean"}
    assert cis["rougeL"]["mean"] == pytest.approx(0.25) and cis["rougeL"]["n"] == 4
    assert cis["bleu_sample_mean"]["mean"] == pytest.approx(0.25)
    assert cis == metric_cis(scores, seed=42)


# --- leaderboard: the CI column and --compare on a synthetic ledger -------------------------------------

IDS = [f"ex-{i:03d}" for i in range(40)]


def _write_run(tmp_path, key, rouge, bleu, ids=IDS, status="completed", write_predictions=True):
    run_dir = tmp_path / "runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    predictions = run_dir / f"predictions-{key}-id.jsonl"
    if write_predictions:
        rows = [{"id": i, "question": f"q {i}", "reference": f"answer {i}", "prediction": "p",
                 "generated_tokens": 3, "rougeL": r, "bleu": b} for i, r, b in zip(ids, rouge, bleu, strict=True)]
        predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"run_key": key, "run_id": f"{key}-id", "status": status, "model": "m", "method": key[:4],
            "data": "hr_policies", "finished_at": "2026-01-01T00:00:00", "config": {"qlora": {"r": 8, "lr": 2e-4}},
            "train": {}, "cost": {"usd_per_1k_generations": 0.1, "usd_total": 0.01},
            "metrics": {"rougeL": float(np.mean(rouge)), "bleu": 0.3},
            "metrics_ci": {"rougeL": {"mean": float(np.mean(rouge)), "low": 0.15, "high": 0.22, "n": len(ids)}},
            "predictions_file": str(predictions) if status == "completed" else None}


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.5, size=len(IDS))
    bleu = rng.uniform(0, 0.3, size=len(IDS)).tolist()
    records = [
        _write_run(tmp_path, "aaaa1111", base.tolist(), bleu),
        _write_run(tmp_path, "bbbb2222", (base + 0.1 + rng.normal(0, 0.01, len(IDS))).tolist(), bleu),
        _write_run(tmp_path, "cccc3333", base.tolist(), bleu, ids=[f"other-{i}" for i in range(len(IDS))]),
        _write_run(tmp_path, "dddd4444", base.tolist(), bleu, write_predictions=False),
        _write_run(tmp_path, "aaaa9999", base.tolist(), bleu),
    ]
    ledger = tmp_path / "runs.jsonl"
    ledger.write_text("".join(json.dumps(r) + "\n" for r in records))
    return ledger


def _lines(capsys) -> dict[str, str]:
    """Table rows of --compare output, keyed by metric name."""
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│| ").split("│")]
        if len(cells) == 9 and cells[0] not in ("metric", ""):
            rows[cells[0]] = cells
    return rows, out


def test_compare_reports_verdicts_per_metric(runs, capsys):
    assert main(["--ledger", str(runs), "--compare", "aaaa1111", "bbbb"]) == 0
    rows, out = _lines(capsys)
    assert "A: m/aaaa [aaaa1111]" in out and "B: m/bbbb [bbbb2222]" in out
    assert set(rows) == {"rougeL", "bleu_sample_mean"}
    metric, mean_a, mean_b, diff, ci, p, n, verdict_text, better = rows["rougeL"]
    assert better == "higher ↑"
    assert verdict_text == "B better"
    assert float(diff) == pytest.approx(float(mean_b) - float(mean_a), abs=2e-4)
    assert ci.startswith("[+0.09") and p == "<0.0005" and n == "40"
    assert rows["bleu_sample_mean"][-2] == "no significant difference at 95%"
    assert "corpus metric (BLEU, chrF)" in out

    assert main(["--ledger", str(runs), "--compare", "bbbb", "aaaa1111", "--metric", "rougeL"]) == 0
    rows, _ = _lines(capsys)
    assert set(rows) == {"rougeL"} and rows["rougeL"][-2] == "A better"
    # The corpus metric's own name selects its per-sample comparison.
    assert main(["--ledger", str(runs), "--compare", "aaaa1111", "bbbb", "--metric", "bleu"]) == 0
    assert set(_lines(capsys)[0]) == {"bleu_sample_mean"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["aaaa1111", "cccc"], "different eval sets cannot be compared"),
        (["aaaa1111", "zzzz"], "no run key starting with 'zzzz'"),
        (["aaaa", "bbbb"], "run key prefix 'aaaa' is ambiguous"),
        (["aaaa1111", "dddd"], "predictions file of run dddd4444 not found"),
        (["aaaa1111", "bbbb", "--metric", "meteor"], "metric 'meteor' is not a per-sample score of both runs"),
    ],
)
def test_compare_errors_are_plain_messages(runs, capsys, args, message):
    assert main(["--ledger", str(runs), "--compare", *args[:2], *args[2:]]) == 2
    out = capsys.readouterr().out.replace("\n", "")
    assert message in out and "Traceback" not in out


def test_compare_names_the_ids_that_differ(runs, capsys):
    assert main(["--ledger", str(runs), "--compare", "aaaa1111", "cccc3333"]) == 2
    out = capsys.readouterr().out.replace("\n", "")
    assert "ids only in A: ex-000, ex-001" in out and "(and 30 more)" in out
    assert "ids only in B: other-0, other-1" in out


def test_leaderboard_shows_the_ci_of_the_sort_metric(runs, capsys):
    assert main(["--ledger", str(runs), "--wide"]) == 0
    assert "rougeL 95% CI" in capsys.readouterr().out
    report = (runs.parent / "leaderboard.md").read_text()
    assert "rougeL 95% CI" in report
    assert "[0.150, 0.220] |" in report


def test_compare_skips_a_judged_metric_scored_on_different_samples_unless_allowed(tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.5, size=len(IDS))
    records = [_write_run(tmp_path, "jjjj1111", base.tolist(), base.tolist()),
               _write_run(tmp_path, "kkkk2222", (base + 0.2).tolist(), base.tolist())]
    faith_a = rng.uniform(0.2, 0.6, size=len(IDS)).tolist()
    # Run A's record holds its own faithfulness mean (over its 38 scored samples), as a real run's does.
    records[0]["metrics"]["faithfulness"] = float(np.mean([v for n, v in enumerate(faith_a) if n not in (3, 9)]))
    for key, shift, broken in (("jjjj1111", 0.0, {3, 9}), ("kkkk2222", 0.3, {5})):
        path = tmp_path / "runs" / key / f"predictions-{key}-id.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for n, row in enumerate(rows):
            row["faithfulness"] = None if n in broken else faith_a[n] + shift
            if n in broken:
                row["faithfulness_error"] = "timeout"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ledger = tmp_path / "runs.jsonl"
    ledger.write_text("".join(json.dumps(r) + "\n" for r in records))

    assert main(["--ledger", str(ledger), "--compare", "jjjj", "kkkk"]) == 0
    rows, out = _lines(capsys)
    assert "rougeL" in rows and "faithfulness" not in rows
    assert "not compared: faithfulness: scored on different samples (A: 38, B: 39 of 40; both: 37)" in out

    assert main(["--ledger", str(ledger), "--compare", "jjjj", "kkkk", "--allow-different-samples"]) == 0
    rows, out = _lines(capsys)
    shared = rows["faithfulness (on 37 shared)"]
    assert shared[3] == "+0.3000" and shared[6] == "37" and shared[7] == "B better"
