"""Checkpointed generation: every reply is appended to disk the moment it arrives, so an interrupted run
loses at most the requests in flight, and a re-run sends only what has no reply yet.

Checkpoints live in `<output>/.work/<step>.jsonl`, keyed by a hash of the request itself (messages,
schema, options) plus the backend's model: change a prompt or the teacher and the old replies no
longer match, so nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datasets_gen.backends import Backend, GenFailure, GenReply, GenRequest
from harness.core.ledger import append_line
from harness.core.progress import progress_bar


@dataclass
class StepStats:
    requested: int = 0
    reused: int = 0
    generated: int = 0
    failed: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "failures"}
        out["failures"] = dict(self.failures)
        out["items_per_s"] = self.generated / self.seconds if self.seconds else 0.0
        return out


def request_key(request: GenRequest, model: str, generation: dict | None = None) -> str:
    """The request and everything that shapes its reply: raise num_predict (or change the temperature, seed,
    context size) and replies cut or sampled under the old settings are not reused."""
    payload = json.dumps(
        {"model": model, "messages": request.messages, "schema": request.schema, "options": request.options,
         "generation": generation or {}},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class Generator:
    def __init__(self, backend: Backend, work_dir: Path, progress: bool = True) -> None:
        self.backend = backend
        self.work_dir = work_dir
        self.progress = progress
        self.stats: dict[str, StepStats] = {}
        self.prompts: dict[str, str] = {}
        self._checked = False

    def _load(self, path: Path) -> dict[str, str]:
        done: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by the interruption: its request is simply sent again
                done[row["key"]] = row["text"]
        return done

    def run(self, step: str, requests: dict[str, GenRequest]) -> dict[str, str | GenFailure]:
        """Reply text (or the failure) for each item id; replies already on disk are reused, not re-sent."""
        identity = self.backend.describe()
        model, generation = identity["model"], identity.get("options", {})
        path = self.work_dir / f"{step}.jsonl"
        done = self._load(path)
        keyed = {item: request_key(request, model, generation) for item, request in requests.items()}
        stats = self.stats.setdefault(step, StepStats())
        stats.requested += len(requests)
        results: dict[str, str | GenFailure] = {}
        todo: list[tuple[str, GenRequest]] = []
        for item, request in requests.items():
            if keyed[item] in done:
                results[item] = done[keyed[item]]
                stats.reused += 1
            else:
                todo.append((item, request))
        if todo and not self._checked:
            self.backend.check()  # fail fast, before the first request; never when none is needed
            self._checked = True
        start = time.perf_counter()
        with progress_bar(step, total=len(todo), unit="item", enabled=self.progress) as advance:

            def on_result(item: str, result: GenReply | GenFailure) -> None:
                if isinstance(result, GenFailure):
                    stats.failed += 1
                    stats.failures[result.reason] += 1
                    results[item] = result
                else:
                    append_line(path, json.dumps({"key": keyed[item], "item": item, "text": result.text,
                                                  "completion_tokens": result.completion_tokens}))
                    stats.generated += 1
                    stats.prompt_tokens += result.prompt_tokens
                    stats.completion_tokens += result.completion_tokens
                    results[item] = result.text
                advance(1)

            if todo:
                self.backend.run(todo, on_result)
        stats.seconds += time.perf_counter() - start
        return results

    def remember_prompt(self, name: str, template: str) -> None:
        """Prompts go into the card by hash (and text), so a dataset says exactly how it was asked for."""
        self.prompts[name] = template


def prompt_hashes(prompts: dict[str, str]) -> dict[str, dict]:
    return {name: {"sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text} for name, text in prompts.items()}
