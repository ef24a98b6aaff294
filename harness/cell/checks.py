"""Every user mistake a cell can find before it loads a model: the entry point runs these before Hydra starts,
and plan and rescore run them too."""

from __future__ import annotations

from pathlib import Path

from harness.cell.label_tokens import label_continuations
from harness.cell.models import cached_tokenizer, load_tokenizer
from harness.cell.preflight import LabelShape, SequenceLengths, module_dims
from harness.cell.rag import chunk_corpus, render_context
from harness.cell.truncation import PAIR_TRAINERS, check_truncation
from harness.core.config import Accelerator, ConfigError, EvalConfig, QLoraConfig, RetrievalConfig, RunConfig
from harness.core.data import Dataset, check_dataset_for_run, fewshot_examples, load_dataset, prompt_messages
from harness.core.embedding import resolve_model_path
from harness.core.ledger import JUDGED_METRICS
from harness.core.validation import hold_out_validation
from harness.metrics import METRICS, needs_label_scores
from harness.metrics.calibration import CHOICE_METRICS


def check_before_load(cfg: RunConfig) -> Dataset:
    """Every user mistake that can be found without a model: metric names, the dataset and what the method
    needs from it, the accelerator the hardware preset promises. The entry point runs it before Hydra starts."""
    check_metric_names(cfg)
    check_scoring_metrics(cfg)
    check_objective(cfg)
    check_lora_targets(cfg)
    if cfg.method.retrieval and cfg.retrieval.embedding_model:
        resolve_model_path(cfg.retrieval.embedding_model)  # a local folder: refused here if it is not one
    dataset = load_dataset(cfg.data)
    check_dataset_for_run(dataset, cfg.data, cfg.method.retrieval, cfg.method.name)
    check_sizes_against_data(cfg, dataset)
    if cfg.method.trainer:
        dataset = hold_out_validation(dataset, cfg.qlora.validation_examples, cfg.qlora.seed)
    if cfg.plan == "false":  # a plan for GPU cells is made where they are submitted from, e.g. a login node
        check_accelerator(cfg)
    return dataset


def check_scoring_metrics(cfg: RunConfig) -> None:
    """Metrics of label probabilities (accuracy_norm, calibration) exist only under eval.scoring=choices, which
    scores them whether data.metrics lists them or not."""
    needing = [name for name in cfg.data.metrics if name in METRICS and needs_label_scores(name)]
    if needing and cfg.eval.scoring != "choices":
        raise ConfigError(f"data.metrics: {', '.join(needing)} read label probabilities, which only "
                          f"eval.scoring=choices produces (it scores them without being listed); remove them, or set "
                          "eval.scoring=choices")


def check_objective(cfg: RunConfig) -> None:
    """objective names a figure this cell's metrics produce: another name would hand an optimising sweeper NaN
    for every cell, as if each had failed."""
    if not cfg.objective:
        return
    names = [*cfg.data.metrics, *(CHOICE_METRICS if cfg.eval.scoring == "choices" else ())]
    produced = {key for name in names if name in METRICS for key in METRICS.get(name).keys}
    if "ragas" in cfg.data.metrics:
        produced |= set(cfg.judge.ragas_metrics)
    if cfg.method.retrieval:
        produced.add(f"recall@{cfg.retrieval.top_k}")
    if cfg.objective not in produced:
        raise ConfigError(f"objective={cfg.objective}: not a figure of this cell's data.metrics "
                          f"({', '.join(cfg.data.metrics)}); they produce {', '.join(sorted(produced))}")


def check_lora_targets(cfg: RunConfig) -> None:
    """qlora.target_modules names layers of the model: a name no known architecture uses, and not in the model
    config's own lora_target_modules, is a typo that peft would report only after the weights loaded."""
    if not cfg.method.trainer or cfg.qlora.target_modules is None:
        return
    if not cfg.qlora.target_modules:
        raise ConfigError("qlora.target_modules: [] targets nothing; name modules, or set it to null for the "
                          f"model's own ({', '.join(cfg.model.lora_target_modules)})")
    known = [*module_dims(cfg.model), *cfg.model.lora_target_modules]
    unknown = [name for name in cfg.qlora.target_modules if name not in known]
    if unknown:
        raise ConfigError(f"qlora.target_modules: unknown module(s) {unknown}; model {cfg.model.name}'s are "
                          f"{', '.join(cfg.model.lora_target_modules)} (other architectures name theirs "
                          f"{', '.join(n for n in module_dims(cfg.model) if n not in cfg.model.lora_target_modules)})")


def check_truncation_if_cheap(cfg: RunConfig, dataset: Dataset) -> None:
    """The truncation refusal (harness/cell/truncation.py) where the tokenizer is on this machine already; a
    cell whose tokenizer must be downloaded or converted counts when it runs, still before its weights load."""
    if cfg.method.trainer in PAIR_TRAINERS and not cfg.data.allow_truncation:
        tokenizer = cached_tokenizer(cfg.model, Path(cfg.cache_dir).expanduser())
        if tokenizer is not None:
            check_truncation(cfg, dataset, tokenizer)


# A size above the examples it batches is refused only when set above the default: the default stands for "up
# to this many", and a 3-example test set with the default eval batch of 8 is no mistake.
_DEFAULT_EVAL_BATCH = EvalConfig().batch_size
_DEFAULT_TRAIN_BATCH = QLoraConfig().batch_size
_DEFAULT_TOP_K = RetrievalConfig().top_k


def check_sizes_against_data(cfg: RunConfig, dataset: Dataset) -> None:
    """Settings that count examples, checked against the examples there are: a batch larger than its set, an
    accumulation that never completes, a fraction of an epoch that is less than one optimizer step, more chunks
    retrieved than the corpus holds."""
    n_eval = min(len(dataset.eval), cfg.eval.num_examples or len(dataset.eval))
    which = f"eval.num_examples={cfg.eval.num_examples}" if cfg.eval.num_examples else f"{cfg.data.eval_file}"
    if cfg.eval.batch_size > max(n_eval, _DEFAULT_EVAL_BATCH):
        raise ConfigError(f"eval.batch_size={cfg.eval.batch_size}: larger than the {n_eval} eval examples this cell "
                          f"scores ({which}); no batch can hold more, so give eval.batch_size={n_eval} or less")
    if cfg.method.retrieval and cfg.retrieval.top_k > _DEFAULT_TOP_K:
        chunks = len(chunk_corpus(dataset.corpus, cfg.retrieval))
        if cfg.retrieval.top_k > chunks:
            raise ConfigError(f"retrieval.top_k={cfg.retrieval.top_k}: the corpus of {dataset.dir} holds only {chunks} "
                              f"chunks of retrieval.chunk_chars={cfg.retrieval.chunk_chars}; give retrieval.top_k="
                              f"{chunks} or less")
    if cfg.method.trainer in PAIR_TRAINERS:
        check_training_sizes(cfg, len(dataset.train))
    fewshot_examples(dataset.train, dataset.eval, cfg.eval.fewshot, cfg.qlora.seed, dataset.labels)  # refuses a K the train split cannot show


def check_training_sizes(cfg: RunConfig, n_train: int) -> None:
    q = cfg.qlora
    capped = f" (data.max_train_examples={cfg.data.max_train_examples})" if cfg.data.max_train_examples else ""
    if q.batch_size > max(n_train, _DEFAULT_TRAIN_BATCH):
        raise ConfigError(f"qlora.batch_size={q.batch_size}: larger than the {n_train} training examples{capped}; "
                          f"give qlora.batch_size={n_train} or less")
    batches = -(-n_train // q.batch_size)
    if q.grad_accum > 1 and q.grad_accum > batches:
        raise ConfigError(f"qlora.grad_accum={q.grad_accum}: an epoch of {n_train} training examples{capped} is only "
                          f"{batches} batches of qlora.batch_size={q.batch_size}, so no step accumulates that many; "
                          f"give qlora.grad_accum={batches} or less")
    if q.max_steps == -1:
        steps_per_epoch = -(-batches // q.grad_accum)
        steps = q.epochs * steps_per_epoch
        if steps < 1:
            raise ConfigError(f"qlora.epochs={q.epochs:g}: {steps:.2g} of an optimizer step on {n_train} training "
                              f"examples{capped} (batch {q.batch_size} x accumulation {q.grad_accum}), and the trainer "
                              f"would round it up to a whole step; give qlora.epochs={1 / steps_per_epoch:.2g} or more, "
                              "or qlora.max_steps=N")


def check_accelerator(cfg: RunConfig) -> None:
    if cfg.hardware.accelerator == Accelerator.cuda:
        import torch  # deferred, heavy (3 s): a refused command line must not pay for it before saying why

        if not torch.cuda.is_available():
            raise ConfigError(f"hardware={cfg.hardware.name} expects a CUDA GPU but torch sees none; use "
                              "hardware=cpu (or run where a GPU and a CUDA build of torch are present)")


def check_metric_names(cfg: RunConfig) -> None:
    unknown = [name for name in cfg.data.metrics if name not in METRICS and name not in JUDGED_METRICS]
    if unknown:
        raise ConfigError(f"data.metrics: unknown metric(s) {unknown}; known: "
                          f"{', '.join(sorted([*METRICS, *JUDGED_METRICS]))}")


def tokenizer_before_weights(cfg: RunConfig):
    """The model's tokenizer, loaded (converted, downloaded) as the cell will load it, or None when it cannot load
    before the weights (loading the model will report the cause)."""
    try:
        return load_tokenizer(cfg.model, Path(cfg.cache_dir).expanduser())
    except (OSError, ValueError, ConfigError):
        return None


def dataset_lengths(cfg: RunConfig, dataset, tokenizer=None) -> SequenceLengths | None:
    """The longest training sequence and eval prompt of this cell, counted with the model's tokenizer on the
    exact conversations training and evaluation build. None when the tokenizer cannot load before the weights
    (the estimate then assumes qlora.max_length; loading the model will report the cause)."""
    tokenizer = tokenizer or tokenizer_before_weights(cfg)
    if tokenizer is None:
        return None

    def count(messages: list[dict], generation_prompt: bool) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    context_tokens = context_token_bound(cfg, dataset, tokenizer) if cfg.method.retrieval else 0
    context = "" if cfg.method.retrieval else None
    eval_records = dataset.eval[: cfg.eval.num_examples] if cfg.eval.num_examples else dataset.eval
    shots = fewshot_examples(dataset.train, dataset.eval, cfg.eval.fewshot, cfg.qlora.seed, dataset.labels)
    eval_prompt = context_tokens + max(
        (count(prompt_messages(r, cfg.data, cfg.model, context, dataset.labels, shots), True) for r in eval_records),
        default=0)
    if not cfg.method.trainer:
        train = 0
    elif cfg.method.trainer == "instruct":
        # +1: an end-of-sequence token TRL appends where the template does not end with one.
        train = context_tokens + 1 + max(
            (count(prompt_messages(r, cfg.data, cfg.model, context, dataset.labels)
                   + [{"role": "assistant", "content": r.answer}], False) for r in dataset.train), default=0)
    else:
        # causal: packed blocks of exactly qlora.max_length tokens; an unknown trainer: the worst case.
        train = cfg.qlora.max_length
    return SequenceLengths(train=train, eval_prompt=eval_prompt)


def label_shape(cfg: RunConfig, dataset, tokenizer=None) -> LabelShape | None:
    """How many labels choice scoring continues every prompt with, and the longest one in the model's tokens (as
    harness.cell.choices splits it after a rendered prompt). None unless eval.scoring=choices. Without a tokenizer
    before the weights, a label is taken as one token per character plus one (a token holds at least one
    character; the boundary can merge the prompt's last character into the label's first token)."""
    if cfg.eval.scoring != "choices" or not dataset.labels:
        return None
    labels = dataset.labels
    if tokenizer is None:
        return LabelShape(len(labels), max(len(label) for label in labels) + 1, source="characters")
    shots = fewshot_examples(dataset.train, dataset.eval, cfg.eval.fewshot, cfg.qlora.seed, labels)
    context = "" if cfg.method.retrieval else None
    # Every prompt ends with the same generation prompt, so one prompt splits every label as all of them do.
    messages = prompt_messages(dataset.eval[0], cfg.data, cfg.model, context, labels, shots)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tails = label_continuations(tokenizer, prompt, prompt_ids, labels)
    return LabelShape(len(labels), max(len(tail) for tail in tails))


def context_token_bound(cfg: RunConfig, dataset, tokenizer) -> int:
    """Most tokens a RAG prompt's retrieved context can take: the top_k longest chunk blocks as `render_context`
    writes them (plus their blank-line separators), never more than max_context_chars (a token is >= 1 char)."""
    retrieval = cfg.retrieval
    blocks = sorted((len(tokenizer(render_context([chunk]), add_special_tokens=False)["input_ids"]) + 2
                     for chunk in chunk_corpus(dataset.corpus, retrieval)), reverse=True)
    bound = sum(blocks[: retrieval.top_k])
    return min(bound, retrieval.max_context_chars) if retrieval.max_context_chars else bound
