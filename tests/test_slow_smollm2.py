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


def test_smollm2_instruct_through_the_4bit_qlora_path_on_cpu(run_harness, tmp_path):
    """hardware=cpu_qlora: nf4 base, k-bit preparation, LoRA on Linear4bit, merged bf16 copy for evaluation."""
    results = tmp_path / "results"
    proc = run_harness("model=smollm2_135m", "method=instruct", "hardware=cpu_qlora", "tracker=none", "progress=false",
                       "qlora.max_steps=4", "eval.num_examples=2", "eval.max_new_tokens=16", results_dir=results,
                       timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    row = json.loads((results / "runs.jsonl").read_text().splitlines()[-1])
    assert row["status"] == "completed"
    assert (row["cost"]["quantized_4bit"], row["cost"]["dtype"], row["train"]["eval_model"]) == (
        True, "nf4-bfloat16", "merged_16bit")
    assert row["train"]["steps"] == 4 and all(0 < loss < 10 for _, loss in row["train"]["losses"])
    # r=16 x (in + out) on q, o (576 -> 576), k, v (576 -> 192), gate, up (576 -> 1536), down (1536 -> 576), 30 layers:
    # the same adapter fp32 LoRA trains.
    assert row["train"]["trainable_params"] == 30 * 16 * (2 * 1152 + 2 * 768 + 3 * 2112)
    assert row["preflight"]["estimated_peak_gb"] >= row["cost"]["peak_memory_gb"]
    predictions = [json.loads(x)["prediction"] for x in open(row["predictions_file"])]
    assert len(predictions) == 2 and all(p.strip() for p in predictions)
