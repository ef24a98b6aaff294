"""Cost arithmetic, per-cell peak memory, and secrets kept out of what is written."""

import numpy as np
import pytest

from harness.cell.cost import PeakMemory, cost_report
from harness.core.config import HardwareConfig
from harness.core.redact import MASK, redact, redact_text

HW = HardwareConfig(name="a10", accelerator="cpu", device_name="A10", memory_gb=24, peak_tflops_bf16=125,
                    usd_per_hour=1.80, price_source="test", price_date="2026-01-01")


def test_cost_report_arithmetic(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "w.bin").write_bytes(b"x" * 1024 * 1024)
    peak = PeakMemory("cpu")
    peak.peak_bytes = 3 * 1024**3
    report = cost_report(HW, load_s=10, train_s=600, train_tokens=120_000, eval_s=200, eval_examples=100,
                         eval_generated_tokens=5000, peak=peak, adapter_dir=adapter)
    assert report.total_s == 810
    assert report.usd_train == pytest.approx(0.30)
    assert report.usd_eval == pytest.approx(0.10)
    assert report.usd_total == pytest.approx(810 / 3600 * 1.80)
    assert report.usd_per_1k_generations == pytest.approx(2.0 * 1000 / 3600 * 1.80)
    assert report.train_tokens_per_s == pytest.approx(200)
    assert report.eval_tokens_per_s == pytest.approx(25)
    assert report.peak_memory_gb == pytest.approx(3.0)
    assert report.adapter_mb == pytest.approx(1.0)
    assert (report.price_source, report.price_date) == ("test", "2026-01-01")
    # Preparing data (tokenising, building the training set, retrieval) is paid time too.
    prepared = cost_report(HW, load_s=10, train_s=600, train_tokens=120_000, eval_s=200, eval_examples=100,
                           eval_generated_tokens=5000, peak=peak, adapter_dir=adapter, prep_s=90)
    assert prepared.total_s == 900 and prepared.prep_s == 90
    assert prepared.usd_total == pytest.approx(900 / 3600 * 1.80)


def test_peak_memory_sees_an_allocation_made_inside():
    with PeakMemory("cpu", interval_s=0.005) as outer_baseline:
        pass
    with PeakMemory("cpu", interval_s=0.005) as peak:
        block = np.ones(400 * 1024 * 1024 // 8)  # 400 MB, touched
        block.sum()
        del block
    assert peak.kind == "peak_rss"
    assert peak.peak_bytes - outer_baseline.peak_bytes > 300 * 1024 * 1024


def test_secret_values_and_keys_are_masked(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    fake_hf = "hf_" + "secret" * 5  # assembled, so no token-shaped literal sits in the repository
    monkeypatch.setenv("HF_TOKEN", fake_hf)
    text = f"GET https://hub?token={fake_hf} failed; key 0123456789abcdef0123456789abcdef01234567"
    assert redact_text(text) == f"GET https://hub?token={MASK} failed; key {MASK}"
    assert redact_text("hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz unknown token") == f"{MASK} unknown token"
    data = {"tracker": {"api_key": "abc", "project": "p"}, "hf_token": None, "notes": [fake_hf]}
    assert redact(data) == {"tracker": {"api_key": MASK, "project": "p"}, "hf_token": None, "notes": [MASK]}


def test_lora_flops_and_mfu():
    from harness.cell.cost import lora_train_flops_per_token, mfu

    # Llama 3 8B, 32 layers, d=4096, 512-token sequences.
    flops = lora_train_flops_per_token(8.03e9, 32, 4096, 512)
    assert flops == 4 * 8.03e9 + 12 * 32 * 4096 * 512
    # 3000 tok/s on an A10 (125 TFLOP/s dense bf16) would be ~80% of peak: the formula, not a claim.
    assert mfu(3000, flops, 125.0) == pytest.approx(3000 * flops / 125e12)
    assert 0.7 < mfu(3000, flops, 125.0) < 0.9


def test_masking_keeps_every_setting_that_shapes_a_result(monkeypatch):
    """Only keys that hold secrets are masked: token counts and limits are settings, and stay in every record."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = {"eval": {"max_new_tokens": 64}, "judge": {"max_tokens": 1024, "api_key_env": "OPENAI_API_KEY"},
              "train": {"train_tokens": 5000, "tokens_per_s": 12.5}, "cost": {"eval_generated_tokens": 80},
              "tokenizer": "gpt2", "datasets_gen": {"num_predict": 512}}
    assert redact(config) == config
    secrets = {"api_key": "abc", "hf_token": "x1", "token": "t", "password": "p", "wandb_api_key": "w",
               "openai_api_key": "o", "client_secret": "c", "OPENAI_API_KEY": "k"}
    assert redact(secrets) == {k: MASK for k in secrets}
