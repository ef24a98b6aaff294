"""Generation backends behind one interface: a teacher model answering chat requests.

A backend takes keyed requests and reports each result through a callback as soon as it exists, so the
caller can checkpoint item by item; it handles its own concurrency (async requests to a server, or
batched in-process generation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class GenError(RuntimeError):
    """The backend cannot work at all (server down, model missing): stop, say what to do, keep checkpoints."""


@dataclass(frozen=True)
class GenRequest:
    messages: tuple[dict, ...]
    # JSON schema the reply must follow (Ollama's structured outputs); None: free text.
    schema: dict | None = None
    options: dict = field(default_factory=dict)


@dataclass
class GenReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


@dataclass
class GenFailure:
    """One request that still failed after the retries; counted in the card, retried by the next run."""

    reason: str


OnResult = Callable[[str, GenReply | GenFailure], None]


class Backend(Protocol):
    def describe(self) -> dict:
        """What generated the data (kind, model, digest, host): goes into card.json."""

    def check(self) -> None:
        """Fail fast with a GenError before any work if the backend cannot serve."""

    def run(self, requests: list[tuple[str, GenRequest]], on_result: OnResult) -> None: ...


def make_backend(cfg, seed: int) -> Backend:
    from datasets_gen.config import BackendKind

    if cfg.kind == BackendKind.ollama:
        from datasets_gen.backends.ollama import OllamaBackend

        return OllamaBackend(cfg, seed)
    from datasets_gen.backends.local import LocalBackend

    return LocalBackend(cfg, seed)
