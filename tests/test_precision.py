"""hardware.precision: auto resolved from the processor's flags, bf16 autocast really active in training and
evaluation where it resolves so, recorded in the cost, and a different result (keys) from fp32."""

import json

import pytest
import torch

from harness.cell.models import load_model
from harness.cell.predict import computing_in, generate
from harness.cell.train import TrainContext, build_sft_trainer, instruct_dataset, sft_config
from harness.core.config import ConfigError, HardwareConfig, load_option, to_run_config
from harness.core.data import load_dataset, prompt_messages
from harness.core.ledger import run_key, semantic_config
from harness.core.precision import cpu_flags, keyed_precision, resolve_precision
from harness.core.stages import adapter_key, predictions_key

CPU = load_option("hardware", "cpu", HardwareConfig)
TINY = ("model=tiny_random", "method=instruct", "qlora.max_steps=2", "qlora.batch_size=2",
        "data.max_train_examples=4", "progress=false", "tracker=none")


@pytest.mark.parametrize(("flags", "name", "says"), [
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16", "the CPU reports avx512_bf16 (native bf16)"),
    ({"avx2", "amx_bf16", "amx_tile"}, "bf16", "the CPU reports amx_bf16 (native bf16)"),
    ({"avx", "avx2", "fma"}, "fp32", "neither avx512_bf16 nor amx_bf16 (avx2 at most): bf16 would be emulated"),
    ({"avx2", "avx512f"}, "fp32", "(avx512f at most)"),
])
def test_auto_takes_bf16_only_where_the_processor_multiplies_it_natively(flags, name, says):
    precision = resolve_precision(CPU, four_bit=False, flags=frozenset(flags))
    assert precision.name == name and precision.cpu_autocast == (name == "bf16")
    assert precision.reason.startswith("auto: ") and says in precision.reason


def test_explicit_gpu_and_four_bit_precisions_say_what_decided_them(compose_cfg):
    flags = frozenset({"avx512_bf16"})
    fp32 = to_run_config(compose_cfg(*TINY, "hardware.precision=fp32")).hardware
    assert resolve_precision(fp32, False, flags) == resolve_precision(fp32, False, None)
    assert resolve_precision(fp32, False, flags).reason == "hardware.precision=fp32"
    bf16 = to_run_config(compose_cfg(*TINY, "hardware.precision=bf16")).hardware
    assert resolve_precision(bf16, False, frozenset()).cpu_autocast
    a100 = resolve_precision(load_option("hardware", "a100_80gb", HardwareConfig), True, flags)
    assert a100.name == "bf16" and not a100.cpu_autocast and "GPU preset a100_80gb" in a100.reason
    t4 = resolve_precision(load_option("hardware", "t4", HardwareConfig), True, flags)
    assert t4.name == "fp16" and not t4.cpu_autocast
    assert resolve_precision(load_option("hardware", "cpu_qlora", HardwareConfig), True, flags).name == "4bit"


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512_bf16\n")
    assert cpu_flags(info) == frozenset({"fpu", "sse2", "avx2", "avx512_bf16"})
    assert cpu_flags(tmp_path / "absent") is None
    assert resolve_precision(CPU, False, frozenset()).name == "fp32"


@pytest.mark.parametrize(("overrides", "message"), [
    (["hardware.precision=fp16"], "hardware.precision: must be one of auto, fp32, bf16 (got 'fp16')"),
    (["hardware=a10", "hardware.precision=bf16"], "hardware.precision: bf16 applies to CPU presets"),
    (["hardware=cpu_qlora", "qlora.load_in_4bit=true", "hardware.precision=fp32"],
     "hardware.precision: fp32 applies to fp32 CPU loading; hardware=cpu_qlora loads the base in 4-bit"),
])
def test_a_precision_that_cannot_apply_is_refused(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_run_config(compose_cfg(*TINY, *overrides))


def test_bf16_is_another_result_and_fp32_keeps_the_keys_results_had(compose_cfg):
    def keys(*overrides, flags=frozenset()):
        cfg = to_run_config(compose_cfg(*TINY, *overrides))
        from omegaconf import OmegaConf

        config = keyed_precision(semantic_config(OmegaConf.to_container(compose_cfg(*TINY, *overrides),
                                                                        resolve=True)),
                                 resolve_precision(cfg.hardware, False, flags))
        hashes = {"train.jsonl": "t", "eval.jsonl": "e"}
        adapter = adapter_key(config, hashes, "v")
        return run_key(config, hashes, "v"), adapter, predictions_key(config, hashes, "v", adapter), config

    auto_here, fp32, bf16 = keys(), keys("hardware.precision=fp32"), keys("hardware.precision=bf16")
    auto_on_bf16_cpu = keys(flags=frozenset({"avx512_bf16"}))
    assert auto_here[:3] == fp32[:3]  # auto on this kind of CPU is fp32: the same cell
    assert "precision" not in fp32[3]["hardware"]  # as every cell before the setting: earlier keys hold
    assert bf16[3]["hardware"]["precision"] == "bf16"
    assert all(b != f for b, f in zip(bf16[:3], fp32[:3], strict=True))
    assert auto_on_bf16_cpu[:3] == bf16[:3]  # auto that resolves to bf16 is the bf16 result


def _linear_output_dtypes(model) -> tuple[list, object]:
    seen = []
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    return seen, linear.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_and_answering_compute_in_the_resolved_precision(compose_cfg, tmp_path, precision, dtype):
    cfg = to_run_config(compose_cfg(*TINY, f"hardware.precision={precision}"))
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, cache_dir=tmp_path)
    ctx = TrainContext(cfg, loaded, load_dataset(cfg.data), tmp_path)
    trainer = build_sft_trainer(ctx, instruct_dataset(ctx), sft_config(ctx, completion_only_loss=True))
    seen, hook = _linear_output_dtypes(trainer.model)
    trainer.train()
    hook.remove()
    assert seen and set(seen) == {dtype}
    # The weights stay fp32 either way: autocast casts at each matmul, so the adapter saved is the same kind.
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())

    seen, hook = _linear_output_dtypes(trainer.model)
    conversation = [prompt_messages(ctx.dataset.eval[0], cfg.data, cfg.model, None, ctx.dataset.labels)]
    with computing_in(resolve_precision(cfg.hardware, False)):
        generate(trainer.model, loaded.tokenizer, conversation, cfg.eval, progress=False)
    hook.remove()
    assert seen and set(seen) == {dtype}


@pytest.mark.slow
def test_a_bf16_cell_records_its_precision_and_is_not_served_the_fp32_result(run_harness, tmp_path):
    results = tmp_path / "results"
    for precision in ("fp32", "bf16", "bf16"):
        done = run_harness(*TINY, "eval.num_examples=2", "eval.max_new_tokens=4", f"hardware.precision={precision}",
                           results_dir=results)
        assert done.returncode == 0, done.stderr[-3000:]
    fp32, bf16 = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert fp32["cost"]["precision"] == "fp32" and fp32["cost"]["precision_reason"] == "hardware.precision=fp32"
    assert bf16["cost"]["precision"] == "bf16" and bf16["cost"]["precision_reason"] == "hardware.precision=bf16"
    assert fp32["run_key"] != bf16["run_key"] and bf16["config"]["hardware"]["precision"] == "bf16"
    assert "0 completed, 1 skipped, 0 failed" in done.stderr  # the third command: the bf16 cell is done
