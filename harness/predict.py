"""Batched generation over the eval set, with throughput and latency figures.

Prompts are sorted by length so each batch pads little, padded on the left (decoder-only models
continue from the last position), and answers are returned in the original order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from harness.config import EvalConfig
from harness.progress import progress_bar


@dataclass
class PredictResult:
    predictions: list[str]
    # Tokens each answer produced up to and including its end-of-sequence token (never padding).
    generated_tokens: list[int]
    prompt_tokens: list[int]
    generate_s: float
    batch_latencies_s: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return sum(self.generated_tokens) / self.generate_s if self.generate_s > 0 else 0.0

    @property
    def latency_s_per_example(self) -> float:
        return self.generate_s / len(self.predictions) if self.predictions else 0.0


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
) -> PredictResult:
    """`generate_kwargs` pass through to `model.generate` (e.g. a constrained-decoding `prefix_allowed_tokens_fn`)."""
    texts = render_prompts(tokenizer, conversations)
    # The chat template already wrote bos where the model wants one; adding it again changes the prompt.
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    predictions: list[str] = [""] * len(texts)
    generated = [0] * len(texts)
    latencies: list[float] = []
    total_start = time.perf_counter()
    with progress_bar("predict", total=len(texts), unit="ex", enabled=progress) as advance:
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            inputs = _left_pad([encoded[i] for i in batch], tokenizer.pad_token_id, device)
            batch_start = time.perf_counter()
            output = model.generate(
                **inputs,
                max_new_tokens=cfg.max_new_tokens,
                do_sample=cfg.do_sample,
                temperature=cfg.temperature if cfg.do_sample else None,
                top_p=cfg.top_p if cfg.do_sample else None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(eos_ids),
                **(generate_kwargs or {}),
            )
            latencies.append(time.perf_counter() - batch_start)
            new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
            for index, tokens in zip(batch, new_tokens, strict=True):
                answer = _until_eos(tokens, eos_ids)
                generated[index] = len(answer) + (1 if len(answer) < len(tokens) else 0)
                predictions[index] = tokenizer.decode(answer, skip_special_tokens=True).strip()
            done_tokens = sum(generated[i] for i in order[: start + len(batch)])
            advance(len(batch), tok_s=f"{done_tokens / (time.perf_counter() - total_start):.1f}")
    generate_s = time.perf_counter() - total_start
    return PredictResult(predictions, generated, [len(e) for e in encoded], generate_s, latencies)


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
