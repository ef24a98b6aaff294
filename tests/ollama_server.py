"""A small Ollama REST peer for tests: the official `ollama` client talks to it over a real socket, unpatched.

Standard library only. Start it as a context manager; it listens on 127.0.0.1 on a free port:

    def echo(body: dict) -> str:                       # the parsed request body (messages/prompt/format/options)
        return "you said: " + body["messages"][-1]["content"]

    with OllamaTestServer({"qwen2.5:0.5b": echo}, delay_s=0.1) as srv:
        client = ollama.Client(host=srv.host)          # "http://127.0.0.1:PORT"
        client.chat(model="qwen2.5:0.5b", messages=[...])
        srv.requests                                   # every request received: method, path, body, t

Endpoints (field names as in the ollama server's api types and docs/api.md):
  GET  /                  "Ollama is running"
  GET  /api/version       {"version": ...}
  GET  /api/tags          models: name, model, modified_at, size, digest, details{...}
  GET  /api/ps            the models that have served a request, with the same digest
  POST /api/show          modelfile, parameters, template, details, model_info, capabilities, modified_at (no digest:
                          the real /api/show has none; the model digest is in /api/tags and /api/ps)
  POST /api/chat          message{role, content}; /api/generate: response (+ context)
  POST /api/embed         input (str | list[str]) -> embeddings (unit vectors; equal texts -> equal vectors)
  POST /api/embeddings    legacy: prompt -> embedding

OpenAI-compatible endpoints (ollama's openai/openai.go + middleware/openai.go; for the `openai` client with
base_url=srv.host + "/v1", any api_key):
  POST /v1/chat/completions   {model, messages, max_tokens, temperature, response_format, stream, stream_options...}
                              -> {"id": "chatcmpl-N", "object": "chat.completion", "created", "model",
                                  "system_fingerprint": "fp_ollama", "choices": [{"index": 0, "message": {"role":
                                  "assistant", "content"}, "finish_reason": "stop"|"length"}], "usage": {prompt_tokens,
                                  completion_tokens, total_tokens}}. The responder gets the request body as sent (it has
                              "messages"); max_tokens truncates like options.num_predict (finish_reason "length").
                              "stream": true -> text/event-stream: `data: {chat.completion.chunk}` events (delta
                              {role, content}, finish_reason null, then a last chunk with finish_reason), a usage chunk
                              (choices []) when stream_options.include_usage, then `data: [DONE]`.
  GET  /v1/models             {"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}
                              (owned_by is the name's namespace: "library" for plain names, as ollama's ParseName)
  GET  /v1/models/{model}     one such entry
Errors there use OpenAI's shape, as ollama's openai.NewError writes it:
  {"error": {"message": ..., "type": "invalid_request_error" (400) | "not_found_error" (404) | "api_error" (other),
             "param": null, "code": null}}
An unknown model is 404 with the /api/chat wording, "model 'X' not found" (the middleware forwards to ChatHandler);
the `openai` client raises NotFoundError. Empty messages -> 400 "[] is too short - 'messages'".

Streaming is Ollama's: "stream" absent or true -> application/x-ndjson, chunked, a few done=false pieces then a
done=true chunk with done_reason and the stats; "stream": false -> one application/json object.
eval_count / prompt_eval_count are whitespace token counts; durations are in nanoseconds, derived from
`tokens_per_s` (eval) so throughput code gets stable numbers. options.num_predict truncates the reply
(done_reason "length").

Unknown model -> 404 {"error": ...} with the wording the current ollama server uses for that endpoint
(server/routes.go): chat, generate and show answer "model 'X' not found"; embed/embeddings go through the scheduler
and answer 'model "X" not found, try pulling it first'. Clients should match on the 404 status, not on the words.

Faults: `srv.inject(kind, times=1, path=None)` makes the next `times` requests (to `path`, or to any path) fail
(/v1/chat/completions included: "httpNNN" and responder errors answer in the OpenAI error shape there, "malformed"
is a 200 whose body (or SSE data line) is not JSON, "stream_error" an in-band `data: {"error": {...}}` event):
  "hang"          accept the request and send nothing until `hang_s` passes (client read timeout)
  "stall"         send the status line/headers (and, when streaming, the first chunk), then go silent
  "drop"          close the connection without any response (httpx.RemoteProtocolError)
  "cut"           send headers and part of the body, then close (httpx.RemoteProtocolError mid-body)
  "http500", "http503", ... ("httpNNN")   that status with {"error": ...}
  "malformed"     200 whose body is not JSON (non-stream) / whose NDJSON line is not JSON (stream)
  "nonjson_reply" a well-formed response whose reply text is not JSON (a model ignoring `format=`)
  "stream_error"  streaming: one content chunk, then an in-band {"error": ...} line, as ollama does mid-stream
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import unquote

Responder = Callable[[dict], str]

FAULT_KINDS = ("hang", "stall", "drop", "cut", "malformed", "nonjson_reply", "stream_error")
_HTTP_FAULT = re.compile(r"^http([1-5]\d\d)$")
_INFERENCE_PATHS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/v1/chat/completions")
_MODIFIED_AT = "2025-01-01T00:00:00.000000Z"
_MODIFIED_AT_UNIX = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
SERVER_VERSION = "0.12.6"


def fake_digest(name: str) -> str:
    """The stable fake manifest digest for a model name: 64 hex chars, no "sha256:" prefix, as /api/tags has it."""
    return hashlib.sha256(f"tunebench-fake-manifest:{name}".encode()).hexdigest()


def count_tokens(text: str) -> int:
    return len(text.split())


def fake_embedding(model: str, text: str, dim: int) -> list[float]:
    """A deterministic unit vector of `dim` floats for (model, text)."""
    out: list[float] = []
    counter = 0
    while len(out) < dim:
        block = hashlib.sha256(f"{model}\0{text}\0{counter}".encode()).digest()
        for (word,) in struct.iter_unpack(">I", block):
            out.append(word / 0xFFFFFFFF * 2.0 - 1.0)
        counter += 1
    out = out[:dim]
    norm = math.sqrt(sum(v * v for v in out)) or 1.0
    return [v / norm for v in out]


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pieces(text: str) -> list[str]:
    """Whitespace-preserving word pieces: "".join(_pieces(t)) == t."""
    return re.findall(r"\s+|\S+\s*", text)


def _split_chunks(text: str, n: int) -> list[str]:
    pieces = _pieces(text)
    if not pieces:
        return []
    n = max(1, min(n, len(pieces)))
    size = math.ceil(len(pieces) / n)
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def _truncate_tokens(text: str, limit: int) -> str:
    kept, seen = [], 0
    for p in _pieces(text):
        if p.strip():
            if seen == limit:
                break
            seen += 1
        kept.append(p)
    return "".join(kept).rstrip()


class _Fault:
    __slots__ = ("kind", "path", "remaining")

    def __init__(self, kind: str, remaining: int, path: str | None):
        self.kind, self.remaining, self.path = kind, remaining, path


class OllamaTestServer:
    """An Ollama REST API peer on 127.0.0.1 (port 0) in a daemon thread; see the module docstring."""

    def __init__(
        self,
        models: dict[str, Responder | None],
        delay_s: float = 0.0,
        embed_dim: int = 8,
        *,
        chunk_delay_s: float = 0.0,
        stream_chunks: int = 4,
        tokens_per_s: float = 50.0,
        max_parallel: int | None = None,
        hang_s: float = 30.0,
        context_length: int = 4096,
    ):
        self.models: dict[str, Responder] = {name: fn or _echo for name, fn in models.items()}
        self.delay_s = delay_s
        self.embed_dim = embed_dim
        self.chunk_delay_s = chunk_delay_s
        self.stream_chunks = stream_chunks
        self.tokens_per_s = tokens_per_s
        self.hang_s = hang_s
        self.context_length = context_length
        self.requests: list[dict] = []  # {"method", "path", "body", "t"}; appended under a lock
        self.errors: list[str] = []  # responder exceptions, for debugging a test
        self.peak_concurrency = 0  # most inference requests in flight at once
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._in_flight = 0
        self._completion_ids = 0
        self._loaded: dict[str, float] = {}
        self._parallel = threading.BoundedSemaphore(max_parallel) if max_parallel else None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> OllamaTestServer:
        handler = type("_BoundHandler", (_Handler,), {"owner": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (pooled keep-alive ones too), so the port refuses."""
        if self._httpd is None:
            return
        self._stop.set()  # wakes hung/stalled handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- test helpers ----------------------------------------------------------------------------------------
    def inject(self, kind: str, times: int = 1, path: str | None = None) -> None:
        """Make the next `times` requests (to `path` if given) fail with `kind` (see FAULT_KINDS, or "httpNNN")."""
        if kind not in FAULT_KINDS and not _HTTP_FAULT.match(kind):
            raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS} or 'httpNNN'")
        with self._lock:
            self._faults.append(_Fault(kind, times, path))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_to(self, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def digest(self, model: str) -> str:
        return fake_digest(model)

    # ---- internals used by the handler -----------------------------------------------------------------------
    def _record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "body": body, "t": time.monotonic()})

    def _take_fault(self, path: str) -> str | None:
        with self._lock:
            for f in self._faults:
                if f.path is None or f.path == path:
                    f.remaining -= 1
                    if f.remaining <= 0:
                        self._faults.remove(f)
                    return f.kind
        return None

    def _enter(self, model: str) -> None:
        if self._parallel is not None:
            self._parallel.acquire()
        with self._lock:
            self._in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self._in_flight)
            self._loaded[model] = time.time()

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
        if self._parallel is not None:
            self._parallel.release()

    def _next_completion_id(self) -> str:
        with self._lock:
            self._completion_ids += 1
            return f"chatcmpl-{self._completion_ids}"

    def _v1_model(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": _MODIFIED_AT_UNIX, "owned_by": _namespace(name)}

    def _model_details(self, name: str) -> dict:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": "fake",
            "families": ["fake"],
            "parameter_size": "1B",
            "quantization_level": "Q4_K_M",
        }

    def _tags_entry(self, name: str) -> dict:
        return {
            "name": name,
            "model": name,
            "modified_at": _MODIFIED_AT,
            "size": 1_000_000 + int(fake_digest(name)[:4], 16),
            "digest": fake_digest(name),
            "details": self._model_details(name),
        }


def _namespace(name: str) -> str:
    """The namespace ollama's model.ParseName gives "[host/][namespace/]model[:tag]"; "library" by default."""
    parts = name.split(":", 1)[0].split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] else "library"


def _message_text(content: Any) -> str:
    """An OpenAI message's content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _echo(body: dict) -> str:
    if "messages" in body:
        msgs = body.get("messages") or [{}]
        return str(msgs[-1].get("content", ""))
    return str(body.get("prompt", ""))


class _Handler(BaseHTTPRequestHandler):
    owner: OllamaTestServer
    _openai = False  # the request is to the OpenAI-compatible /v1 API: errors in OpenAI's shape
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as the real (Go) server
    timeout = 60  # idle keep-alive sockets do not pin a handler thread forever
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms Nagle/delayed-ACK stall

    # ---- plumbing --------------------------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.owner._lock:
                self.owner._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _read_body(self) -> tuple[Any, str | None]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None, "missing request body"
        try:
            return json.loads(raw), None
        except json.JSONDecodeError as e:
            return None, str(e)

    def _send_bytes(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, obj: Any) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        if self._openai:  # ollama's openai.NewError: an object, typed by status
            etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
            return self._send_json(status, {"error": {"message": message, "type": etype, "param": None, "code": None}})
        self._send_json(status, {"error": message})

    def _send_whole(self, data: bytes, ctype: str, fault: str | None) -> None:
        """A non-streamed 200 reply, or its "stall" (headers, then silence) / "cut" (half the body) fault."""
        if fault not in ("stall", "cut"):
            return self._send_bytes(200, data, ctype)
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "cut":
            self.wfile.write(data[: len(data) // 2])
        else:
            self._sleep(self.owner.hang_s)
        return self._drop()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _sleep(self, seconds: float) -> bool:
        """Sleep, but wake when the server stops; True when it stopped."""
        return self.owner._stop.wait(seconds) if seconds > 0 else self.owner._stop.is_set()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- dispatch --------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        self._openai = path.startswith("/v1/")
        body, body_err = (None, None)
        if method in ("POST", "DELETE"):
            body, body_err = self._read_body()
        self.owner._record(method, path, body)
        try:
            if self._apply_pre_fault(path):
                return
            self._route(method, path, body, body_err)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away (timed out); nothing to answer

    def _route(self, method: str, path: str, body: Any, body_err: str | None) -> None:
        o = self.owner
        if path == "/" and method in ("GET", "HEAD"):
            return self._send_bytes(200, b"Ollama is running", "text/plain; charset=utf-8")
        if path == "/api/version" and method == "GET":
            return self._send_json(200, {"version": SERVER_VERSION})
        if path == "/api/tags" and method in ("GET", "HEAD"):
            return self._send_json(200, {"models": [o._tags_entry(n) for n in o.models]})
        if path == "/api/ps" and method == "GET":
            return self._send_json(200, {"models": self._ps()})
        if path == "/v1/models" and method == "GET":
            return self._send_json(200, {"object": "list", "data": [o._v1_model(n) for n in o.models]})
        if path.startswith("/v1/models/") and method == "GET":
            name = unquote(path[len("/v1/models/") :])
            if name not in o.models:
                return self._error(404, f"model '{name}' not found")
            return self._send_json(200, o._v1_model(name))
        if path == "/v1/chat/completions" and method == "POST":
            return self._v1_chat_route(body, body_err)
        handlers = {
            "/api/show": self._show,
            "/api/chat": self._chat,
            "/api/generate": self._generate,
            "/api/embed": self._embed,
            "/api/embeddings": self._embeddings,
        }
        if path not in handlers or method != "POST":
            return self._send_bytes(404, b"404 page not found", "text/plain")
        if body_err is not None:
            return self._error(400, body_err)
        if not isinstance(body, dict):
            return self._error(400, "invalid request body")
        name = body.get("model") or body.get("name") or ""
        if not name:
            return self._error(400, "model is required")
        if name not in o.models:
            if path in ("/api/embed", "/api/embeddings"):
                return self._error(404, f'model "{name}" not found, try pulling it first')
            return self._error(404, f"model '{name}' not found")
        if path == "/api/show":
            return self._show(name, body)
        o._enter(name)
        try:
            if self._sleep(o.delay_s):
                return self._drop()
            handlers[path](name, body)
        finally:
            o._leave()

    def _apply_pre_fault(self, path: str) -> bool:
        """Faults that act before any routing; the rest are left on self._fault for the responders."""
        self._fault = self.owner._take_fault(path)
        kind = self._fault
        if kind is None:
            return False
        if kind == "hang":
            self._sleep(self.owner.hang_s)
            self._drop()
            return True
        if kind == "drop":
            self._drop()
            return True
        if m := _HTTP_FAULT.match(kind):
            self._error(int(m.group(1)), f"injected fault: HTTP {m.group(1)}")
            return True
        return False

    # ---- endpoints -------------------------------------------------------------------------------------------
    def _ps(self) -> list[dict]:
        o = self.owner
        with o._lock:
            loaded = dict(o._loaded)
        out = []
        for name, t in sorted(loaded.items(), key=lambda kv: -kv[1]):
            entry = o._tags_entry(name)
            del entry["modified_at"]
            expires = datetime.fromtimestamp(t, UTC) + timedelta(minutes=5)
            out.append(
                {
                    **entry,
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "size_vram": entry["size"],
                    "context_length": o.context_length,
                }
            )
        return out

    def _show(self, name: str, body: dict) -> None:
        o = self.owner
        blob = hashlib.sha256(f"tunebench-fake-blob:{name}".encode()).hexdigest()  # the GGUF blob, not the digest
        self._send_json(
            200,
            {
                "license": "",
                "modelfile": (
                    '# Modelfile generated by "ollama show"\n'
                    "# To build a new Modelfile based on this, replace FROM with:\n"
                    f"# FROM {name}\n\n"
                    f"FROM /root/.ollama/models/blobs/sha256-{blob}\n"
                    'TEMPLATE "{{ .Prompt }}"\n'
                    "PARAMETER temperature 0.7\n"
                ),
                "parameters": "temperature                    0.7",
                "template": "{{ .Prompt }}",
                "details": o._model_details(name),
                "model_info": {
                    "general.architecture": "fake",
                    "general.parameter_count": 1_000_000_000,
                    "fake.context_length": o.context_length,
                    "fake.embedding_length": o.embed_dim,
                },
                "capabilities": ["completion"],
                "modified_at": _MODIFIED_AT,
            },
        )

    def _reply(self, name: str, body: dict, num_predict: Any = None) -> tuple[str, str] | None:
        """The responder's text, truncated to `num_predict` tokens (by default options.num_predict); None after
        answering a responder error."""
        try:
            text = self.owner.models[name](body)
        except Exception as e:  # noqa: BLE001 -- a broken responder is a 500, as a crashed runner would be
            self.owner.errors.append(f"{type(e).__name__}: {e}")
            self._error(500, f"responder error: {type(e).__name__}: {e}")
            return None
        if not isinstance(text, str):
            text = json.dumps(text)
        if self._fault == "nonjson_reply":
            text = "Sure! Here is the answer you asked for, but not as JSON."
        done_reason = "stop"
        if num_predict is None:
            num_predict = (body.get("options") or {}).get("num_predict")
        if isinstance(num_predict, int) and num_predict >= 0 and count_tokens(text) > num_predict:
            text, done_reason = _truncate_tokens(text, num_predict), "length"
        return text, done_reason

    def _stats(self, prompt_tokens: int, text: str, t0: float) -> dict:
        rate = self.owner.tokens_per_s
        eval_count = count_tokens(text)
        return {
            "total_duration": max(1, int((time.monotonic() - t0) * 1e9)),
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": int(prompt_tokens / (rate * 10) * 1e9),
            "eval_count": eval_count,
            "eval_duration": max(1, int(eval_count / rate * 1e9)),
        }

    def _chat(self, name: str, body: dict) -> None:
        msgs = body.get("messages") or []
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) for m in msgs if isinstance(m, dict))
        self._complete(name, body, prompt_tokens, chat=True)

    def _generate(self, name: str, body: dict) -> None:
        prompt_tokens = count_tokens(str(body.get("prompt") or "")) + count_tokens(str(body.get("system") or ""))
        self._complete(name, body, prompt_tokens, chat=False)

    def _complete(self, name: str, body: dict, prompt_tokens: int, *, chat: bool) -> None:
        t0 = time.monotonic()
        got = self._reply(name, body)
        if got is None:
            return
        text, done_reason = got
        fault = self._fault

        def piece(content: str, done: bool) -> dict:
            d: dict = {"model": name, "created_at": _now_rfc3339()}
            if chat:
                d["message"] = {"role": "assistant", "content": content}
            else:
                d["response"] = content
            d["done"] = done
            return d

        def final(content: str) -> dict:
            d = piece(content, True)
            d["done_reason"] = done_reason
            if not chat:
                d["context"] = list(range(1, min(prompt_tokens + count_tokens(text), 32) + 1))
            d.update(self._stats(prompt_tokens, text, t0))
            return d

        if body.get("stream", True) is False:  # ollama streams unless told "stream": false
            data = json.dumps(final(text)).encode()
            if fault == "malformed":
                data = b'{"model": "' + name.encode() + b'", "message": {"role": "assist'  # cut short: not JSON
            return self._send_whole(data, "application/json; charset=utf-8", fault)

        self._start_stream()
        chunks = _split_chunks(text, self.owner.stream_chunks)
        for i, content in enumerate(chunks):
            if i and self._sleep(self.owner.chunk_delay_s):
                return self._drop()
            self._chunk(json.dumps(piece(content, False)).encode() + b"\n")
            if i == 0 and fault in ("stall", "cut", "malformed", "stream_error"):
                break
        if fault == "stall":
            self._sleep(self.owner.hang_s)
            return self._drop()
        if fault == "cut":
            self._chunk(b'{"model": "' + name.encode() + b'", "mess')  # half a line, then the connection dies
            return self._drop()
        if fault == "malformed":
            self._chunk(b"this line is not json\n")
            self._end_stream()
            return
        if fault == "stream_error":
            self._chunk(json.dumps({"error": "injected fault: runner terminated mid-stream"}).encode() + b"\n")
            self._end_stream()
            return
        self._sleep(self.owner.chunk_delay_s if chunks else 0)
        self._chunk(json.dumps(final("")).encode() + b"\n")
        self._end_stream()

    # ---- OpenAI-compatible API -------------------------------------------------------------------------------
    def _v1_chat_route(self, body: Any, body_err: str | None) -> None:
        """Validation as ollama's ChatMiddleware + ChatHandler do it, then the completion."""
        o = self.owner
        if body_err is not None:
            return self._error(400, body_err)
        if not isinstance(body, dict):
            return self._error(400, "invalid request body")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return self._error(400, "[] is too short - 'messages'")
        name = body.get("model") or ""
        if not name:
            return self._error(400, "model is required")
        if name not in o.models:
            return self._error(404, f"model '{name}' not found")
        o._enter(name)
        try:
            if self._sleep(o.delay_s):
                return self._drop()
            self._v1_chat(name, body)
        finally:
            o._leave()

    def _v1_chat(self, name: str, body: dict) -> None:
        max_tokens = body.get("max_tokens")
        got = self._reply(name, body, num_predict=max_tokens if isinstance(max_tokens, int) else -1)
        if got is None:
            return
        text, finish_reason = got
        fault = self._fault
        msgs = [m for m in body["messages"] if isinstance(m, dict)]
        prompt_tokens = sum(count_tokens(_message_text(m.get("content"))) for m in msgs)
        completion_tokens = count_tokens(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        cid, created = self.owner._next_completion_id(), int(time.time())
        head = {"id": cid, "created": created, "model": name, "system_fingerprint": "fp_ollama"}

        if not body.get("stream"):  # the OpenAI API does not stream unless told "stream": true
            completion = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": name,
                "system_fingerprint": "fp_ollama",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
                ],
                "usage": usage,
            }
            data = json.dumps(completion).encode()
            if fault == "malformed":
                data = b'{"id": "' + cid.encode() + b'", "object": "chat.completion", "choi'  # cut short: not JSON
            return self._send_whole(data, "application/json", fault)

        def event(delta_content: str, finish: str | None) -> bytes:
            chunk = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": delta_content}, "finish_reason": finish}
                ],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunks = _split_chunks(text, self.owner.stream_chunks)
        for i, content in enumerate(chunks):
            if i and self._sleep(self.owner.chunk_delay_s):
                return self._drop()
            self._chunk(event(content, None))
            if i == 0 and fault in ("stall", "cut", "malformed", "stream_error"):
                break
        if fault == "stall":
            self._sleep(self.owner.hang_s)
            return self._drop()
        if fault == "cut":
            self._chunk(b'data: {"id": "' + cid.encode() + b'", "obj')  # half an event, then the connection dies
            return self._drop()
        if fault == "malformed":
            self._chunk(b"data: this event is not json\n\n")
            self._end_stream()
            return
        if fault == "stream_error":
            err = {
                "error": {
                    "message": "injected fault: runner terminated mid-stream",
                    "type": "api_error",
                    "param": None,
                    "code": None,
                }
            }
            self._chunk(b"data: " + json.dumps(err).encode() + b"\n\n")
            self._end_stream()
            return
        self._sleep(self.owner.chunk_delay_s if chunks else 0)
        self._chunk(event("", finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage_chunk = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            self._chunk(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _embed(self, name: str, body: dict) -> None:
        t0 = time.monotonic()
        raw = body.get("input")
        if raw is None or raw == "":
            inputs: list[str] = []
        elif isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            inputs = raw
        else:
            return self._error(400, "invalid input type")
        if self._fault == "malformed":
            return self._send_bytes(200, b'{"embeddings": [[0.1, 0.2', "application/json; charset=utf-8")
        dim = self.owner.embed_dim
        dims = body.get("dimensions")
        vectors = []
        for text in inputs:
            v = fake_embedding(name, text, dim)
            if isinstance(dims, int) and 0 < dims < dim:
                v = v[:dims]
                n = math.sqrt(sum(x * x for x in v)) or 1.0
                v = [x / n for x in v]
            vectors.append(v)
        self._send_json(
            200,
            {
                "model": name,
                "embeddings": vectors,
                "total_duration": max(1, int((time.monotonic() - t0) * 1e9)),
                "load_duration": 1_000_000,
                "prompt_eval_count": sum(count_tokens(t) for t in inputs),
            },
        )

    def _embeddings(self, name: str, body: dict) -> None:
        prompt = body.get("prompt") or ""
        self._send_json(200, {"embedding": fake_embedding(name, prompt, self.owner.embed_dim) if prompt else []})
