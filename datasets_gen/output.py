"""Splits, the train/eval leakage report, and writing a dataset folder the harness reads."""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from datasets_gen.backends import GenError
from datasets_gen.quality import jaccard, shingles, words

T = TypeVar("T")


@dataclass
class DatasetOutput:
    """What a recipe produces; records follow the harness's format (harness/core/data.py)."""

    task: str
    train: list[dict]
    eval: list[dict]
    corpus: list[dict] = field(default_factory=list)
    # Further files written beside the splits (e.g. labels.json), name → JSON-serialisable value.
    extra_files: dict[str, object] = field(default_factory=dict)
    # Recipe-specific figures for card.json (e.g. a classifier's held-out accuracy).
    report: dict = field(default_factory=dict)
    # What the user should hear that does not stop the build (a label with no eval example): one line each,
    # printed and kept in card.json.
    warnings: list[str] = field(default_factory=list)


# An eval split with fewer examples than this per label (on average) is refused: some label could not be
# measured at all, and per-label scores (macro-F1) would rest on guesses (README: "datasets_gen").
MIN_EVAL_PER_LABEL = 1


def check_splittable(groups: set[str], what: str) -> None:
    """Before any request is paid for: a by-group split needs at least two groups."""
    if len(groups) < 2:
        raise GenError(f"cannot split by {what}: the selected items all come from one {what} ({sorted(groups)}); "
                       f"give at least two, or raise limit= so it reaches more than one {what}")


def spread_limit(items: list[T], limit: int | None, group_of: Callable[[T], str]) -> list[T]:
    """The first `limit` items taken in turn from each group (first of each, then second of each, ...), in
    their original order: a trial run sees every document, not just the first one's chunks."""
    if not limit or limit >= len(items):
        return items
    by_group: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_group[group_of(item)].append(index)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for indexes in by_group.values():
            if depth < len(indexes) and len(chosen) < limit:
                chosen.append(indexes[depth])
        depth += 1
    return [items[i] for i in sorted(chosen)]


def split_by_group(records: list[dict], group_of: Callable[[dict], str], eval_fraction: float, seed: int):
    """Whole groups (e.g. source documents) go to one side, so eval never asks about a document trained on."""
    if not records:
        raise GenError("no usable records are left to split")
    groups = sorted({group_of(r) for r in records})
    if len(groups) < 2:
        raise GenError(f"cannot split {len(records)} records by group: they all come from one group ({groups}); "
                       "give at least two documents")
    random.Random(seed).shuffle(groups)
    n_eval = min(len(groups) - 1, max(1, round(len(groups) * eval_fraction)))
    eval_groups = set(groups[:n_eval])
    return ([r for r in records if group_of(r) not in eval_groups], [r for r in records if group_of(r) in eval_groups])


def split_stratified(records: list[dict], label_of: Callable[[dict], str], eval_fraction: float, seed: int):
    """The same share of every label in eval (at least one where a label has two or more records)."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_label[label_of(record)].append(record)
    rng = random.Random(seed)
    train, evaluation = [], []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_eval = max(1, round(len(group) * eval_fraction)) if len(group) >= 2 else 0
        evaluation += group[:n_eval]
        train += group[n_eval:]
    return train, evaluation


def check_label_split(labels: list[str], train: list[dict], evaluation: list[dict],
                      label_of: Callable[[dict], str]) -> list[str]:
    """After a classification split: refuse an eval split below MIN_EVAL_PER_LABEL examples per label; warn
    about each label that has no eval example (it is offered in every prompt, but no score measures it)."""
    in_train = defaultdict(int)
    for record in train:
        in_train[label_of(record)] += 1
    in_eval = {label_of(r) for r in evaluation}
    if len(evaluation) < MIN_EVAL_PER_LABEL * len(labels):
        raise GenError(f"the eval split would hold {len(evaluation)} example(s) for {len(labels)} labels, fewer than "
                       f"{MIN_EVAL_PER_LABEL} per label: add examples (a label reaches eval from 2 examples on), "
                       "raise eval_fraction, or list fewer labels; nothing was written")
    missing = [label for label in labels if label not in in_eval]
    if not missing:
        return []
    shown = ", ".join(f"{label!r} ({in_train[label]} in train)" for label in missing[:5])
    return [f"{len(missing)} label(s) have no eval example after the split: {shown}"
            f"{', ...' if len(missing) > 5 else ''}; no score measures them: add examples with those labels "
            "(a label reaches eval from 2 examples on)"]


def number_records(records: list[dict], name: str, split: str) -> list[dict]:
    """Stable ids in split order; keys starting with '_' are a recipe's working notes and are not written."""
    return [{"id": f"{name}-{split}-{i:05d}", **{k: v for k, v in r.items() if not k.startswith("_")}}
            for i, r in enumerate(records, start=1)]


def leakage_report(train_questions: list[str], eval_questions: list[str], threshold: float) -> dict:
    """How much each eval question overlaps its closest train question (word 3-gram Jaccard)."""
    train = [(q, shingles(q), " ".join(words(q))) for q in train_questions]
    rows = []
    for question in eval_questions:
        grams, normal = shingles(question), " ".join(words(question))
        best = max(((jaccard(grams, g), q, n == normal) for q, g, n in train), default=(0.0, "", False))
        rows.append({"eval": question, "closest_train": best[1], "overlap": round(best[0], 4), "exact": best[2]})
    overlaps = [r["overlap"] for r in rows]
    return {
        "measure": "max Jaccard similarity of word 3-grams between an eval question and any train question",
        "eval_questions": len(rows),
        "mean_max_overlap": round(sum(overlaps) / len(overlaps), 4) if overlaps else 0.0,
        "max_overlap": max(overlaps, default=0.0),
        "threshold": threshold,
        "flagged": sum(o >= threshold for o in overlaps),
        "exact_duplicates": sum(r["exact"] for r in rows),
        "worst": sorted(rows, key=lambda r: r["overlap"], reverse=True)[:5],
    }


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    _write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_dataset(folder: Path, output: DatasetOutput, card: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", output.train)
    write_jsonl(folder / "eval.jsonl", output.eval)
    write_jsonl(folder / "corpus.jsonl", output.corpus)
    for name, value in output.extra_files.items():
        _write_atomic(folder / name, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    # The card last: its presence says the folder is complete.
    _write_atomic(folder / "card.json", json.dumps(card, indent=2, ensure_ascii=False) + "\n")
