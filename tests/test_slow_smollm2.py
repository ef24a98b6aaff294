"""The embedded default model end to end: base vs instruct through the real CLI (minutes on a CPU)."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_smollm2_base_vs_instruct_sweep(run_harness, tmp_path):
    results = tmp_path / "results"
    proc = run_harness(
        "-m", "model=smollm2_135m", "method=base,instruct", "tracker=wandb_offline", "progress=false",
        "eval.num_examples=4", "eval.max_new_tokens=24", "qlora.max_steps=12", "qlora.lr=1e-3",
        results_dir=results, timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {r["method"]: r for r in map(json.loads, (results / "runs.jsonl").read_text().splitlines())}
    assert rows["base"]["status"] == rows["instruct"]["status"] == "completed"
    train = rows["instruct"]["train"]
    assert train["steps"] == 12
    losses = [loss for _, loss in train["losses"]]
    # Mean of the last quarter against the first quarter: single steps are noisy at batch size 4.
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert rows["instruct"]["cost"]["adapter_mb"] > 0.5
    for row in rows.values():
        assert row["cost"]["eval_generated_tokens"] > 0 and row["cost"]["eval_tokens_per_s"] > 0
        predictions = [json.loads(x)["prediction"] for x in open(row["predictions_file"])]
        assert len(predictions) == 4 and all(p.strip() for p in predictions)
