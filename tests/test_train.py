"""The instruct trainer: loss on answer tokens only, and a LoRA adapter that learns."""

import pytest

from harness.cell.models import load_model
from harness.cell.train import (
    TRAINERS,
    TrainContext,
    build_sft_trainer,
    causal_blocks,
    get_trainer,
    instruct_dataset,
    sft_config,
)
from harness.core.data import load_dataset


def _context(compose_cfg, tmp_path, *overrides: str) -> TrainContext:
    from harness.core.config import to_run_config

    cfg = to_run_config(compose_cfg("model=tiny_random", "method=instruct", "qlora.max_steps=12", "qlora.lr=5e-3",
                                    "qlora.batch_size=2", "data.max_train_examples=6", "progress=false", *overrides))
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, cache_dir=tmp_path)
    return TrainContext(cfg, loaded, load_dataset(cfg.data), tmp_path)


@pytest.fixture
def ctx(compose_cfg, tmp_path):
    return _context(compose_cfg, tmp_path)


@pytest.fixture
def fp32_ctx(compose_cfg, tmp_path):
    """For a comparison at fp32's tolerance: where the processor has native bf16, `auto` trains under bf16 autocast,
    and accelerate leaves its autocast wrapper on the trained model's forward (the harness takes it off before the
    model is used again: harness/cell/base_keeper.py)."""
    return _context(compose_cfg, tmp_path, "hardware.precision=fp32")


def test_loss_is_computed_on_the_answer_only(ctx):
    trainer = build_sft_trainer(ctx, instruct_dataset(ctx), sft_config(ctx, completion_only_loss=True, max_steps=1))
    tokenizer = ctx.loaded.tokenizer
    for example, record in zip(trainer.train_dataset, ctx.dataset.train, strict=True):
        # TRL folds the completion mask into the labels: -100 is never trained on.
        ids, mask = example["input_ids"], [label != -100 for label in example["labels"]]
        trained_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
        prompt_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
        # The answer and the end-of-turn token that teaches the model to stop; never the question.
        assert trained_text.strip() == f"{record.answer}<|im_end|>"
        assert record.question in prompt_text and ctx.cfg.data.system_prompt in prompt_text


def test_instruct_training_lowers_the_loss_and_saves_an_adapter(ctx):
    result = get_trainer("instruct")(ctx)
    assert result.steps == 12 and len(result.losses) == 12
    first, last = [loss for _, loss in result.losses[:3]], [loss for _, loss in result.losses[-3:]]
    assert sum(last) < sum(first)
    assert (result.adapter_dir / "adapter_model.safetensors").stat().st_size > 0
    assert 0 < result.trainable_params < result.total_params
    assert result.train_tokens > 0 and result.tokens_per_s > 0


def test_unknown_trainer_lists_the_known_ones():
    from harness.core.config import ConfigError

    with pytest.raises(ConfigError, match="method.trainer: unknown trainer .dpo.; known: causal, instruct"):
        get_trainer("dpo")
    assert "instruct" in TRAINERS


def test_causal_blocks_are_packed_to_max_length(ctx):
    tokenizer = ctx.loaded.tokenizer
    texts = ["Annual leave is 25 days.", "Expenses need a receipt.", "Remote work needs approval."]
    stream = [t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
    blocks = causal_blocks(texts, tokenizer, block_size=7)
    assert [t for block in blocks for t in block] == stream  # nothing lost, nothing padded, order kept
    assert all(len(b) == 7 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 7
    assert stream.count(tokenizer.eos_token_id) == 3  # one eos closes each document


def test_causal_training_runs_on_the_corpus(ctx):
    result = get_trainer("causal")(ctx)
    assert result.steps == 12 and result.train_tokens > 0
    losses = [loss for _, loss in result.losses]
    assert sum(losses[-3:]) < sum(losses[:3])


def test_merged_adapter_generates_what_the_adapter_model_generates(fp32_ctx):
    import torch

    from harness.cell.models import build_tiny_random, merge_adapter
    from harness.cell.predict import _left_pad, generate
    from harness.core.config import EvalConfig

    result = get_trainer("instruct")(fp32_ctx)
    tokenizer = fp32_ctx.loaded.tokenizer
    conversations = [[{"role": "user", "content": r.question}] for r in fp32_ctx.dataset.eval[:3]]
    settings = EvalConfig(max_new_tokens=6, batch_size=3)
    with_adapter = generate(result.model, tokenizer, conversations, settings, progress=False)
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    inputs = _left_pad([tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
                       tokenizer.pad_token_id, "cpu")

    def logits(model):
        with torch.inference_mode():
            return model(**inputs).logits

    # the same weights training started from
    fresh_base, _ = build_tiny_random(fp32_ctx.cfg.model, fp32_ctx.cfg.qlora.seed)
    base_logits = logits(fresh_base)
    adapter_logits = logits(result.model)
    # Greedy answers of a tiny random model may not move, so the adapter's effect is shown on the logits.
    assert (adapter_logits - base_logits).abs().max() > 0.1  # training moved the function away from the base
    merged = merge_adapter(fresh_base, result.adapter_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged), adapter_logits, atol=1e-5, rtol=1e-4)
    assert generate(merged, tokenizer, conversations, settings, progress=False).predictions == \
        with_adapter.predictions


def _memory_limit(monkeypatch, fits):
    """Raise torch's own out-of-memory error at the start of a step whose batch does not `fit` (the trainer
    wraps the model's forward, so the limit sits in the one callback every trainer of a cell gets)."""
    import torch

    from harness.cell.train import _ProgressCallback

    batches = []

    def on_step_begin(self, args, state, control, **kwargs):
        batches.append((args.per_device_train_batch_size, args.gradient_accumulation_steps))
        if not fits(args.per_device_train_batch_size):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")

    monkeypatch.setattr(_ProgressCallback, "on_step_begin", on_step_begin, raising=False)
    return batches


def test_training_out_of_memory_halves_the_batch_keeps_the_effective_batch_and_restarts_clean(ctx, monkeypatch):
    ctx.cfg.qlora.max_steps = 3
    ctx.cfg.qlora.batch_size, ctx.cfg.qlora.grad_accum = 4, 1
    batches = _memory_limit(monkeypatch, lambda batch: batch == 1)
    result = get_trainer("instruct")(ctx)
    assert [(r["batch_size"], r["grad_accum"]) for r in result.oom_retries] == [(4, 1), (2, 2)]
    assert "Tried to allocate" in result.oom_retries[0]["error"]
    assert (result.batch_size, result.grad_accum) == (1, 4)  # the same 4 sequences per optimizer step
    assert result.steps == 3 and len(result.losses) == 3
    assert set(batches) == {(4, 1), (2, 2), (1, 4)}


def test_training_out_of_memory_at_batch_one_fails_saying_what_was_tried(ctx, monkeypatch):
    import torch

    ctx.cfg.qlora.max_steps, ctx.cfg.qlora.batch_size, ctx.cfg.qlora.grad_accum = 2, 2, 3
    _memory_limit(monkeypatch, lambda batch: False)
    with pytest.raises(torch.OutOfMemoryError, match=r"qlora.batch_size x qlora.grad_accum tried: 2x3, 1x6\)"):
        get_trainer("instruct")(ctx)


def test_the_benchmark_baselines_train_with_the_harness_arguments(ctx):
    """bench/overhead.py's plain-TRL baseline gets the harness's own SFTConfig and LoraConfig keywords (one
    function both call), so the benchmark measures overhead, not a difference in settings."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        import common
    finally:
        sys.path.pop(0)
    from trl import SFTConfig

    harness_args = sft_config(ctx, completion_only_loss=True).to_dict()
    bench_args = SFTConfig(**common.baseline_sft_kwargs(ctx.cfg, ctx.output_dir / "trainer",
                                                        completion_only_loss=True)).to_dict()
    assert bench_args == harness_args
    assert harness_args["train_sampling_strategy"] == "group_by_length" and harness_args["use_cpu"] is True
    assert common.target_modules(ctx.cfg) == list(ctx.cfg.model.lora_target_modules)
