"""Every user mistake a cell can find before it loads a model: the entry point runs these before Hydra starts,
and plan and rescore run them too."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.cell.models import load_tokenizer
from harness.cell.preflight import SequenceLengths
from harness.cell.rag import chunk_corpus, render_context
from harness.core.config import Accelerator, ConfigError, RunConfig
from harness.core.data import Dataset, check_dataset_for_run, load_dataset, prompt_messages
from harness.core.ledger import JUDGED_METRICS
from harness.metrics import METRICS


def check_before_load(cfg: RunConfig) -> Dataset:
    """Every user mistake that can be found without a model: metric names, the dataset and what the method
    needs from it, the accelerator the hardware preset promises. The entry point runs it before Hydra starts."""
    check_metric_names(cfg)
    dataset = load_dataset(cfg.data)
    check_dataset_for_run(dataset, cfg.data, cfg.method.retrieval, cfg.method.name)
    if cfg.plan == "false":  # a plan for GPU cells is made where they are submitted from, e.g. a login node
        check_accelerator(cfg)
    return dataset


def check_accelerator(cfg: RunConfig) -> None:
    if cfg.hardware.accelerator == Accelerator.cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"hardware={cfg.hardware.name} expects a CUDA GPU but torch sees none; use "
                              "hardware=cpu (or run where a GPU and a CUDA build of torch are present)")


def check_metric_names(cfg: RunConfig) -> None:
    unknown = [name for name in cfg.data.metrics if name not in METRICS and name not in JUDGED_METRICS]
    if unknown:
        raise ConfigError(f"data.metrics: unknown metric(s) {unknown}; known: "
                          f"{', '.join(sorted([*METRICS, *JUDGED_METRICS]))}")


def dataset_lengths(cfg: RunConfig, dataset) -> SequenceLengths | None:
    """The longest training sequence and eval prompt of this cell, counted with the model's tokenizer on the
    exact conversations training and evaluation build. None when the tokenizer cannot load before the weights
    (the estimate then assumes qlora.max_length; loading the model will report the cause)."""
    try:
        tokenizer = load_tokenizer(cfg.model, Path(cfg.cache_dir).expanduser())
    except (OSError, ValueError, ConfigError):
        return None

    def count(messages: list[dict], generation_prompt: bool) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    context_tokens = context_token_bound(cfg, dataset, tokenizer) if cfg.method.retrieval else 0
    context = "" if cfg.method.retrieval else None
    eval_records = dataset.eval[: cfg.eval.num_examples] if cfg.eval.num_examples else dataset.eval
    eval_prompt = context_tokens + max(
        (count(prompt_messages(r, cfg.data, cfg.model, context, dataset.labels), True) for r in eval_records),
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


def context_token_bound(cfg: RunConfig, dataset, tokenizer) -> int:
    """Most tokens a RAG prompt's retrieved context can take: the top_k longest chunk blocks as `render_context`
    writes them (plus their blank-line separators), never more than max_context_chars (a token is >= 1 char)."""
    retrieval = cfg.retrieval
    blocks = sorted((len(tokenizer(render_context([chunk]), add_special_tokens=False)["input_ids"]) + 2
                     for chunk in chunk_corpus(dataset.corpus, retrieval)), reverse=True)
    bound = sum(blocks[: retrieval.top_k])
    return min(bound, retrieval.max_context_chars) if retrieval.max_context_chars else bound
