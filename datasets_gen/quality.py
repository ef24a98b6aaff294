"""Keep only usable generated records, and count every one dropped with its reason."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
_WORD = re.compile(r"\w+", re.UNICODE)
# Words that say nothing about whether an answer comes from its passage.
_STOPWORDS = frozenset("""about above after again also because been before being below between both could does
doing down during each from further have having here into itself just more most once only other over same should
some such than that their theirs them then there these they this those through under until very were what when
where which while will with would your yours""".split())


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    tokens = words(text)
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def parse_json(text: str):
    """The JSON value in a reply; a model may wrap it in prose or a code fence, which is tolerated, nothing else."""
    text = text.strip()
    if text.startswith("```"):
        text = re.sub(r"^```\w*\s*|\s*```$", "", text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            try:
                return json.loads(text[start : end + 1])
            except json.JSONDecodeError:
                continue
    raise ValueError("reply is not JSON")


class QualityFilter:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.refusal = re.compile("|".join(cfg.refusal_patterns), re.IGNORECASE) if cfg.refusal_patterns else None
        self.dropped: Counter = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def text_problem(self, text, field_name: str, min_words: int | None = None, max_words: int | None = None) -> str | None:
        """Why `text` is unusable as `field_name` (a reason to count), or None."""
        if not isinstance(text, str) or not text.strip():
            return f"empty_{field_name}"
        count = len(words(text))
        if count < (self.cfg.min_words if min_words is None else min_words):
            return f"{field_name}_too_short"
        if count > (self.cfg.max_words if max_words is None else max_words):
            return f"{field_name}_too_long"
        if self.refusal and self.refusal.search(text):
            return f"refusal_in_{field_name}"
        return None

    def grounding_problem(self, answer: str, passage: str) -> str | None:
        """"ungrounded_answer" when too few of the answer's content words occur in the passage it must come
        from (quality.min_answer_support): a teacher answering from outside knowledge, or about something else."""
        if self.cfg.min_answer_support <= 0:
            return None
        content = [w for w in words(answer) if len(w) > 3 and w not in _STOPWORDS or w.isdigit()]
        if not content:
            return None
        passage_words = set(words(passage))
        stems = {w[:5] for w in passage_words if len(w) > 4}
        supported = sum(w in passage_words or (len(w) > 4 and w[:5] in stems) for w in content)
        return None if supported / len(content) >= self.cfg.min_answer_support else "ungrounded_answer"

    def dedupe(self, items: Iterable[T], text: Callable[[T], str]) -> list[T]:
        """Drop exact duplicates (after normalising case and spacing), then near-duplicates by 3-gram Jaccard."""
        kept: list[T] = []
        seen: set[str] = set()
        kept_shingles: list[set] = []
        for item in items:
            normal = " ".join(words(text(item)))
            if normal in seen:
                self.drop("exact_duplicate")
                continue
            grams = shingles(text(item))
            if any(jaccard(grams, other) >= self.cfg.near_duplicate_threshold for other in kept_shingles):
                self.drop("near_duplicate")
                continue
            seen.add(normal)
            kept_shingles.append(grams)
            kept.append(item)
        return kept
