"""Preflight: estimate one cell's peak memory before loading anything, and refuse a cell that cannot fit.

A guard, not a simulator: every term is a simple, conservative formula from the config's dimensions,
documented below with its source. `preflight(cfg)` raises `PreflightRefusal` (the message says what
would make the cell fit, as Hydra overrides with the estimate each would give); the run turns that
into a `skipped` record instead of an out-of-memory crash minutes into loading.

Units: "GB" here is GiB (2**30 bytes), the unit `harness.cell.cost` reports peak memory in and the unit
torch / nvidia-smi count device memory in; `hardware.memory_gb` is read the same way.

Peak = static + max(training phase, generation phase) + overhead, where
  static     = base weights + LoRA adapter weights + AdamW states (they live through the whole cell)
  training   = LoRA gradients + activations kept for backward + the loss's logits
  generation = KV cache + prefill working set + next-token logits (with eval.scoring=choices: the prompts' cache
               repeated for every label, and the labels' logits; see `choice_term`)
The two phases are sequential (`trainer.train()` returns, activations are freed, then `generate`). After
4-bit training the evaluation runs on a merged 16-bit copy where it fits (harness.cell.pipeline._merge_for_eval), and
the 4-bit model with its adapter and optimizer is freed first: that phase is overhead + the copy + generation.
Sequence lengths are the dataset's own (`dataset_lengths`: its longest training example and longest eval
prompt in the model's tokens, few-shot turns included, the training one capped at `qlora.max_length`): TRL pads each batch only to its
longest example, and the length-grouped sampler puts the batch holding the longest one first. Where the
tokenizer cannot load before the weights, both are assumed to fill `qlora.max_length` (the worst case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.core.config import (
    CONF_DIR,
    Accelerator,
    EvalConfig,
    HardwareConfig,
    ModelConfig,
    ModelSource,
    QLoraConfig,
    RunConfig,
    load_option,
    loads_in_4bit,
    uses_gradient_checkpointing,
)
from harness.core.precision import resolve_precision

GIB = 2**30

# --- Weights -------------------------------------------------------------------------------------
# NF4/FP4 (bitsandbytes, QLoRA paper, Dettmers et al. 2023, sec. 2-3): 4 bits per weight of each quantized
# nn.Linear, plus quantization constants per block of 64 weights: one fp32 absmax = 32/64 = 0.5 bit/param;
# with double quantization the absmax values are stored as 8 bit with one fp32 constant per 256 of them:
# 8/64 + 32/(64*256) = 0.127 bit/param (the paper's figure).
NF4_BITS = 4.0
QUANT_CONST_BITS = 32 / 64
QUANT_CONST_BITS_DOUBLE = 8 / 64 + 32 / (64 * 256)
# Families whose input embedding and lm_head share one matrix (config.json `tie_word_embeddings: true`):
# gemma (gemma-2b: params 2,506,172,416 = 18 layers + 256000x2048 once) and smollm2 (134,515,008 =
# 30 layers + 49152x576 once); `tiny` is built with tie_word_embeddings=True in harness.cell.models. Every other
# family in conf/model/ (llama2, llama3, mistral, phi2, phi3) ships an untied lm_head; a new family is
# assumed untied, which over-counts (conservative). ModelConfig has no field for this.
TIED_EMBEDDING_FAMILIES = frozenset({"gemma", "smollm2", "tiny"})

# --- LoRA / optimizer ----------------------------------------------------------------------------
# PEFT keeps adapter weights in fp32 (get_peft_model's autocast_adapter_dtype=True upcasts bf16/fp16
# adapters); their gradients are fp32; torch AdamW keeps exp_avg and exp_avg_sq, 2 x fp32 per param.
LORA_WEIGHT_BYTES = 4
LORA_GRAD_BYTES = 4
ADAMW_STATE_BYTES = 8

# --- Activations (training) ----------------------------------------------------------------------
# Method of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
# sec. 4.1: 34*s*b*h bytes per layer for a GPT layer in 16-bit, plus 5*a*s^2*b for attention scores),
# recounted for the layers trained here (pre-norm decoder, gated MLP, LoRA with dropout), in tensors
# saved for backward per token per layer:
#   2 norms x (input + output)               4h
#   q, k (after RoPE), v, attention output    2*q_dim + 2*kv_dim   (SDPA saves these + a logsumexp)
#   MLP: gate, up, act(gate), act*up          4i   (also covers Phi-2's tanh-GELU intermediates)
#   LoRA dropout copy of each target's input  sum(in_features) + a 1-byte mask per element (dropout > 0)
# Measured on this CPU (random Llama with SmolLM2's dims, fp32, r=16 on 7 targets, dropout 0.05, batch 4 x
# 512, malloc forced to return memory): 120 bytes/token/layer/hidden against 113 from this count, hence
# the 1.1 margin (fp32 norm internals, RoPE and SiLU temporaries).
ACTIVATION_MARGIN = 1.1
# Attention scores (5*a*s^2*b in Korthikanti) are never materialized here: on CUDA the harness loads with
# attn_implementation="sdpa" (memory-efficient/flash kernels keep only a logsumexp), and on CPU
# transformers 5 defaults to SDPA too, whose CPU kernel is flash attention even with a padding mask
# (measured: grad_fn ScaledDotProductFlashAttentionForCpuBackward; 87 MiB saved where the scores would
# be 576 MiB). Only the boolean 4D padding mask, b*s^2 bytes, is counted.
MASK_BYTES = 1
# Gradient checkpointing (torch.utils.checkpoint per decoder layer) keeps each layer's input (the
# residual stream, h per token) and recomputes one layer at a time during backward: that layer's full
# activations plus the gradients flowing through it. Measured on CPU: ~1.1 layers' worth above the kept
# inputs; 2 is used (conservative).
CHECKPOINT_LIVE_LAYERS = 2
# Loss logits. TRL's SFTTrainer (trl >= 1.16, pinned in pyproject) patches the model with a fused LM head
# (trl.trainer.utils.add_fused_lm_head -> trl.kernels.chunked_logprob.ChunkedLogProbFunction): the full
# (tokens x vocab) logits are never materialized; the head runs on tiles of at most 4096 tokens x 32768
# vocabulary entries (TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE), forward and again in backward.
#   CPU (no Triton: the tile is folded with torch ops): measured peak 8.2-9 x one fp32 tile (tokens 512 to
#   4096, vocab 16k to 128k): 9 fp32 tiles.
#   CUDA (Triton folds the tile in place): one tile in the compute dtype plus the weight chunk cast to it;
#   not measured here (no GPU): 3 fp32 tiles (conservative) + the weight chunk.
# Without the fused head (a custom compute_loss_func or label smoothing) the loss would hold ~4 fp32 copies
# of the full logits (measured 4.3x on CPU): LOGIT_BYTES_UNFUSED, kept for reference and tests.
FUSED_TILE_TOKENS = 4096
FUSED_TILE_VOCAB = 32768
FUSED_TILE_FP32_COPIES_CPU = 9
FUSED_TILE_FP32_COPIES_CUDA = 3
TRL_FUSED_LM_HEAD = True
LOGIT_BYTES_UNFUSED = 16

# --- Generation ----------------------------------------------------------------------------------
# KV cache: 2 (k and v) x layers x kv_heads x head_dim x (prompt + new tokens) x batch x element bytes.
# The prompt is the longest eval prompt of the data (qlora.max_length where it could not be counted).
# Generation computes logits for the last position only (logits_to_keep=1): batch x vocab x 4 bytes,
# doubled for the logits processors' fp32 copy. Prefill also needs one layer's working set (no grad).
LOGIT_BYTES_GENERATE = 8
# transformers' DynamicCache grows each layer's keys and values with torch.cat, one token per step: the old
# and the grown tensor coexist while it copies, so the cache briefly takes twice its size. Counted on CPU,
# where the estimate is checked against measured peaks; on CUDA the 1 GB overhead below is meant to cover it.
KV_GROWTH_COPIES_CPU = 2

# --- Choice scoring (eval.scoring=choices, harness.cell.choices._batch_logliks) -----------------------------
# Nothing is generated (eval.max_new_tokens plays no part). One prefill of the batch's prompts, logits for the last
# position only; then the cache is repeated for every label (Cache.batch_repeat_interleave) and all labels continue
# from it in one forward pass over the longest label's tokens but its first: batch x labels rows. Where every label
# is one token, nothing is repeated. KV: rows x (prompt + continuation) tokens, plus one layer's copy: the repeat
# and the continuation's torch.cat each replace one layer's tensors at a time, once, so unlike step-by-step
# generation (KV_GROWTH_COPIES_CPU) the whole cache is never held twice. Measured on the catalog demo's choice cell
# (SmolLM2, batch 8 x 8 labels, prompts of 111 tokens, labels of up to 6): peak RSS 1.62 GB; the estimate is
# 2.00 GB with one layer's copy, 2.49 GB (1.54x, outside the band tests/test_preflight.py holds) were the cache
# counted twice. Working set: the larger of the prompts' pass and the labels'
# pass (one after the other). Logits: the prompts' last position (fp32 + its log_softmax, 8 bytes), repeated once
# per label before the gather (4 bytes per row), and the continuation's rows x width x vocabulary in the model's
# dtype, an fp32 copy of it where that dtype is 16-bit, and the log_softmax.
CHOICE_FIRST_LOGIT_BYTES = 8
CHOICE_REPEATED_LOGIT_BYTES = 4
CHOICE_LOGSOFTMAX_BYTES = 4

# --- Overhead ------------------------------------------------------------------------------------
# CUDA: the CUDA context and cuBLAS workspaces (~0.3-0.6 GB, outside torch's allocator but on the device)
# plus caching-allocator fragmentation: 1.0 GB. With 4-bit, bitsandbytes dequantizes one weight at a time
# to the compute dtype: the largest linear layer in 16-bit is added. The overheads also cover the RAG
# methods' sentence-transformers embedder (all-MiniLM-L6-v2, ~90 MB).
CUDA_OVERHEAD_GB = 1.0
# CPU: peak RSS counts more than tensors, in three parts:
# - the runtime: the interpreter, torch, transformers, peft, trl, datasets and the harness, with the tokenizer
#   and the data: measured 0.53 GB RSS after the imports, 0.62-0.64 GB at the peak of a whole tiny_random instruct
#   cell (weights and activations of a few MB); a smollm2_135m base cell peaks at 1.05 GB, its 0.50 GB of
#   weights + 0.55. RSS also counts the pages of the shared libraries a process has touched, and how many of those
#   are resident depends on the page cache: in a freshly installed venv (what CI runs) libtorch_cpu.so alone had
#   95 MB resident against 50 MB in an older one, the imports 0.49 GB against 0.43, and the same tiny_random cell
#   peaked at 0.75-0.76 GB against 0.64 (2026-12-04). CPU_RUNTIME_GB = 0.8 keeps the estimate above both.
# - the RAG methods' embedder: sentence-transformers + faiss + all-MiniLM-L6-v2, measured +0.14 GB.
# - heap slack: glibc keeps the freed blocks of the phase's varying-size transient tensors (batches of
#   different lengths, a KV cache regrown every step), so RSS rises above the live tensors by a share of the
#   transient phase (training: gradients + activations; generation: KV cache + prefill + logits). The original
#   calibration (forced malloc trimming vs not) saw RSS grow 1.5x the activation allocations; over a whole
#   instruct run the HR-sample cell's RSS kept rising, from 2.48 GB after 5 steps to 2.95 GB after 45.
#   CPU_HEAP_SLACK = 0.6 of the transient phase keeps the estimate at or above those peaks (tests/test_preflight.py
#   measures them: tests `test_cpu_estimate_brackets_the_measured_peak*`).
CPU_RUNTIME_GB = 0.8
CPU_RAG_RUNTIME_GB = 0.15
CPU_HEAP_SLACK = 0.6
# 4-bit on a CPU (hardware=cpu_qlora): bitsandbytes' CPU path dequantizes every layer to bf16 at each call and
# casts activations to and fro, so the heap churns more than in fp32. Measured on tiny_random instruct (weights of
# a few MB): peak RSS 0.71 GB in 4-bit against 0.61 GB in fp32 for the same cell alone, and up to 0.82 GB as a
# later cell of a 6-method 4-bit sweep; 0.15 GB covers both.
CPU_4BIT_RUNTIME_GB = 0.15
CHECKPOINT_BYTES_CPU = 4

# Lower bounds for the suggestions' searches.
MIN_MAX_LENGTH = 128


@dataclass(frozen=True)
class SequenceLengths:
    """The longest sequences a cell will run, in the model's tokens."""

    train: int        # prompt + answer of the longest training example (uncapped; the estimate caps it)
    eval_prompt: int  # the longest rendered eval prompt (generation adds eval.max_new_tokens)
    source: str = "dataset"


@dataclass(frozen=True)
class LabelShape:
    """What choice scoring (eval.scoring=choices) adds to an eval batch: every prompt continues once per label."""

    count: int    # labels scored after every prompt
    longest: int  # the longest label continuation, in the model's tokens (>= 1)
    source: str = "tokenizer"  # or "characters": no tokenizer before the weights, a token taken as >= 1 character


@dataclass
class MemoryEstimate:
    weights_gb: float
    lora_gb: float
    optimizer_gb: float
    gradients_gb: float
    # Training: saved activations + the loss's logits (+ padding mask). 0 without training.
    activations_gb: float
    # Generation: KV cache + prefill working set + next-token logits (+ the merged 16-bit copy after 4-bit training).
    kv_cache_gb: float
    overhead_gb: float
    total_gb: float
    available_gb: float
    fits: bool
    device: str  # "cuda" | "cpu"
    # Every assumption and intermediate figure, for messages, logs and the ledger.
    breakdown: dict = field(default_factory=dict)
    # What the estimate was computed for, so `suggestions` can re-estimate variations.
    trains: bool = field(default=False, repr=False)
    eval_cfg: EvalConfig | None = field(default=None, repr=False)
    headroom: float = field(default=0.9, repr=False)
    lengths: SequenceLengths | None = field(default=None, repr=False)
    retrieves: bool = field(default=False, repr=False)
    choices: LabelShape | None = field(default=None, repr=False)

    def terms(self) -> dict[str, float]:
        """The memory terms, largest first (the phase that is not the peak is still listed)."""
        items = {
            "weights": self.weights_gb,
            "activations": self.activations_gb,
            "kv_cache": self.kv_cache_gb,
            "lora": self.lora_gb,
            "optimizer": self.optimizer_gb,
            "gradients": self.gradients_gb,
            "overhead": self.overhead_gb,
        }
        return dict(sorted(items.items(), key=lambda kv: -kv[1]))


@dataclass
class Suggestion:
    overrides: dict[str, str]  # Hydra overrides, e.g. {"qlora.batch_size": "1", "qlora.grad_accum": "8"}
    estimate: MemoryEstimate
    note: str = ""

    @property
    def text(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.overrides.items())
        verdict = "fits" if self.estimate.fits else "not enough alone"
        note = f"; {self.note}" if self.note else ""
        return f"{args} -> {self.estimate.total_gb:.1f} GB, {verdict}{note}"


class PreflightRefusal(Exception):
    """The cell's estimated peak memory exceeds what the hardware preset offers."""

    def __init__(self, model: ModelConfig, hardware: HardwareConfig, estimate: MemoryEstimate,
                 suggested: list[Suggestion], method: str | None = None) -> None:
        self.model = model.name
        self.hardware = hardware.name
        self.estimate = estimate
        self.suggestions = [s.text for s in suggested]
        top = ", ".join(f"{name} {gb:.1f} GB" for name, gb in list(estimate.terms().items())[:3])
        cell = f"model={model.name}" + (f" method={method}" if method else "")
        message = (
            f"{cell} does not fit hardware={hardware.name}: estimated peak {estimate.total_gb:.1f} GB > "
            f"{estimate.available_gb:.1f} GB available ({hardware.memory_gb:g} GB x {estimate.headroom:g} headroom); "
            f"largest terms: {top}"
        )
        if self.suggestions:
            message += ". To make it fit: " + "; ".join(f"({i}) {s}" for i, s in enumerate(self.suggestions, 1))
        else:
            message += ". No change of batch, length, checkpointing, 4-bit or hardware preset makes it fit."
        super().__init__(message)


# ------------------------------------------------------------------------------------------------
# Model geometry


def head_dim(model: ModelConfig) -> int:
    # hidden / heads unless the config says otherwise (gemma-2b: 2048 / 8 = 256; gemma3_270m sets 256, not 160).
    return model.head_dim or model.hidden_size // model.n_heads


def tied_embeddings(model: ModelConfig) -> bool:
    return model.family in TIED_EMBEDDING_FAMILIES


def module_dims(model: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each LoRA-targetable linear layer, by module name."""
    h, i = model.hidden_size, model.intermediate_size
    q_dim = model.n_heads * head_dim(model)
    kv_dim = model.n_kv_heads * head_dim(model)
    return {
        # Llama / Mistral / Gemma / SmolLM2 (and Phi-2's q/k/v)
        "q_proj": (h, q_dim),
        "k_proj": (h, kv_dim),
        "v_proj": (h, kv_dim),
        "o_proj": (q_dim, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
        # Phi-2: attention output `dense`, MLP `fc1` / `fc2`
        "dense": (q_dim, h),
        "fc1": (h, i),
        "fc2": (i, h),
        # Phi-3: fused projections
        "qkv_proj": (h, q_dim + 2 * kv_dim),
        "gate_up_proj": (h, 2 * i),
    }


def lora_targets(model: ModelConfig, qlora: QLoraConfig) -> list[str]:
    return list(qlora.target_modules or model.lora_target_modules)


def lora_param_count(model: ModelConfig, qlora: QLoraConfig) -> tuple[int, list[str]]:
    """r x (in + out) per target module per layer (A is r x in, B is out x r); unknown names are
    counted as the widest layer of the model (conservative) and returned so the caller can say so."""
    dims = module_dims(model)
    widest = max(model.hidden_size, model.intermediate_size)
    per_layer, unknown = 0, []
    for name in lora_targets(model, qlora):
        if name not in dims:
            unknown.append(name)
        fan_in, fan_out = dims.get(name, (widest, widest))
        per_layer += qlora.r * (fan_in + fan_out)
    return per_layer * model.n_layers, unknown


# ------------------------------------------------------------------------------------------------
# The estimate: one helper per memory term, in bytes, combined by `estimate_memory`


def merged_copy_fits(model: ModelConfig, hardware: HardwareConfig) -> bool:
    """Whether harness.cell.models.merged_eval_model makes the merged 16-bit evaluation copy after 4-bit training:
    its weights plus a 15% margin for the eval batch's KV cache fit in 90% of the preset's memory."""
    return model.params_b * 1e9 * 2 * 1.15 <= hardware.memory_gb * 0.9 * GIB


@dataclass(frozen=True)
class Precision:
    """How many bytes the cell's tensors take on this hardware."""

    on_cuda: bool
    four_bit: bool  # CUDA, or a cpu_4bit preset (hardware=cpu_qlora)
    # Activations are fp32 on CPU, and also with 4-bit on CUDA: the fp32 embeddings make the residual
    # stream fp32, and bitsandbytes' Linear4bit casts each output back to its input's dtype.
    activation_bytes: int
    half_bytes: int = 2  # bf16, or fp16 where the GPU has no bf16 (T4): both 2 bytes
    # A CPU cell under bf16 autocast (hardware.precision, harness/core/precision.py). Its residual stream stays
    # fp32 (fp32 embeddings, norms autocast keeps in fp32), so activations are still counted at 4 bytes; what
    # autocast adds is the bf16 copy of every frozen linear weight, which each matmul saves for its backward.
    cpu_bf16_autocast: bool = False


def precision_of(hardware: HardwareConfig, qlora: QLoraConfig) -> Precision:
    on_cuda = hardware.accelerator == Accelerator.cuda
    four_bit = loads_in_4bit(hardware, qlora)
    return Precision(on_cuda, four_bit, activation_bytes=4 if (not on_cuda or four_bit) else 2,
                     cpu_bf16_autocast=resolve_precision(hardware, four_bit).cpu_autocast)


def layer_linear_params(model: ModelConfig) -> int:
    """Weights of one layer's attention and MLP projections (q, k, v, o, gate, up, down)."""
    q_dim, kv_dim = model.n_heads * head_dim(model), model.n_kv_heads * head_dim(model)
    return model.hidden_size * (2 * q_dim + 2 * kv_dim + 3 * model.intermediate_size)


def layer_elements(model: ModelConfig) -> int:
    """Elements per token per layer that a forward pass keeps (see the comment on ACTIVATION_MARGIN), LoRA aside."""
    q_dim, kv_dim = model.n_heads * head_dim(model), model.n_kv_heads * head_dim(model)
    return 4 * model.hidden_size + 2 * q_dim + 2 * kv_dim + 4 * model.intermediate_size


@dataclass(frozen=True)
class WeightsTerm:
    bytes: float
    total_params: float
    embedding_params: int
    body_bytes_per_param: float
    embedding_bytes_per_param: int
    description: str
    notes: tuple[str, ...]


def weights_term(model: ModelConfig, qlora: QLoraConfig, hardware: HardwareConfig, precision: Precision) -> WeightsTerm:
    """The base model's weights as loaded: NF4 body with fp32 embeddings in 4-bit, else 16-bit (CUDA) or fp32 (CPU)."""
    notes = []
    total_params = model.params_b * 1e9
    embedding_params = model.vocab_size * model.hidden_size * (1 if tied_embeddings(model) else 2)
    body_params = max(total_params - embedding_params, 0.0)
    if precision.four_bit:
        const_bits = QUANT_CONST_BITS_DOUBLE if qlora.bnb_4bit_use_double_quant else QUANT_CONST_BITS
        body_bytes_per_param = (NF4_BITS + const_bits) / 8
        # Embeddings, lm_head and norms are not quantized, and peft's prepare_model_for_kbit_training
        # (called by harness.cell.models for every 4-bit load) casts every non-4-bit bf16/fp16 parameter to
        # fp32: 4 bytes, not the 2 they are loaded in. Norms/biases (<0.1%) are counted with the body.
        embedding_bytes_per_param = 4
        description = f"{qlora.bnb_4bit_quant_type} {NF4_BITS + const_bits:.3f} bit/param; embeddings fp32"
    elif precision.on_cuda:
        body_bytes_per_param = embedding_bytes_per_param = precision.half_bytes
        description = "bf16" if hardware.supports_bf16 else "fp16 (no bf16 on this GPU)"
    else:
        # harness.cell.models loads fp32 on CPU (bf16 matmuls are emulated there); load_in_4bit is ignored.
        body_bytes_per_param = embedding_bytes_per_param = 4
        description = "fp32 (CPU)"
        if qlora.load_in_4bit:
            notes.append("qlora.load_in_4bit is ignored on CPU: fp32 LoRA")
    if model.source == ModelSource.gguf_package:
        notes.append("the first run also converts the GGUF file once (about one more fp32 copy of the weights)")
    return WeightsTerm(body_params * body_bytes_per_param + embedding_params * embedding_bytes_per_param,
                       total_params, embedding_params, body_bytes_per_param, embedding_bytes_per_param,
                       description, tuple(notes))


@dataclass(frozen=True)
class LoraTerm:
    """The adapter's weights, their gradients and AdamW's states: all fp32, all zero without training."""

    params: int
    targets: tuple[str, ...]
    unknown_targets: tuple[str, ...]

    @property
    def weights_bytes(self) -> int:
        return self.params * LORA_WEIGHT_BYTES

    @property
    def gradients_bytes(self) -> int:
        return self.params * LORA_GRAD_BYTES

    @property
    def optimizer_bytes(self) -> int:
        return self.params * ADAMW_STATE_BYTES


NO_LORA = LoraTerm(0, (), ())


def lora_term(model: ModelConfig, qlora: QLoraConfig) -> LoraTerm:
    params, unknown = lora_param_count(model, qlora)
    return LoraTerm(params, tuple(lora_targets(model, qlora)), tuple(unknown))


@dataclass(frozen=True)
class ActivationsTerm:
    """Training's transient memory: what each layer saves for backward, the loss's logits, the padding mask."""

    layers_bytes: float
    logits_bytes: float
    mask_bytes: int
    train_length: int  # the longest padded training example, in tokens
    tokens_per_micro_batch: int
    bytes_per_token_per_layer: float
    checkpointing: bool

    @property
    def gb(self) -> float:
        return self.layers_bytes / GIB + self.logits_bytes / GIB + self.mask_bytes / GIB


NO_TRAINING = ActivationsTerm(0.0, 0.0, 0, 0, 0, 0, False)


def activations_term(model: ModelConfig, qlora: QLoraConfig, hardware: HardwareConfig,
                     lengths: SequenceLengths | None, precision: Precision) -> ActivationsTerm:
    h, V, act_bytes = model.hidden_size, model.vocab_size, precision.activation_bytes
    widest = max(h, model.intermediate_size)
    dims = module_dims(model)
    dropout_elements = (
        sum(dims.get(name, (widest, widest))[0] for name in lora_targets(model, qlora)) if qlora.dropout > 0 else 0
    )
    layer_bytes = ((layer_elements(model) + dropout_elements) * act_bytes + dropout_elements) * ACTIVATION_MARGIN
    # The longest padded batch: batch_size rows of the longest example (the data's own, capped by max_length).
    train_length = min(lengths.train, qlora.max_length) if lengths else qlora.max_length
    tokens = qlora.batch_size * train_length
    checkpointing = uses_gradient_checkpointing(hardware, qlora)
    if checkpointing:
        layers = tokens * (model.n_layers * h * act_bytes + CHECKPOINT_LIVE_LAYERS * layer_bytes)
    else:
        layers = tokens * model.n_layers * layer_bytes
    if precision.cpu_bf16_autocast:  # the bf16 weight copies the live layers saved for backward
        layers += layer_linear_params(model) * 2 * (CHECKPOINT_LIVE_LAYERS if checkpointing else model.n_layers)
    if TRL_FUSED_LM_HEAD:
        tile = min(tokens, FUSED_TILE_TOKENS) * min(V, FUSED_TILE_VOCAB)
        copies = FUSED_TILE_FP32_COPIES_CUDA if precision.on_cuda else FUSED_TILE_FP32_COPIES_CPU
        logits = tile * 4 * copies + (min(V, FUSED_TILE_VOCAB) * h * precision.half_bytes if precision.on_cuda else 0)
    else:
        logits = tokens * V * LOGIT_BYTES_UNFUSED
    mask = qlora.batch_size * train_length**2 * MASK_BYTES
    return ActivationsTerm(layers, logits, mask, train_length, tokens, layer_bytes, checkpointing)


def merged_copy_bytes(model: ModelConfig, hardware: HardwareConfig, precision: Precision) -> float:
    """After 4-bit training the harness evaluates a merged 16-bit copy (harness.cell.models.merged_eval_model)
    where it fits; the 4-bit model is freed first, so that phase holds the copy instead of the static terms."""
    if not (precision.four_bit and merged_copy_fits(model, hardware)):
        return 0.0
    merged = model.params_b * 1e9 * precision.half_bytes
    if not precision.on_cuda:
        # On a CPU the checkpoint the copy is read from is memory-mapped, and its pages count in RSS while the
        # 16-bit copy is built from them: 4 bytes a parameter for the fp32 GGUF cache (a hub checkpoint is
        # usually 2). Measured: smollm2_135m instruct on cpu_qlora peaked at 1.41 GB RSS against 1.96 estimated,
        # once the freed 4-bit model's heap is returned (harness.cell.predict.return_freed_heap); 1.71-2.00 GB
        # before, depending on how fragmented training had left the heap.
        merged += model.params_b * 1e9 * CHECKPOINT_BYTES_CPU
    return merged


@dataclass(frozen=True)
class GenerationTerm:
    """Evaluation's memory: KV cache, prefill working set, next-token logits, and the merged copy if any."""

    kv_bytes: float
    prefill_bytes: float
    logits_bytes: int
    merged_bytes: float
    tokens_per_sequence: int

    @property
    def transient_bytes(self) -> float:
        return self.kv_bytes + self.prefill_bytes + self.logits_bytes

    @property
    def gb(self) -> float:
        return (self.transient_bytes + self.merged_bytes) / GIB


def generation_term(model: ModelConfig, eval_cfg: EvalConfig, eval_prompt: int, merged_bytes: float,
                    precision: Precision) -> GenerationTerm:
    # The merged copy is 16-bit, and so are its KV cache and activations.
    gen_bytes = precision.half_bytes if merged_bytes else precision.activation_bytes
    tokens = eval_prompt + eval_cfg.max_new_tokens
    kv_dim = model.n_kv_heads * head_dim(model)
    growth = 1 if precision.on_cuda else KV_GROWTH_COPIES_CPU
    kv = 2 * model.n_layers * kv_dim * tokens * eval_cfg.batch_size * gen_bytes * growth
    prefill = eval_cfg.batch_size * eval_prompt * layer_elements(model) * gen_bytes * ACTIVATION_MARGIN
    prefill += eval_cfg.batch_size * tokens**2 * MASK_BYTES
    logits = eval_cfg.batch_size * model.vocab_size * LOGIT_BYTES_GENERATE
    return GenerationTerm(kv, prefill, logits, merged_bytes, tokens)


def choice_term(model: ModelConfig, eval_cfg: EvalConfig, eval_prompt: int, shape: LabelShape, merged_bytes: float,
                precision: Precision) -> GenerationTerm:
    """Choice scoring's memory (see CHOICE_FIRST_LOGIT_BYTES): the prompts' KV cache repeated for every label and
    continued by the labels' tokens, the larger pass's working set, and the logits of the prompts' last position
    and of every label's tokens."""
    gen_bytes = precision.half_bytes if merged_bytes else precision.activation_bytes
    batch, width = eval_cfg.batch_size, shape.longest - 1
    rows = batch * shape.count if width > 0 else batch
    tokens = eval_prompt + width
    kv_dim = model.n_kv_heads * head_dim(model)
    kv = 2 * (model.n_layers + 1) * kv_dim * rows * tokens * gen_bytes
    per_token = layer_elements(model) * gen_bytes * ACTIVATION_MARGIN
    prompt_pass = batch * eval_prompt * per_token + batch * eval_prompt**2 * MASK_BYTES
    label_pass = rows * width * per_token + rows * width * tokens * MASK_BYTES
    continuation_bytes = gen_bytes + (4 if gen_bytes < 4 else 0) + CHOICE_LOGSOFTMAX_BYTES
    logits = model.vocab_size * (batch * CHOICE_FIRST_LOGIT_BYTES
                                 + batch * shape.count * CHOICE_REPEATED_LOGIT_BYTES
                                 + rows * width * continuation_bytes)
    return GenerationTerm(kv, max(prompt_pass, label_pass), logits, merged_bytes, tokens)


def overhead_gb(model: ModelConfig, precision: Precision, retrieves: bool, train_phase_gb: float,
                generation: GenerationTerm) -> float:
    """What is not a tensor of the model: the CUDA context, or on a CPU the runtime and the heap's slack."""
    if precision.on_cuda:
        overhead = CUDA_OVERHEAD_GB
    else:
        overhead = (CPU_RUNTIME_GB + (CPU_RAG_RUNTIME_GB if retrieves else 0.0)
                    + CPU_HEAP_SLACK * max(train_phase_gb, generation.transient_bytes / GIB))
    if precision.four_bit:
        # the largest quantized layer: an MLP projection (fused gate_up in Phi-3)
        largest = model.hidden_size * model.intermediate_size * (2 if model.family == "phi3" else 1)
        overhead += largest * precision.half_bytes / GIB + (0.0 if precision.on_cuda else CPU_4BIT_RUNTIME_GB)
    return overhead


def estimate_memory(model: ModelConfig, trains: bool, qlora: QLoraConfig, eval_cfg: EvalConfig,
                    hardware: HardwareConfig, headroom: float = 0.9,
                    lengths: SequenceLengths | None = None, retrieves: bool = False,
                    choices: LabelShape | None = None) -> MemoryEstimate:
    """`choices`: the label set's shape where eval.scoring=choices; without it (a plan, which loads no data) the
    evaluation phase is counted as generation and the breakdown says so."""
    precision = precision_of(hardware, qlora)
    weights = weights_term(model, qlora, hardware, precision)
    lora = lora_term(model, qlora) if trains else NO_LORA
    activations = activations_term(model, qlora, hardware, lengths, precision) if trains else NO_TRAINING
    eval_prompt = lengths.eval_prompt if lengths else qlora.max_length
    merged = merged_copy_bytes(model, hardware, precision) if trains and eval_cfg.merge_adapter else 0.0
    scores_choices = eval_cfg.scoring == "choices" and choices is not None
    generation = (choice_term(model, eval_cfg, eval_prompt, choices, merged, precision) if scores_choices
                  else generation_term(model, eval_cfg, eval_prompt, merged, precision))

    static_gb = weights.bytes / GIB + lora.weights_bytes / GIB + lora.optimizer_bytes / GIB
    train_phase_gb = lora.gradients_bytes / GIB + activations.gb if trains else 0.0
    overhead = overhead_gb(model, precision, retrieves, train_phase_gb, generation)
    # harness.cell.pipeline frees the 4-bit model (adapter and optimizer with it) before the merged copy loads.
    generate_total = generation.gb + (0.0 if merged else static_gb)
    total_gb = overhead + max(static_gb + train_phase_gb, generate_total)
    available_gb = hardware.memory_gb * headroom
    breakdown = {
        **_breakdown(model, (weights, lora, activations, generation), precision, lengths, eval_prompt),
        "peak_phase": "train" if trains and static_gb + train_phase_gb >= generate_total else "generate",
        "headroom": headroom,
        "notes": _notes(model, weights, lora),
    }
    if scores_choices:
        breakdown["choice_labels"] = {"count": choices.count, "longest_tokens": choices.longest,
                                      "source": choices.source}
    elif eval_cfg.scoring == "choices":
        breakdown["notes"].append("eval.scoring=choices counted as generation: the label set was not read")
    return MemoryEstimate(
        weights_gb=weights.bytes / GIB,
        lora_gb=lora.weights_bytes / GIB,
        optimizer_gb=lora.optimizer_bytes / GIB,
        gradients_gb=lora.gradients_bytes / GIB,
        activations_gb=activations.gb,
        kv_cache_gb=generation.gb,
        overhead_gb=overhead,
        total_gb=total_gb,
        available_gb=available_gb,
        fits=total_gb <= available_gb,
        device="cuda" if precision.on_cuda else "cpu",
        breakdown=breakdown,
        trains=trains,
        eval_cfg=eval_cfg,
        headroom=headroom,
        lengths=lengths,
        retrieves=retrieves,
        choices=choices,
    )


def _breakdown(model: ModelConfig, terms: tuple[WeightsTerm, LoraTerm, ActivationsTerm, GenerationTerm],
               precision: Precision, lengths: SequenceLengths | None, eval_prompt: int) -> dict:
    """Every assumption and intermediate figure, for messages, logs and the ledger."""
    weights, lora, activations, generation = terms
    return {
        "weights": weights.description,
        "params": int(weights.total_params),
        "embedding_params": int(weights.embedding_params),
        "tied_embeddings": tied_embeddings(model),
        "body_bytes_per_param": round(weights.body_bytes_per_param, 4),
        "embedding_bytes_per_param": weights.embedding_bytes_per_param,
        "lora_params": lora.params,
        "lora_targets": list(lora.targets),
        "activation_bytes_per_element": precision.activation_bytes,
        "gradient_checkpointing": activations.checkpointing,
        "sequence_lengths": {"train": activations.train_length, "eval_prompt": eval_prompt,
                             "source": lengths.source if lengths else "qlora.max_length (worst case)"},
        "train_tokens_per_micro_batch": activations.tokens_per_micro_batch,
        "activation_bytes_per_token_per_layer": round(activations.bytes_per_token_per_layer),
        "layers_gb": activations.layers_bytes / GIB,
        "logits_gb": activations.logits_bytes / GIB,
        "mask_gb": activations.mask_bytes / GIB,
        "attention": "sdpa: no seq^2 score term",
        "loss_logits": "trl fused LM head: tiles only" if TRL_FUSED_LM_HEAD else "full logits",
        "generation_tokens_per_sequence": generation.tokens_per_sequence,
        "kv_gb": generation.kv_bytes / GIB,
        "prefill_gb": generation.prefill_bytes / GIB,
        "merged_16bit_copy_gb": generation.merged_bytes / GIB,
    }


def _notes(model: ModelConfig, weights: WeightsTerm, lora: LoraTerm) -> list[str]:
    notes = list(weights.notes)
    if lora.unknown_targets:
        widest = max(model.hidden_size, model.intermediate_size)
        notes.append(f"unknown target modules {list(lora.unknown_targets)} counted as {widest} in and out")
    return notes


# ------------------------------------------------------------------------------------------------
# Suggestions


def hardware_presets() -> list[HardwareConfig]:
    return [load_option("hardware", p.stem, HardwareConfig) for p in sorted(Path(CONF_DIR, "hardware").glob("*.yaml"))]


def suggest(est: MemoryEstimate, model: ModelConfig, qlora: QLoraConfig, hardware: HardwareConfig) -> list[Suggestion]:
    """Concrete changes that lower the estimate, each with the estimate it gives. Order: changes that fit
    on their own (the ones that change results least first), then a combination, then the cheapest
    larger preset, then changes that help but are not enough alone."""
    eval_cfg = est.eval_cfg or EvalConfig()

    def again(q: QLoraConfig = qlora, e: EvalConfig = eval_cfg, hw: HardwareConfig = hardware) -> MemoryEstimate:
        return estimate_memory(model, est.trains, q, e, hw, est.headroom, est.lengths, est.retrieves, est.choices)

    def changed(new: MemoryEstimate) -> str:
        deltas = []
        for name, old_gb in est.terms().items():
            new_gb = new.terms()[name]
            if abs(new_gb - old_gb) >= 0.05:
                deltas.append((old_gb - new_gb, f"{name} {old_gb:.1f} -> {new_gb:.1f} GB"))
        return ", ".join(text for _, text in sorted(deltas, reverse=True)[:2])

    singles: list[Suggestion] = []
    on_cuda = hardware.accelerator == Accelerator.cuda
    gc_on = uses_gradient_checkpointing(hardware, qlora)

    if est.trains and not gc_on:
        q = replace(qlora, gradient_checkpointing=True)
        new = again(q)
        singles.append(Suggestion({"qlora.gradient_checkpointing": "true"}, new, changed(new) + "; slower steps"))

    if est.trains and qlora.batch_size > 1:
        q, new = _smallest_fitting(
            [replace(qlora, batch_size=b, grad_accum=qlora.grad_accum * math.ceil(qlora.batch_size / b))
             for b in _halvings(qlora.batch_size, 1)],
            again,
        )
        singles.append(Suggestion(
            {"qlora.batch_size": str(q.batch_size), "qlora.grad_accum": str(q.grad_accum)}, new,
            changed(new) + f"; effective batch {qlora.batch_size * qlora.grad_accum} kept"))

    if not est.trains or est.kv_cache_gb > est.gradients_gb + est.activations_gb:
        if eval_cfg.batch_size > 1:
            e, new = _smallest_fitting(
                [replace(eval_cfg, batch_size=b) for b in _halvings(eval_cfg.batch_size, 1)],
                lambda e: again(e=e),
            )
            singles.append(Suggestion({"eval.batch_size": str(e.batch_size)}, new, changed(new)))

    if (on_cuda or hardware.cpu_4bit) and not qlora.load_in_4bit:
        new = again(replace(qlora, load_in_4bit=True))
        singles.append(Suggestion({"qlora.load_in_4bit": "true"}, new, changed(new) + "; QLoRA instead of LoRA"))

    if qlora.max_length > MIN_MAX_LENGTH:
        q, new = _smallest_fitting(
            [replace(qlora, max_length=n) for n in _halvings(qlora.max_length, MIN_MAX_LENGTH)], again
        )
        singles.append(Suggestion({"qlora.max_length": str(q.max_length)}, new,
                                  changed(new) + "; truncates longer examples"))

    singles = [s for s in singles if s.estimate.total_gb < est.total_gb - 1e-9]
    fitting = [s for s in singles if s.estimate.fits]
    helping = sorted((s for s in singles if not s.estimate.fits), key=lambda s: s.estimate.total_gb)

    combined = None
    if not fitting:
        combined = _combination(est, model, qlora, eval_cfg, hardware, again)

    bigger = None
    candidates = []
    for hw in hardware_presets():
        if hw.name == hardware.name or hw.accelerator != Accelerator.cuda:
            continue
        new = again(hw=hw)
        if new.fits:
            candidates.append((hw.usd_per_hour, hw.memory_gb, hw.name, new))
    if candidates:
        price, _, name, new = min(candidates)
        bigger = Suggestion({"hardware": name}, new, f"{new.available_gb:.1f} GB available, ${price:g}/h")

    ordered = fitting + ([combined] if combined else []) + ([bigger] if bigger else []) + helping
    return ordered


def suggestions(est: MemoryEstimate, model: ModelConfig, qlora: QLoraConfig, hardware: HardwareConfig) -> list[str]:
    return [s.text for s in suggest(est, model, qlora, hardware)]


def _halvings(start: int, floor: int) -> list[int]:
    """start/2, start/4, ... down to floor (included), largest first."""
    values, n = [], start
    while n > floor:
        n = max(n // 2, floor)
        values.append(n)
    return values


def _smallest_fitting(options: list, estimate) -> tuple:
    """The first (least drastic) option that fits, else the last (most drastic) one."""
    result = None
    for option in options:
        result = (option, estimate(option))
        if result[1].fits:
            return result
    return result


def _combination(est, model, qlora, eval_cfg, hardware, again) -> Suggestion | None:
    """Stack the software changes until the cell fits: checkpointing, 4-bit, batch 1, shorter sequences,
    smaller generation batches. None when the stack changes nothing or still does not fit."""
    overrides: dict[str, str] = {}
    q, e = qlora, eval_cfg
    new = est
    steps = []
    if est.trains and not uses_gradient_checkpointing(hardware, qlora):
        steps.append(
            lambda q, e: (replace(q, gradient_checkpointing=True), e, {"qlora.gradient_checkpointing": "true"})
        )
    if (hardware.accelerator == Accelerator.cuda or hardware.cpu_4bit) and not qlora.load_in_4bit:
        steps.append(lambda q, e: (replace(q, load_in_4bit=True), e, {"qlora.load_in_4bit": "true"}))
    for step in steps:
        q_next, e_next, more = step(q, e)
        tried = again(q_next, e_next)
        if tried.total_gb >= new.total_gb:  # e.g. 4-bit without checkpointing: fp32 activations outweigh it
            continue
        q, e, new = q_next, e_next, tried
        overrides.update(more)
        if new.fits:
            return Suggestion(overrides, new, "combined") if len(overrides) > 1 else None
    if est.trains:
        for b in _halvings(q.batch_size, 1):
            q = replace(q, batch_size=b, grad_accum=qlora.grad_accum * math.ceil(qlora.batch_size / b))
            new = again(q, e)
            if new.fits:
                break
        if q.batch_size != qlora.batch_size:
            overrides.update({"qlora.batch_size": str(q.batch_size), "qlora.grad_accum": str(q.grad_accum)})
    if not new.fits:
        for n in _halvings(q.max_length, MIN_MAX_LENGTH):
            q = replace(q, max_length=n)
            new = again(q, e)
            if new.fits:
                break
        if q.max_length != qlora.max_length:
            overrides["qlora.max_length"] = str(q.max_length)
    if not new.fits:
        for b in _halvings(e.batch_size, 1):
            e = replace(e, batch_size=b)
            new = again(q, e)
            if new.fits:
                break
        if e.batch_size != eval_cfg.batch_size:
            overrides["eval.batch_size"] = str(e.batch_size)
    if not new.fits or len(overrides) < 2:
        return None
    return Suggestion(overrides, new, "combined")


def preflight(cfg: RunConfig, headroom: float = 0.9, lengths: SequenceLengths | None = None,
              choices: LabelShape | None = None) -> MemoryEstimate:
    """The cell's memory estimate; raises PreflightRefusal when it does not fit the hardware preset.
    `lengths` (from `dataset_lengths`): the data's real sequence lengths; None assumes qlora.max_length.
    `choices` (from `label_shape`): the label set choice scoring continues every prompt with."""
    trains = bool(cfg.method.trainer)
    est = estimate_memory(cfg.model, trains, cfg.qlora, cfg.eval, cfg.hardware, headroom, lengths,
                          retrieves=cfg.method.retrieval, choices=choices)
    if not est.fits:
        raise PreflightRefusal(cfg.model, cfg.hardware, est, suggest(est, cfg.model, cfg.qlora, cfg.hardware),
                               method=cfg.method.name)
    return est
