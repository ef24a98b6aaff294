"""The validation slice a cell watches its training on (qlora.eval_steps): drawn from the train split, never from
the eval split, so the search that reads it never sees the figures the leaderboard ranks on; seeded; stratified by
label for classification (a slice without some label would reward forgetting it); and removed from training."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace

from harness.core.config import ConfigError
from harness.core.data import Dataset, QARecord


def hold_out_validation(dataset: Dataset, examples: int, seed: int) -> Dataset:
    """The dataset with `examples` train records moved to `validation` (0: unchanged)."""
    if examples <= 0:
        return dataset
    if examples >= len(dataset.train):
        raise ConfigError(f"qlora.validation_examples={examples} would leave no training examples ({dataset.name} "
                          f"has {len(dataset.train)} in train); hold out fewer, e.g. "
                          f"qlora.validation_examples={max(1, len(dataset.train) // 5)}")
    rng = random.Random(seed)
    if dataset.labels:
        chosen = _stratified(dataset.train, examples, rng)
    else:
        chosen = set(rng.sample(range(len(dataset.train)), examples))
    validation = [r for i, r in enumerate(dataset.train) if i in chosen]
    train = [r for i, r in enumerate(dataset.train) if i not in chosen]
    return replace(dataset, train=train, validation=validation)


def _stratified(train: list[QARecord], examples: int, rng: random.Random) -> set[int]:
    """Indices of `examples` records, each label's share as in train (largest remainders), at least one record of
    every label left to train on."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(train):
        by_label[record.answer.strip()].append(i)
    exact = {label: examples * len(ids) / len(train) for label, ids in by_label.items()}
    counts = {label: min(int(share), len(by_label[label]) - 1) for label, share in exact.items()}
    # Largest remainders first; ties broken by label so the slice is the same on every machine.
    order = sorted(by_label, key=lambda label: (-(exact[label] - int(exact[label])), label))
    while sum(counts.values()) < examples:
        grown = False
        for label in order:
            if sum(counts.values()) < examples and counts[label] < len(by_label[label]) - 1:
                counts[label] += 1
                grown = True
        if not grown:  # every label is down to its last training example
            break
    return {i for label in sorted(by_label) for i in rng.sample(by_label[label], counts[label])}


def validation_report(dataset: Dataset, seed: int) -> dict:
    """What the record says about the slice: enough to draw it again and to check it never met the eval split."""
    labels = sorted({r.answer.strip() for r in dataset.validation}) if dataset.labels else None
    return {"examples": len(dataset.validation), "seed": seed, "stratified": bool(dataset.labels),
            "ids": [r.id for r in dataset.validation], **({"labels": labels} if labels is not None else {})}
