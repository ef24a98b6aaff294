"""A model served by Ollama, through the official `ollama` client (AsyncClient, N requests in flight).

The client raises different things for the same trouble depending on the call: a refused connection is
the builtin ConnectionError without streaming but a raw httpx.ConnectError with it; timeouts and dropped
connections are raw httpx errors; HTTP errors are ollama.ResponseError. All of them are caught here.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import ollama

from datasets_gen.backends import GenError, GenFailure, GenReply, GenRequest, OnResult

DEFAULT_HOST = "http://127.0.0.1:11434"
_UNREACHABLE = (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout)
_TRANSIENT = (httpx.TimeoutException, httpx.TransportError, json.JSONDecodeError)


class OllamaBackend:
    def __init__(self, cfg, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.host = cfg.host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        self.digest: str | None = None

    def describe(self) -> dict:
        return {"kind": "ollama", "model": self.cfg.model, "digest": self.digest, "host": self.host,
                "options": self.generation_options()}

    def generation_options(self) -> dict:
        """What shapes a reply besides the request: part of every checkpoint key and of the card."""
        return {"temperature": self.cfg.temperature, "seed": self.seed, "num_ctx": self.cfg.num_ctx,
                "num_predict": self.cfg.num_predict}

    def _unreachable(self) -> GenError:
        return GenError(
            f"cannot reach Ollama at {self.host}: start it (`ollama serve`, or the desktop app) "
            f"or point backend.host= (or OLLAMA_HOST) at the server that runs it"
        )

    def _missing(self) -> GenError:
        return GenError(
            f"model '{self.cfg.model}' is not available on the Ollama server at {self.host}: "
            f"run `ollama pull {self.cfg.model}` there, or choose another with backend.model="
        )

    def check(self) -> None:
        """The server answers and has the model; its digest (from /api/tags) identifies the exact weights."""
        try:
            models = ollama.Client(host=self.host, timeout=min(self.cfg.timeout_s, 30)).list().models
        except (*_UNREACHABLE, httpx.TimeoutException) as exc:
            raise self._unreachable() from exc
        wanted = {self.cfg.model, f"{self.cfg.model}:latest"}
        for entry in models:
            if entry.model in wanted:
                self.digest = entry.digest
                return
        raise self._missing()

    def run(self, requests: list[tuple[str, GenRequest]], on_result: OnResult) -> None:
        try:
            asyncio.run(self._run_all(requests, on_result))
        except* GenError as group:
            raise group.exceptions[0] from None

    async def _run_all(self, requests, on_result: OnResult) -> None:
        client = ollama.AsyncClient(host=self.host, timeout=self.cfg.timeout_s)
        gate = asyncio.Semaphore(self.cfg.concurrency)

        async def one(key: str, request: GenRequest) -> None:
            async with gate:
                on_result(key, await self._generate(client, request))

        async with asyncio.TaskGroup() as group:  # a GenError in one request cancels the others
            for key, request in requests:
                group.create_task(one(key, request))

    async def _generate(self, client: ollama.AsyncClient, request: GenRequest) -> GenReply | GenFailure:
        options = {**self.generation_options(), **request.options}
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                await asyncio.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            start = time.perf_counter()
            try:
                response = await client.chat(
                    model=self.cfg.model,
                    messages=list(request.messages),
                    format=request.schema,
                    options=options,
                    stream=False,
                )
            except ollama.ResponseError as exc:
                if exc.status_code == 404:
                    raise self._missing() from exc
                last = f"HTTP {exc.status_code}: {exc.error}"
                if 400 <= exc.status_code < 500:
                    return GenFailure(last)  # the request itself is wrong: retrying cannot help
                continue
            except _UNREACHABLE as exc:
                last = type(exc).__name__
                if attempt == self.cfg.retries:
                    raise self._unreachable() from exc
                continue
            except _TRANSIENT as exc:
                last = type(exc).__name__
                continue
            return GenReply(
                text=response.message.content or "",
                prompt_tokens=response.prompt_eval_count or 0,
                completion_tokens=response.eval_count or 0,
                seconds=time.perf_counter() - start,
            )
        return GenFailure(f"{last} after {self.cfg.retries + 1} tries")
