"""What `qlora.max_length` does to the training examples, counted with the model's tokenizer before weights load.

TRL cuts a prompt + answer sequence from the right at qlora.max_length: an example longer than that loses the
end of its answer, and one whose prompt alone fills the limit loses all of it and is dropped. Both are counted
and said in one line when training starts (and kept in the record's `train.truncation`). When more than
MAX_TRUNCATED_SHARE of the training examples would be cut or dropped, the cell refuses before anything loads:
the scores would measure a model trained on other data than the dataset's. `data.allow_truncation=true` trains
anyway.

Retrieval methods shorten the retrieved context until prompt and answer fit (harness.cell.train.fit_context),
so their examples are counted without context: what is left is the question and the answer themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.core.config import ConfigError, RunConfig
from harness.core.data import Dataset, prompt_messages

# More than this share of training examples cut or dropped by qlora.max_length refuses the cell (README:
# "Training examples longer than qlora.max_length").
MAX_TRUNCATED_SHARE = 0.10
# The trainers whose rows are the dataset's prompt/answer pairs (causal packs the corpus into full blocks).
PAIR_TRAINERS = ("instruct",)


@dataclass(frozen=True)
class Truncation:
    examples: int
    cut: int  # longer than max_length, some of the answer left
    dropped: int  # the prompt alone fills max_length: nothing left to learn from, TRL drops the row
    longest: int  # tokens of the longest example, prompt + answer
    longest_id: str
    max_length: int
    max_context: int
    first_ids: tuple[str, ...]  # the first few examples cut or dropped

    @property
    def affected(self) -> int:
        return self.cut + self.dropped

    @property
    def share(self) -> float:
        return self.affected / self.examples if self.examples else 0.0

    def fix(self) -> str:
        if self.longest <= self.max_context:
            return f"qlora.max_length={self.longest} would keep them all"
        return (f"the longest is over the model's context of {self.max_context} tokens, so shorten or remove those "
                f"examples (first: {', '.join(map(repr, self.first_ids))})")

    def line(self) -> str:
        if not self.affected:
            return (f"training: all {self.examples} examples fit in qlora.max_length={self.max_length} tokens "
                    f"(longest {self.longest:,})")
        parts = [f"{self.cut} lose the end of their answer"] if self.cut else []
        if self.dropped:
            parts.append(f"{self.dropped} lose all of it and are dropped")
        return (f"training: {self.affected} of {self.examples} examples are longer than qlora.max_length="
                f"{self.max_length} tokens (longest {self.longest:,}, id {self.longest_id!r}): {', '.join(parts)}; "
                f"{self.fix()}")

    def refusal(self) -> str | None:
        if self.share <= MAX_TRUNCATED_SHARE:
            return None
        return (f"qlora.max_length={self.max_length}: {self.affected} of {self.examples} training examples "
                f"({self.share:.0%}) would be cut or dropped (longest {self.longest:,} tokens, id "
                f"{self.longest_id!r}), more than the {MAX_TRUNCATED_SHARE:.0%} a cell accepts; {self.fix()}, "
                "or set data.allow_truncation=true to train anyway")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def count_truncation(cfg: RunConfig, dataset: Dataset, tokenizer) -> Truncation | None:
    """The training examples qlora.max_length cuts or drops (None: this cell's trainer does not train on them)."""
    if cfg.method.trainer not in PAIR_TRAINERS or not dataset.train:
        return None
    context = "" if cfg.method.retrieval else None
    limit = cfg.qlora.max_length
    cut = dropped = 0
    longest, longest_id, first = 0, "", []
    for record in dataset.train:
        prompt = prompt_messages(record, cfg.data, cfg.model, context, dataset.labels)
        prompt_tokens = _count(tokenizer, prompt, generation_prompt=True)
        # +1: the end-of-sequence token TRL appends where the template does not end with one.
        total = _count(tokenizer, [*prompt, {"role": "assistant", "content": record.answer}], False) + 1
        if total > longest:
            longest, longest_id = total, record.id
        if prompt_tokens >= limit:
            dropped += 1
        elif total > limit:
            cut += 1
        else:
            continue
        if len(first) < 3:
            first.append(record.id)
    return Truncation(len(dataset.train), cut, dropped, longest, longest_id, limit, cfg.model.max_context,
                      tuple(first))


def check_truncation(cfg: RunConfig, dataset: Dataset, tokenizer) -> Truncation | None:
    """Count, and refuse (ConfigError) above MAX_TRUNCATED_SHARE unless data.allow_truncation."""
    found = count_truncation(cfg, dataset, tokenizer)
    if found is not None and not cfg.data.allow_truncation and (message := found.refusal()):
        raise ConfigError(message)
    return found


def _count(tokenizer, messages: list[dict], generation_prompt: bool) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
