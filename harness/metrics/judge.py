"""The LLM judge behind RAGAS and pairwise preference: an OpenAI-compatible endpoint, a reply cache, accounting.

Every judge call goes through one `openai.AsyncOpenAI` client (RAGAS 0.4 requires an async OpenAI-style
client; Ollama serves one at /v1). Its HTTP transport is wrapped by `CachingTransport`, which answers a
chat-completion request it has seen before from an SQLite file: the cache key is the judge's identity (backend,
model and, for Ollama, the model's digest) plus the whole request body (prompt with the sample in it, schema,
temperature, max_tokens). So re-scoring a sweep with the same judge sends nothing, and a re-pulled model with
new weights is not served stale replies. Only complete 200 replies are cached; errors are retried next time.

A sample the judge fails on (timeout, HTTP error, output that does not parse) is a *failure with a reason*,
never a 0 and never dropped: see `failure_reason` and harness/metrics/ragas.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.core.config import ConfigError, JudgeBackend, JudgeConfig

# ragas sends usage telemetry to its authors unless told not to; set before ragas is ever imported.
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

OLLAMA_DEFAULT_HOST = "http://127.0.0.1:11434"
INSTALL_HINT = "LLM-judged metrics need the judge extra: pip install -e '.[judge]' (ragas, openai, instructor)"


class JudgeUnavailable(ConfigError):
    """The configured judge cannot be reached or does not serve the model: fix the setup, nothing was scored."""


@dataclass
class JudgeStats:
    requests: int = 0  # HTTP requests that reached the server (retries included)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class JudgeCache:
    """Judge replies on disk: SQLite, so parallel sweep cells (and processes) can share one file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, body BLOB NOT NULL, "
                       "created REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> bytes | None:
        with self._lock, self._connect() as db:
            row = db.execute("SELECT body FROM replies WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, body: bytes) -> None:
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?)", (key, body, time.time()))

    def __len__(self) -> int:
        with self._lock, self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]


def request_key(identity: str, body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{identity}\n{canonical}".encode()).hexdigest()


def _complete_reply(content: bytes) -> bool:
    try:
        reply = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(reply, dict) and bool(reply.get("choices"))


def make_caching_transport(inner, cache: JudgeCache | None, identity: str, stats: JudgeStats):
    """An httpx async transport that serves repeated chat-completion requests from `cache` and counts usage."""
    import httpx  # deferred, optional extra [judge]: only a judge imports it

    class CachingTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            body = None
            if request.method == "POST" and request.url.path.endswith("/chat/completions"):
                try:
                    body = json.loads(request.content)
                except ValueError:
                    body = None
            cacheable = cache is not None and isinstance(body, dict) and not body.get("stream")
            key = request_key(identity, body) if cacheable else None
            if key is not None and (hit := cache.get(key)) is not None:
                stats.cache_hits += 1
                return httpx.Response(200, headers={"content-type": "application/json"}, content=hit,
                                      request=request)
            response = await inner.handle_async_request(request)
            stats.requests += 1
            if body is None or response.status_code != 200 or body.get("stream"):
                return response
            content = await response.aread()
            await response.aclose()
            if _complete_reply(content):
                usage = json.loads(content).get("usage") or {}
                stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                stats.completion_tokens += int(usage.get("completion_tokens") or 0)
                if key is not None:
                    cache.put(key, content)
            # The body was read (and decompressed) here, so the encoding headers no longer apply.
            return httpx.Response(response.status_code, headers={"content-type": "application/json"},
                                  content=content, request=request)

        async def aclose(self) -> None:
            await inner.aclose()

    return CachingTransport()


def failure_reason(exc: BaseException) -> str:
    """A short, countable reason for a failed judge call, looked up along the exception's cause chain
    (instructor wraps the openai or validation error it gave up on)."""
    import openai  # deferred, optional extra [judge]: only an OpenAI-compatible judge imports it

    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in chain:
        if isinstance(error, openai.APITimeoutError):
            return "timeout"
        if isinstance(error, openai.APIConnectionError):
            return "connection error"
        if isinstance(error, openai.APIStatusError):
            return f"http {error.status_code}"
    for error in chain:
        name = type(error).__name__
        if name == "IncompleteOutputException":
            return "judge output cut at judge.max_tokens"
    for error in chain:
        name = type(error).__name__
        if name in ("InstructorRetryException", "ValidationError", "JSONDecodeError"):
            return "unparseable judge output"
        if isinstance(error, TimeoutError):
            return "timeout"
    return type(exc).__name__


class Judge:
    """One configured judge; `client()` gives a fresh async client per event loop (httpx pools are per loop)."""

    def __init__(self, cfg: JudgeConfig, cache_dir: Path) -> None:
        if cfg.backend == JudgeBackend.none:
            raise ValueError("Judge needs a judge backend; judge=none scores nothing")
        self.cfg = cfg
        self.stats = JudgeStats()
        self.cache = JudgeCache(Path(cache_dir).expanduser() / "judge_cache.sqlite") if cfg.cache else None
        self.digest: str | None = None

    @property
    def base_url(self) -> str:
        return judge_base_url(self.cfg)

    @property
    def identity(self) -> str:
        """What the cache key and the run record say the judge was; a different model means a different key."""
        where = f"sha256:{self.digest}" if self.digest else self.base_url
        return f"{self.cfg.backend.value}:{self.cfg.model}@{where}"

    def _api_key(self) -> str:
        return judge_api_key(self.cfg)

    def check(self) -> None:
        """Fail fast, before a cell spends GPU time: is the server up, and does it serve judge.model?"""
        self.digest = probe_judge(self.cfg)

    def client(self):
        """An AsyncOpenAI client whose transport caches and counts; create it inside the loop that uses it."""
        try:
            import httpx  # deferred, optional extra [judge]: only a judge imports it
            import openai  # deferred, optional extra [judge]: only an OpenAI-compatible judge imports it
        except ImportError as exc:
            raise JudgeUnavailable(INSTALL_HINT) from exc
        transport = make_caching_transport(httpx.AsyncHTTPTransport(), self.cache, self.identity, self.stats)
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._api_key(),
            timeout=self.cfg.timeout_s,
            max_retries=self.cfg.max_retries,
            http_client=httpx.AsyncClient(transport=transport, timeout=self.cfg.timeout_s),
        )

    def settings(self) -> dict[str, Any]:
        """The judge as the run record shows it (no key: only the variable's name)."""
        return {"backend": self.cfg.backend.value, "model": self.cfg.model, "identity": self.identity,
                "base_url": self.base_url, "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}


def judge_base_url(cfg: JudgeConfig) -> str:
    if cfg.base_url:
        return cfg.base_url.rstrip("/")
    host = os.environ.get("OLLAMA_HOST", "").strip() or OLLAMA_DEFAULT_HOST
    if not host.startswith(("http://", "https://")):
        host = "http://" + host  # OLLAMA_HOST is often written as host:port
    return host.rstrip("/") + "/v1"


def judge_api_key(cfg: JudgeConfig) -> str:
    if not cfg.api_key_env:
        return "not-needed"  # Ollama and most local servers ignore it, but the openai client wants one
    key = os.environ.get(cfg.api_key_env, "")
    if not key:
        raise JudgeUnavailable(f"judge.api_key_env: environment variable {cfg.api_key_env} is not set; "
                               "export it, or set judge.api_key_env=null for a server without keys")
    return key


def probe_judge(cfg: JudgeConfig) -> str | None:
    """Is the judge's server up, and does it serve judge.model? JudgeUnavailable if not; the Ollama model's digest
    when known. Writes nothing (no cache is opened): the entry point asks this before Hydra creates a folder."""
    try:
        import httpx  # deferred, optional extra [judge]: only a judge imports it
    except ImportError as exc:
        raise JudgeUnavailable(INSTALL_HINT) from exc
    base_url = judge_base_url(cfg)
    headers = {"Authorization": f"Bearer {judge_api_key(cfg)}"}
    where = f"judge={cfg.backend.value} at {base_url}"
    try:
        response = httpx.get(f"{base_url}/models", headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        start = "; start it with `ollama serve`" if cfg.backend == JudgeBackend.ollama else ""
        raise JudgeUnavailable(f"{where}: cannot connect ({type(exc).__name__}){start}, or set judge=none") from None
    if response.status_code in (401, 403):
        raise JudgeUnavailable(f"{where}: the server refused the API key (HTTP {response.status_code}); "
                               f"check the variable judge.api_key_env names")
    if response.status_code != 200:
        raise JudgeUnavailable(f"{where}: GET /models answered HTTP {response.status_code}")
    try:
        served = [m.get("id") for m in response.json().get("data", [])]
    except (ValueError, AttributeError):
        raise JudgeUnavailable(f"{where}: /models did not answer an OpenAI-style model list") from None
    if cfg.model not in served:
        pull = f"; run `ollama pull {cfg.model}`" if cfg.backend == JudgeBackend.ollama else ""
        raise JudgeUnavailable(f"judge.model: {cfg.model!r} is not served by {where}{pull}; "
                               f"served: {', '.join(map(str, served)) or 'none'}")
    return _ollama_digest(cfg, httpx) if cfg.backend == JudgeBackend.ollama else None


def _ollama_digest(cfg: JudgeConfig, httpx) -> str | None:
    root = judge_base_url(cfg).removesuffix("/v1")
    try:
        models = httpx.get(f"{root}/api/tags", timeout=15).json().get("models", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    names = {cfg.model, f"{cfg.model}:latest"}
    return next((m.get("digest") for m in models if m.get("name") in names or m.get("model") in names), None)
