"""Choice scoring (eval.scoring=choices): every label of a classification set scored by the summed log-probability
of its tokens after exactly the prompt generation would see, as lm-evaluation-harness scores a `multiple_choice`
task (`lm_eval/api/model.py` `_encode_pair`, `lm_eval/models/huggingface.py` `_loglikelihood_tokens`, 0.4.13).

The prompt is the chat-templated conversation with its generation prompt (`render_prompts`, the same text
`generate` encodes). A label's tokens are those the tokenizer gives the prompt followed by the label, past the
prompt's own tokens: where the two would merge across the boundary, the label keeps the merged tokens, as
lm-eval's split does. No end-of-turn token is scored (lm-eval scores none either), so a label that is a prefix of
another ("Home" and "Home Office") is favoured by the summed score; the per-character normalised score
(`accuracy_norm`) leans the other way.

Each batch of prompts is encoded once; its KV cache is repeated for every label and the labels continue from it
in one forward pass, so a prompt costs one prefill however many labels there are. An out-of-memory error halves
the batch, as in generation.
"""

from __future__ import annotations

import time

import torch

from harness.cell.label_tokens import label_continuations
from harness.cell.predict import PredictResult, _after_oom, _left_pad, render_prompts
from harness.core.config import EvalConfig
from harness.core.progress import progress_bar


@torch.inference_mode()
def score_choices(model, tokenizer, conversations: list[list[dict]], labels: list[str], cfg: EvalConfig,
                  progress: bool = True) -> PredictResult:
    """The most likely label of every conversation as its prediction, with every label's summed log-probability
    (`label_logliks`, in `labels` order); `generate_s` is the time scoring took."""
    texts = render_prompts(tokenizer, conversations)
    # The chat template already wrote bos where the model wants one (see predict.generate).
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    continuations = [label_continuations(tokenizer, t, e, labels) for t, e in zip(texts, encoded, strict=True)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    device = next(model.parameters()).device
    logliks: list[list[float]] = [[] for _ in texts]
    latencies: list[float] = []
    batch_examples: list[int] = []  # answers per batch: the cost range's per-batch rates (cell/cost.py)
    batch_size, oom_retries = cfg.batch_size, []
    total_start = time.perf_counter()
    with progress_bar("score labels", total=len(texts), unit="ex", enabled=progress) as advance:
        start = 0
        while start < len(order):
            batch = order[start: start + batch_size]
            batch_start = time.perf_counter()
            try:
                scores = _batch_logliks(model, [encoded[i] for i in batch], [continuations[i] for i in batch],
                                        tokenizer.pad_token_id, device)
            except torch.OutOfMemoryError as exc:
                batch_size = _after_oom(exc, batch_size, oom_retries)
                continue
            latencies.append(time.perf_counter() - batch_start)
            batch_examples.append(len(batch))
            for index, row in zip(batch, scores, strict=True):
                logliks[index] = row
            start += len(batch)
            advance(len(batch))
    scored_s = time.perf_counter() - total_start
    predictions = [labels[max(range(len(labels)), key=row.__getitem__)] for row in logliks]
    return PredictResult(predictions, [0] * len(texts), [len(e) for e in encoded], scored_s, latencies, batch_size,
                         oom_retries, batch_examples=batch_examples, label_logliks=logliks)


def _batch_logliks(model, prompts: list[list[int]], continuations: list[list[list[int]]], pad_id: int,
                   device) -> list[list[float]]:
    """Summed log-probabilities of every label after every prompt of one batch: one prefill of the prompts, then
    all labels of all prompts in one pass over the repeated KV cache."""
    n_labels = len(continuations[0])
    inputs = _left_pad(prompts, pad_id, device)
    mask = inputs["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    out = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    # The first token of every label is predicted by the prompt's last position.
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
    rows = [tokens for labels in continuations for tokens in labels]  # prompt-major: prompt b, label l at b*L+l
    first_ids = torch.tensor([tokens[0] for tokens in rows], device=device)
    total = first.repeat_interleave(n_labels, dim=0).gather(1, first_ids[:, None]).squeeze(1)
    width = max(len(tokens) for tokens in rows) - 1
    if width > 0:  # some label has more than one token: they continue from the prompt's cache
        cache = out.cache
        cache.batch_repeat_interleave(n_labels)
        feed = torch.full((len(rows), width), pad_id, dtype=torch.long)
        target = torch.zeros((len(rows), width), dtype=torch.long)
        counted = torch.zeros((len(rows), width), dtype=torch.bool)
        for row, tokens in enumerate(rows):
            feed[row, : len(tokens) - 1] = torch.tensor(tokens[:-1])
            target[row, : len(tokens) - 1] = torch.tensor(tokens[1:])
            counted[row, : len(tokens) - 1] = True
        feed, target, counted = feed.to(device), target.to(device), counted.to(device)
        # Padding after a short label is never attended to by its own tokens (they come first): a mask of ones
        # keeps every row's positions plain.
        full_mask = torch.cat([mask.repeat_interleave(n_labels, dim=0), mask.new_ones((len(rows), width))], dim=1)
        next_positions = positions[:, -1:].repeat_interleave(n_labels, dim=0) + 1
        cont_positions = next_positions + torch.arange(width, device=device)[None, :]
        logits = model(input_ids=feed, attention_mask=full_mask, position_ids=cont_positions, cache=cache,
                       use_cache=True).logits.float()
        picked = torch.log_softmax(logits, dim=-1).gather(2, target[:, :, None]).squeeze(2)
        total = total + (picked * counted).sum(dim=1)
    return total.view(len(prompts), n_labels).tolist()
