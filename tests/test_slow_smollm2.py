"""The embedded default model end to end: base vs instruct through the real CLI (minutes on a CPU)."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_smollm2_base_vs_instruct_sweep(run_harness, tmp_path):
    results = tmp_path / "results"
    proc = run_harness(
        "-m", "model=smollm2_135m", "method=base,instruct", "tracker=wandb_offline", "progress=false",
        "eval.num_examples=4", "eval.max_new_tokens=24", "qlora.epochs=2", "qlora.lr=1e-3",
        results_dir=results, timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {r["method"]: r for r in map(json.loads, (results / "runs.jsonl").read_text().splitlines())}
    assert rows["base"]["status"] == rows["instruct"]["status"] == "completed"
    train = rows["instruct"]["train"]
    assert train["steps"] == 30  # 60 pairs, batch 4, 2 epochs
    losses = [loss for _, loss in train["losses"]]
    # Epoch against epoch: both see every pair once, so the means compare like with like (single steps
    # differ mostly by which examples they hold, more so with length-grouped batches).
    first, second = sum(losses[:15]) / 15, sum(losses[15:]) / 15
    assert second < first, losses
    assert rows["instruct"]["cost"]["adapter_mb"] > 0.5
    for row in rows.values():
        assert row["cost"]["eval_generated_tokens"] > 0 and row["cost"]["eval_tokens_per_s"] > 0
        predictions = [json.loads(x)["prediction"] for x in open(row["predictions_file"])]
        assert len(predictions) == 4 and all(p.strip() for p in predictions)
