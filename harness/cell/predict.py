"""Batched generation over the eval set, with throughput and latency figures.

Prompts are sorted by length so each batch pads little, padded on the left (decoder-only models
continue from the last position), and answers are returned in the original order.

Greedy decoding runs its own loop over the model's KV cache and drops every row from the batch as soon as it
ends: `model.generate` keeps finished rows decoding until the longest answer ends (bench/eval_batch.py measures
both). Sampling, constrained decoding and models whose generation config asks for logits
processors (a repetition penalty, say) go through `model.generate`. An out-of-memory error halves the batch
and retries, down to one prompt at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import time
from dataclasses import dataclass, field

import torch

from harness.core.config import EvalConfig
from harness.core.precision import Precision
from harness.core.progress import progress_bar


@dataclass
class PredictResult:
    predictions: list[str]
    # Tokens each answer produced up to and including its end-of-sequence token (never padding).
    generated_tokens: list[int]
    prompt_tokens: list[int]
    generate_s: float
    batch_latencies_s: list[float] = field(default_factory=list)
    # The batch size that generation ended with, and each out-of-memory retry that led there.
    batch_size: int = 0
    oom_retries: list[dict] = field(default_factory=list)
    # How many answers each batch of batch_latencies_s produced: the cost interval's per-batch rates (cell/cost.py).
    batch_examples: list[int] = field(default_factory=list)
    # eval.scoring=choices: every label's summed log-probability per example (harness/cell/choices.py); None when
    # the answers were generated.
    label_logliks: list[list[float]] | None = None

    @property
    def tokens_per_s(self) -> float:
        return sum(self.generated_tokens) / self.generate_s if self.generate_s > 0 else 0.0


def computing_in(precision: Precision):
    """The context a CPU cell computes in: bf16 autocast where its precision says so, as its training ran."""
    if precision.cpu_autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def render_prompts(tokenizer, conversations: list[list[dict]]) -> list[str]:
    return [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    conversations: list[list[dict]],
    cfg: EvalConfig,
    progress: bool = True,
    generate_kwargs: dict | None = None,
    own_greedy_loop: bool | None = None,
) -> PredictResult:
    """`generate_kwargs` pass through to `model.generate` (e.g. a constrained-decoding `prefix_allowed_tokens_fn`).
    `own_greedy_loop`: None chooses (see the module docstring); False forces `model.generate` (benchmarks)."""
    texts = render_prompts(tokenizer, conversations)
    # The chat template already wrote bos where the model wants one; adding it again changes the prompt.
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    if own_greedy_loop is None:
        own_greedy_loop = uses_own_greedy_loop(model, cfg, generate_kwargs)
    decode = _greedy_dropping_finished if own_greedy_loop else _hf_generate
    predictions: list[str] = [""] * len(texts)
    generated = [0] * len(texts)
    latencies: list[float] = []
    batch_examples: list[int] = []
    batch_size, oom_retries = cfg.batch_size, []
    total_start = time.perf_counter()
    with progress_bar("predict", total=len(texts), unit="ex", enabled=progress) as advance:
        start = 0
        while start < len(order):
            batch = order[start : start + batch_size]
            inputs = _left_pad([encoded[i] for i in batch], tokenizer.pad_token_id, device)
            batch_start = time.perf_counter()
            try:
                new_tokens = decode(model, inputs, cfg, eos_ids, tokenizer.pad_token_id, generate_kwargs)
            except torch.OutOfMemoryError as exc:
                batch_size = _after_oom(exc, batch_size, oom_retries)
                continue
            latencies.append(time.perf_counter() - batch_start)
            batch_examples.append(len(batch))
            for index, tokens in zip(batch, new_tokens, strict=True):
                answer = _until_eos(tokens, eos_ids)
                generated[index] = len(answer) + (1 if len(answer) < len(tokens) else 0)
                predictions[index] = tokenizer.decode(answer, skip_special_tokens=True).strip()
            start += len(batch)
            done_tokens = sum(generated[i] for i in order[:start])
            advance(len(batch), tok_s=f"{done_tokens / (time.perf_counter() - total_start):.1f}")
    generate_s = time.perf_counter() - total_start
    return PredictResult(predictions, generated, [len(e) for e in encoded], generate_s, latencies, batch_size,
                         oom_retries, batch_examples=batch_examples)


def _after_oom(exc: torch.OutOfMemoryError, batch_size: int, retries: list[dict]) -> int:
    """Half the batch for the next try; at batch 1 there is nothing left to try, so say what was tried."""
    retries.append({"batch_size": batch_size, "error": str(exc).split("\n", 1)[0][:200]})
    release_freed_memory()
    if batch_size == 1:
        tried = ", ".join(str(r["batch_size"]) for r in retries)
        raise torch.OutOfMemoryError(f"out of memory generating even one answer at a time (eval.batch_size tried: "
                                     f"{tried}); lower eval.max_new_tokens or use a larger GPU") from exc
    return max(1, batch_size // 2)


def release_freed_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return_freed_heap()


def return_freed_heap() -> None:
    """glibc keeps the pages of freed tensors in its heap, still counted in the process's RSS, until something
    trims it; without this a CPU cell's reported peak (and what the next load can use) depends on how fragmented
    training left the heap. A no-op where the C library has no malloc_trim (musl, macOS)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


# Generation-config settings that make greedy decoding something other than "argmax of the logits".
_PROCESSOR_SETTINGS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
                       "bad_words_ids": None, "min_length": 0, "min_new_tokens": None, "suppress_tokens": None,
                       "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                       "sequence_bias": None, "exponential_decay_length_penalty": None, "renormalize_logits": False}


def uses_own_greedy_loop(model, cfg: EvalConfig, generate_kwargs: dict | None) -> bool:
    if cfg.do_sample or generate_kwargs:
        return False
    config = getattr(model, "generation_config", None)
    return all(getattr(config, name, neutral) in (neutral, None) for name, neutral in _PROCESSOR_SETTINGS.items())


def _hf_generate(model, inputs, cfg: EvalConfig, eos_ids: set[int], pad_id: int, generate_kwargs) -> list[list[int]]:
    output = model.generate(
        **inputs,
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature if cfg.do_sample else None,
        top_p=cfg.top_p if cfg.do_sample else None,
        top_k=None,
        pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids),
        **(generate_kwargs or {}),
    )
    return output[:, inputs["input_ids"].shape[1] :].tolist()


def _greedy_dropping_finished(model, inputs, cfg: EvalConfig, eos_ids: set[int], pad_id: int,
                              generate_kwargs=None) -> list[list[int]]:
    """Greedy decoding that removes a row from the batch (and its KV cache) once it has produced an
    end-of-sequence token, so the rows still decoding never pay for the finished ones."""
    mask = inputs["attention_mask"]
    # Positions as `generate` computes them for left-padded rows: count real tokens only.
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    # logits_to_keep=1: only the last position's logits are used; all of them would be batch x prompt x vocab fp32
    # (1 GB for 8 RAG prompts of ~700 tokens on a 49k vocabulary), the prefill's largest tensor.
    out = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1, :]
    rows = torch.arange(mask.shape[0], device=mask.device)  # which original row each batch row is
    next_position = positions[:, -1] + 1
    stop = torch.tensor(sorted(eos_ids), device=mask.device)
    tokens: list[list[int]] = [[] for _ in range(mask.shape[0])]
    for step in range(cfg.max_new_tokens):
        chosen = logits.argmax(dim=-1)
        for row, token in zip(rows.tolist(), chosen.tolist(), strict=True):
            tokens[row].append(token)
        if step == cfg.max_new_tokens - 1:
            break
        running = ~torch.isin(chosen, stop)
        if not running.any():
            break
        if not running.all():
            keep = running.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            rows, chosen, next_position, mask = rows[keep], chosen[keep], next_position[keep], mask[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position[:, None],
                    cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1, :]
        next_position = next_position + 1
    return tokens


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _until_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:position]
    return tokens


def _left_pad(sequences: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
