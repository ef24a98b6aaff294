"""Third-party progress bars follow the quiet-logs switch (harness/core/logs.py): off unless asked for."""

import numpy as np
import pytest

from harness.core.logs import gguf_bars_obey_the_switch, quiet_libraries

BAR = "Converting and de-quantizing GGUF tensors"


@pytest.fixture
def tiny_gguf(tmp_path):
    """A real GGUF file (written with the gguf package) of a one-layer llama, and the model it loads into: enough
    for transformers' GGUF loader to read and dequantize every tensor, the step that draws the bar."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((32, 8)).astype(np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, LlamaForCausalLM(config)


def _convert(path, model) -> dict:
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    return load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]


@pytest.fixture
def bars_restored():
    from transformers.utils import logging as transformers_logging

    was_on = transformers_logging.is_progress_bar_enabled()
    yield transformers_logging
    (transformers_logging.enable_progress_bar if was_on else transformers_logging.disable_progress_bar)()


def test_the_gguf_conversion_bar_follows_the_quiet_switch(tiny_gguf, bars_restored, capfd, monkeypatch):
    path, model = tiny_gguf
    # quiet_libraries sets these for the process: put them back afterwards.
    for name in ("TUNEBENCH_VERBOSE", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "WANDB_SILENT"):
        monkeypatch.delenv(name, raising=False)
    gguf_bars_obey_the_switch()

    quiet_libraries()  # a sweep's default: quiet
    tensors = _convert(path, model)
    assert BAR not in capfd.readouterr().err
    # Quiet changes what is shown, never what is converted.
    assert set(tensors) == {"model.embed_tokens.weight", "model.norm.weight"}
    assert tensors["model.embed_tokens.weight"].shape == (32, 8)

    bars_restored.enable_progress_bar()  # what -v / TUNEBENCH_VERBOSE=1 leave on
    _convert(path, model)
    assert BAR in capfd.readouterr().err


def test_without_the_routing_the_loader_draws_its_bar_regardless(tiny_gguf, bars_restored, capfd, monkeypatch):
    """Why the routing exists: transformers' own switch alone does not reach this bar."""
    import tqdm.auto
    from transformers import modeling_gguf_pytorch_utils as gguf_loader

    path, model = tiny_gguf
    monkeypatch.setattr(gguf_loader, "tqdm", tqdm.auto.tqdm)  # the loader as shipped
    bars_restored.disable_progress_bar()
    _convert(path, model)
    assert BAR in capfd.readouterr().err
