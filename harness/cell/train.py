"""Training methods, registered by name: a method config's `trainer` key picks one.

Adding a method is one YAML under conf/method/ and, when it trains differently, one function here
decorated with `@register_trainer("name")` that takes a `TrainContext` and returns a `TrainResult`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PrinterCallback, TrainerCallback

from harness.cell.checkpoints import Resumption, interval
from harness.cell.models import LoadedModel
from harness.cell.predict import release_freed_memory
from harness.cell.truncation import count_truncation
from harness.core.config import ConfigError, RunConfig, uses_gradient_checkpointing
from harness.core.data import Dataset, prompt_messages
from harness.core.precision import cell_precision
from harness.core.progress import progress_bar
from harness.core.registry import Registry

log = logging.getLogger("harness")


@dataclass
class TrainContext:
    cfg: RunConfig
    loaded: LoadedModel
    dataset: Dataset
    output_dir: Path
    # Retrieved context per record id, for RAG methods: training prompts then match what evaluation sends.
    contexts: dict[str, str] | None = None
    # Where training checkpoints go and are resumed from (harness/cell/checkpoints.py); None: no checkpoints.
    checkpoints: Path | None = None
    # Intermediate evaluations and pruning (harness/cell/pruning.py); None: training runs unwatched.
    watch: TrainerCallback | None = None
    # time.perf_counter() when the cell began (before its model loaded): an attempt records its time before training.
    cell_started: float | None = None


@dataclass
class TrainResult:
    model: object  # the trained model (base + adapter), ready for generation
    adapter_dir: Path
    train_s: float
    steps: int
    # Non-padding tokens the trainer consumed (TRL counts the attention mask).
    train_tokens: int
    trainable_params: int
    total_params: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    # Rows trained on, and rows given: TRL drops a row whose answer truncation removed entirely.
    examples: int = 0
    examples_given: int = 0
    # The batch size and accumulation training ended with, and each out-of-memory retry that led there.
    batch_size: int = 0
    grad_accum: int = 0
    oom_retries: list[dict] = field(default_factory=list)
    # What qlora.max_length cut or dropped (harness/cell/truncation.py); None for a trainer without pairs.
    truncation: dict | None = None
    # The checkpoint step training resumed from (None: it started from scratch), and every attempt at it.
    resumed_from_step: int | None = None
    attempts: list[dict] = field(default_factory=list)
    # Training time in this process when train_s also counts earlier, preempted attempts (None: train_s): what
    # the cell's own wall time spent training, to tell the time it spent on anything else.
    train_s_here: float | None = None
    # Earlier processes' attempts' time before their training began (loading, preparing): paid for too.
    earlier_setup_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_s if self.train_s > 0 else 0.0

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


Trainer = Callable[[TrainContext], TrainResult]
TRAINERS: Registry[Trainer] = Registry("trainer", option="method.trainer")


def register_trainer(name: str) -> Callable[[Trainer], Trainer]:
    return TRAINERS.register(name)


def get_trainer(name: str) -> Trainer:
    return TRAINERS.get(name)


def sft_arguments(cfg: RunConfig, output_dir: Path, on_cuda: bool) -> dict:
    """trl.SFTConfig keywords every method shares, from the qlora and hardware groups. bench/common.py builds its
    plain-TRL baselines from the same keywords, so a benchmark differs from the harness only where it says so."""
    q, hw = cfg.qlora, cfg.hardware
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=q.batch_size,
        gradient_accumulation_steps=q.grad_accum,
        learning_rate=q.lr,
        num_train_epochs=q.epochs,
        max_steps=q.max_steps,
        max_length=q.max_length,
        warmup_steps=q.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        weight_decay=q.weight_decay,
        lr_scheduler_type=q.lr_scheduler,
        seed=q.seed,
        data_seed=q.seed,
        logging_steps=q.logging_steps,
        activation_checkpointing=uses_gradient_checkpointing(hw, q),
        train_sampling_strategy="group_by_length" if q.group_by_length else "random",
        # SFTConfig defaults to bf16 even on the CPU; a CPU cell trains under bf16 autocast only where
        # hardware.precision resolves to it (harness/core/precision.py), fp32 otherwise.
        bf16=(on_cuda and hw.supports_bf16) or (not on_cuda and cell_precision(cfg).cpu_autocast),
        fp16=on_cuda and not hw.supports_bf16,
        use_cpu=not on_cuda,
        save_strategy="no",  # sft_config turns checkpoints on for a cell (qlora.save_steps)
        # Counted in the trainer state, which a checkpoint carries: the total survives a resumption (TRL's own
        # num_tokens restarts at zero with each train() call).
        include_num_input_tokens_seen="non_padding",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def lora_arguments(cfg: RunConfig) -> dict:
    """peft.LoraConfig keywords of the adapter the qlora group describes (shared with bench/common.py too)."""
    q = cfg.qlora
    return dict(
        r=q.r,
        lora_alpha=q.alpha,
        lora_dropout=q.dropout,
        target_modules=list(q.target_modules or cfg.model.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_config(ctx: TrainContext, **overrides):
    """The TRL arguments of this cell (sft_arguments), with a method's own `overrides`."""
    from trl import SFTConfig  # deferred, heavy: only a cell that trains imports it

    every = interval(ctx.cfg.qlora.save_steps) if ctx.checkpoints is not None else None
    arguments = sft_arguments(ctx.cfg, ctx.checkpoints if every else ctx.output_dir / "trainer",
                              on_cuda=ctx.loaded.device == "cuda")
    if every:  # one checkpoint kept; a step interval saves by itself, the measured-time default asks for each save
        arguments.update(save_total_limit=1)
        if every.steps:
            arguments.update(save_strategy="steps", save_steps=every.steps)
    return SFTConfig(**{**arguments, **overrides})


def lora_config(ctx: TrainContext):
    from peft import LoraConfig  # deferred, heavy: only a cell with an adapter imports it

    return LoraConfig(**lora_arguments(ctx.cfg))


def build_sft_trainer(ctx: TrainContext, train_dataset, args, model=None):
    """TRL's SFTTrainer with a LoRA adapter on the loaded model (or on `model`, a PeftModel that already has
    one); tokenizes (and masks) the dataset."""
    import datasets  # deferred, heavy: only a cell that trains imports it
    from trl import SFTTrainer  # deferred, heavy: only a cell that trains imports it

    datasets.disable_progress_bars()  # TRL's tokenizing passes take well under a second here
    trainer = SFTTrainer(
        model=model if model is not None else ctx.loaded.model,
        args=args,
        train_dataset=train_dataset,
        processing_class=ctx.loaded.tokenizer,
        peft_config=None if model is not None else lora_config(ctx),
    )
    # Our progress bar replaces the printer that dumps every log dict to stdout when tqdm is off.
    trainer.remove_callback(PrinterCallback)
    if ctx.watch is not None:
        trainer.add_callback(ctx.watch)
    if len(trainer.train_dataset) == 0:
        raise ConfigError(
            f"qlora.max_length={ctx.cfg.qlora.max_length}: every training example lost its answer to truncation; "
            "raise qlora.max_length (or shorten prompts / retrieval.max_context_chars)"
        )
    return trainer


def run_sft(ctx: TrainContext, train_dataset, args) -> TrainResult:
    """Train a LoRA adapter, save it, and collect the figures a run reports. With a checkpoint area, training
    resumes from its newest checkpoint and writes new ones (harness/cell/checkpoints.py). Out of memory,
    training starts again from the same initial adapter with half the batch and twice the accumulation (the
    same effective batch), down to a batch of one."""
    import torch  # deferred, heavy: only a cell that loads a model imports it

    resumption = Resumption.find(ctx.checkpoints, ctx.cfg.qlora.save_steps)
    resumed_from = resumption.from_step if resumption is not None and resumption.checkpoint is not None else None
    if resumption is not None and (batch := resumption.batch_from_checkpoint()):
        args = _with_batch(args, *batch)  # the data position counts batches of the size it was trained with
    trainer = build_sft_trainer(ctx, train_dataset, args)
    initial_adapter = {k: v.detach().clone() for k, v in trainer.model.state_dict().items() if "lora_" in k}
    retries: list[dict] = []
    here_s = 0.0
    earlier = list(resumption.attempts.attempts) if resumption is not None else []
    setup_s = time.perf_counter() - ctx.cell_started if ctx.cell_started is not None else 0.0
    while True:
        callback = _ProgressCallback()
        trainer.add_callback(callback)
        start = time.perf_counter()
        try:
            with (progress_bar("train", total=None, unit="step", enabled=ctx.cfg.progress) as advance,
                  resumption.attempt(trainer, setup_s) if resumption is not None else contextlib.nullcontext()
                  as checkpoint):
                callback.advance = advance
                trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
            here_s += time.perf_counter() - start
            break
        except torch.OutOfMemoryError as exc:
            here_s += time.perf_counter() - start
            setup_s = 0.0  # a retry's setup is this process's, already counted
            args = _halved_batch(args, exc, retries)
            model = trainer.model
            del trainer
            model.zero_grad(set_to_none=True)
            release_freed_memory()
            model.load_state_dict(initial_adapter, strict=False)  # a retry is a fresh start, not a resumption
            if resumption is not None:
                resumption.start_over()
                resumed_from = None
            trainer = build_sft_trainer(ctx, train_dataset, args, model=model)
    # Every attempt's training time when there were several (a preempted cell cost all of them).
    train_s = resumption.attempts.train_s if resumption is not None else time.perf_counter() - start
    adapter_dir = ctx.output_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    history = trainer.state.log_history
    losses = [(h["step"], float(h["loss"])) for h in history if "loss" in h]
    tokens = trainer.state.num_input_tokens_seen or max((int(h["num_tokens"]) for h in history if "num_tokens" in h),
                                                       default=0)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    model = trainer.model
    model.eval()
    return TrainResult(model, adapter_dir, train_s, trainer.state.global_step, tokens, trainable, total, losses,
                       examples=len(trainer.train_dataset), examples_given=len(train_dataset),
                       batch_size=args.per_device_train_batch_size, grad_accum=args.gradient_accumulation_steps,
                       oom_retries=retries, resumed_from_step=resumed_from,
                       attempts=resumption.report() if resumption is not None else [], train_s_here=here_s,
                       earlier_setup_s=sum(float(a.get("setup_s") or 0.0) for a in earlier))


def _with_batch(args, batch_size: int, grad_accum: int):
    if (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (batch_size, grad_accum):
        return args
    args = copy.deepcopy(args)
    args.per_device_train_batch_size, args.gradient_accumulation_steps = batch_size, grad_accum
    return args


def _halved_batch(args, exc, retries: list[dict]):
    """The training arguments for the next try after an out-of-memory error, or the error saying what was tried."""
    import torch  # deferred, heavy: only a cell that loads a model imports it

    batch, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    retries.append({"batch_size": batch, "grad_accum": accum, "error": str(exc).split("\n", 1)[0][:200]})
    if batch == 1:
        tried = ", ".join(f"{r['batch_size']}x{r['grad_accum']}" for r in retries)
        raise torch.OutOfMemoryError(
            f"out of memory training even one sequence at a time (qlora.batch_size x qlora.grad_accum tried: {tried}); "
            f"lower qlora.max_length, use a smaller model or a larger GPU") from exc
    args = copy.deepcopy(args)
    args.per_device_train_batch_size = max(1, batch // 2)
    args.gradient_accumulation_steps = accum * (batch // args.per_device_train_batch_size)
    return args


class _ProgressCallback(TrainerCallback):
    """Feeds the rich progress bar from the trainer; the total is known only once training starts."""

    advance: Callable[..., None] = staticmethod(lambda n=1, **fields: None)

    def on_train_begin(self, args, state, control, **kwargs):
        # Resumed: the steps still to train (the log says where it resumed).
        self.advance(0, total=state.max_steps - state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.advance(0, loss=f"{logs['loss']:.3f}", step=f"{state.global_step}/{state.max_steps}")

    def on_step_end(self, args, state, control, **kwargs):
        self.advance(1)


def instruct_dataset(ctx: TrainContext):
    """Conversational prompt/completion rows: the prompt is exactly what evaluation sends."""
    from datasets import Dataset as HFDataset  # deferred, heavy: only a cell that trains imports it

    cfg = ctx.cfg
    rows = []
    for record in ctx.dataset.train:
        context = None if ctx.contexts is None else fit_context(ctx, record, ctx.contexts[record.id])
        rows.append({
            "prompt": prompt_messages(record, cfg.data, cfg.model, context, ctx.dataset.labels),
            "completion": [{"role": "assistant", "content": record.answer}],
        })
    return HFDataset.from_list(rows)


def fit_context(ctx: TrainContext, record, context: str) -> str:
    """Shorten retrieved context until prompt + answer fit in qlora.max_length tokens. Otherwise TRL truncates
    from the right, cutting the answer, and drops examples left with nothing to learn from."""
    tokenizer, cfg = ctx.loaded.tokenizer, ctx.cfg

    def length(text: str) -> int:
        messages = prompt_messages(record, cfg.data, cfg.model, text, ctx.dataset.labels)
        messages.append({"role": "assistant", "content": record.answer})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    while context and length(context) > cfg.qlora.max_length:
        context = context[: int(len(context) * 0.8)].rstrip()
    return context


@register_trainer("instruct")
def train_instruct(ctx: TrainContext) -> TrainResult:
    """SFT on prompt/completion pairs: TRL masks the prompt, so the loss is on the answer only."""
    truncation = count_truncation(ctx.cfg, ctx.dataset, ctx.loaded.tokenizer)
    if truncation is not None:
        (log.warning if truncation.affected else log.info)("%s", truncation.line())
    result = run_sft(ctx, instruct_dataset(ctx), sft_config(ctx, completion_only_loss=True))
    result.truncation = truncation.to_dict() if truncation is not None else None
    return result


def causal_blocks(texts: list[str], tokenizer, block_size: int) -> list[list[int]]:
    """Concatenate documents (each ended by eos, so the model learns where one stops) and cut the stream into
    blocks of exactly `block_size` tokens: packed, no padding, every token trained on. The tail becomes a last,
    shorter block rather than being dropped."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [stream[i : i + block_size] for i in range(0, len(stream), block_size)]


@register_trainer("causal")
def train_causal(ctx: TrainContext) -> TrainResult:
    """Continued pre-training of the adapter on the raw corpus text (causal LM loss on every token)."""
    from datasets import Dataset as HFDataset  # deferred, heavy: only a cell that trains imports it

    texts = [doc["text"] for doc in ctx.dataset.corpus.values()]
    if not texts:
        raise ConfigError(
            f"method={ctx.cfg.method.name} trains on the dataset's corpus, but {ctx.dataset.dir} has no "
            f"{ctx.cfg.data.corpus_file}: add one (id, text per line) or use method=instruct"
        )
    blocks = causal_blocks(texts, ctx.loaded.tokenizer, ctx.cfg.qlora.max_length)
    # Pre-tokenized rows: TRL skips its own tokenization and trains on every token of each block.
    dataset = HFDataset.from_list([{"input_ids": block} for block in blocks])
    return run_sft(ctx, dataset, sft_config(ctx, completion_only_loss=False))

