"""The TF-IDF + logistic-regression baseline as a ledger row beside the LLM cells."""

import json

import pytest

from harness.baseline import fit_tfidf, main
from harness.leaderboard import main as leaderboard
from harness.metrics.classification import Accuracy

KITCHEN = ["chef knife steel blade", "cast iron frying pan", "ceramic coffee mug", "bamboo cutting board",
           "stainless saucepan lid", "silicone baking mat", "glass mixing bowl", "wooden spatula set"]
GARDEN = ["garden hose reel", "pruning shears blade", "terracotta flower pot", "lawn mower bag",
          "watering can brass", "compost bin lid", "seed tray set", "garden gloves leather"]


def _dataset(folder):
    folder.mkdir()
    rows = [(f"k{i}", t, "Kitchen") for i, t in enumerate(KITCHEN)] + [(f"g{i}", t, "Garden") for i, t in enumerate(GARDEN)]
    train = [r for i, r in enumerate(rows) if i % 4]
    evaluation = [r for i, r in enumerate(rows) if i % 4 == 0]
    for name, part in (("train.jsonl", train), ("eval.jsonl", evaluation)):
        (folder / name).write_text("".join(json.dumps({"id": i, "question": f"Which department sells: {t}?",
                                                       "answer": y}) + "\n" for i, t, y in part))
    (folder / "labels.json").write_text(json.dumps({"labels": ["Kitchen", "Garden", "Bathroom"]}))
    return [r for r in rows if r in evaluation]


def test_baseline_row_lands_in_the_ledger_and_ranks(tmp_path, capsys):
    evaluation = _dataset(tmp_path / "departments")
    results = tmp_path / "results"
    assert main(["data=departments", f"data.dir={tmp_path / 'departments'}", f"results_dir={results}"]) == 0
    record = json.loads((results / "runs.jsonl").read_text().splitlines()[0])
    assert (record["model"], record["method"], record["status"]) == ("tfidf_logreg", "baseline", "completed")
    assert set(record["metrics"]) == {"accuracy", "macro_f1", "unparseable_rate"}
    assert record["metric_samples"] == len(evaluation) == 4 and record["eval_set"]
    assert record["train"]["labels"] == ["Kitchen", "Garden", "Bathroom"]  # the full set from labels.json
    assert record["cost"]["usd_total"] >= 0 and record["metrics_ci"]["accuracy"]["n"] == 4
    rows = [json.loads(line) for line in open(record["predictions_file"])]
    assert [r["id"] for r in rows] == [r[0] for r in evaluation]
    assert sum(r["accuracy"] for r in rows) / 4 == record["metrics"]["accuracy"]
    assert leaderboard(["--ledger", str(results / "runs.jsonl"), "--sort", "accuracy"]) == 0
    assert "tfidf_logreg" in capsys.readouterr().out


def test_baseline_refuses_a_dataset_without_accuracy(tmp_path, capsys):
    assert main(["data=hr_handbook", f"results_dir={tmp_path}"]) == 2
    assert "the TF-IDF baseline is for classification datasets" in capsys.readouterr().err


def test_baseline_cost_is_its_prediction_time_and_its_label_is_plain(tmp_path, capsys):
    _dataset(tmp_path / "departments")
    results = tmp_path / "results"
    assert main(["data=departments", f"data.dir={tmp_path / 'departments'}", f"results_dir={results}"]) == 0
    record = json.loads((results / "runs.jsonl").read_text().splitlines()[0])
    cost = record["cost"]
    assert cost["eval_s"] > 0 and cost["train_s"] > 0 and cost["usd_per_1k_generations"] > 0
    # Serving $ per 1k answers comes from the prediction time alone, not from fitting.
    per_1k = cost["eval_s"] / cost["eval_examples"] * 1000 / 3600 * cost["usd_per_hour"]
    assert cost["usd_per_1k_generations"] == pytest.approx(per_1k)
    assert cost["eval_tokens_per_s"] is None and cost["train_tokens_per_s"] is None
    assert record["metrics_ci"]["macro_f1"]["n"] == 4  # every number has its interval
    assert leaderboard(["--ledger", str(results / "runs.jsonl"), "--min", "accuracy=0.1"]) == 0
    out = capsys.readouterr().out
    assert "tfidf_logreg/baseline [" in out and "r=None" not in out


def test_tfidf_fit_separates_a_separable_set_and_is_seeded():
    train = [
        ("stainless steel frying pan for the stove", "Kitchen"), ("chef knife for chopping vegetables", "Kitchen"),
        ("non-stick saucepan with lid for cooking", "Kitchen"), ("wooden cutting board for the kitchen", "Kitchen"),
        ("garden hose for watering plants", "Garden"), ("pruning shears to trim hedges and roses", "Garden"),
        ("lawn mower for cutting grass", "Garden"), ("flower seeds for planting in spring soil", "Garden"),
    ]
    evaluation = [("cast iron pan for cooking on the stove", "Kitchen"), ("watering can for garden plants", "Garden"),
                  ("paring knife for chopping fruit", "Kitchen"), ("hedge trimmer for the lawn and garden", "Garden")]
    texts, labels = [t for t, _ in train], [y for _, y in train]
    predicted = [str(p) for p in fit_tfidf(texts, labels).predict([t for t, _ in evaluation])]
    # Scored by the metric the LLM cells get, as `python -m harness.baseline` scores it.
    out = Accuracy().score(predicted, [y for _, y in evaluation]).values
    assert out == {"accuracy": 1.0, "macro_f1": 1.0, "unparseable_rate": 0.0}
    again = fit_tfidf(texts, labels, seed=1).predict([t for t, _ in evaluation])
    assert [str(p) for p in again] == predicted
    with pytest.raises(ValueError, match="two or more labels"):
        fit_tfidf(["a", "b"], ["X", "X"])
    with pytest.raises(ValueError, match="differ in length"):
        fit_tfidf(["a", "b"], ["X"])
