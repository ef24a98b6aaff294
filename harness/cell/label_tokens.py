"""How choice scoring splits a label into tokens after its prompt (harness/cell/choices.py), apart from torch so
that the checks before any model loads (harness/cell/checks.py) count the same tokens."""

from __future__ import annotations

__all__ = ["label_continuations"]


def label_continuations(tokenizer, prompt: str, prompt_ids: list[int], labels: list[str]) -> list[list[int]]:
    """Each label's tokens after `prompt` (encoded as `prompt_ids`): the tail of the encoded prompt + label."""
    out = []
    for label in labels:
        whole = tokenizer(prompt + label, add_special_tokens=False)["input_ids"]
        tail = whole[len(prompt_ids):]
        if not tail:
            raise ValueError(f"label {label!r} adds no token after the prompt; choice scoring cannot score it")
        out.append(tail)
    return out
