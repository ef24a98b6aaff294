"""The official `ollama` client, unpatched, against tests/ollama_server.py over a real socket.

Also pins down what the client (0.6.x) raises on each failure, which datasets_gen's retry logic relies on:
  404 / 5xx                    -> ollama.ResponseError with .status_code (stream or not)
  error line inside a stream   -> ollama.ResponseError, status_code -1
  connection refused           -> builtin ConnectionError (stream=False); httpx.ConnectError (stream=True, raised
                                  when the generator is first iterated, not when chat() returns it)
  read timeout                 -> httpx.ReadTimeout (stream or not; the client does not wrap it)
  connection dropped           -> httpx.RemoteProtocolError
  body not JSON                -> json.JSONDecodeError

and what the `openai` client (2.x, sync and async) raises against the OpenAI-compatible /v1 endpoints:
  unknown model (404)          -> openai.NotFoundError (body: {"message", "type": "not_found_error", ...})
  5xx                          -> openai.InternalServerError (after max_retries more attempts: 2 by default)
  read timeout                 -> openai.APITimeoutError (also retried max_retries times)
  connection dropped           -> openai.APIConnectionError
  200 whose body is not JSON   -> json.JSONDecodeError, unwrapped
"""

import asyncio
import json
import math
import threading

import httpx
import ollama
import openai
import pytest
from ollama_server import OllamaTestServer, fake_digest

MODEL = "fake-llm:1b"
EMBED_MODEL = "fake-embed"
REPLY = "The quick brown fox jumps over the lazy dog again and again"
USER = [{"role": "user", "content": "tell me about foxes please"}]


def fixed_reply(body: dict) -> str:
    return REPLY


def json_reply(body: dict) -> str:
    """Structured output: a JSON object with the schema's required keys; echoes the seed so options are visible."""
    schema = body.get("format") or {}
    seed = (body.get("options") or {}).get("seed")
    return json.dumps({k: f"value-{k}-{seed}" for k in schema.get("required", [])})


@pytest.fixture
def server():
    with OllamaTestServer({MODEL: fixed_reply, "json-llm": json_reply, EMBED_MODEL: None}, embed_dim=16) as srv:
        yield srv


@pytest.fixture
def client(server):
    with ollama.Client(host=server.host, timeout=5) as c:
        yield c


def test_chat_non_stream(server, client):
    r = client.chat(model=MODEL, messages=USER, options={"temperature": 0.0, "seed": 7, "num_ctx": 2048})
    assert isinstance(r, ollama.ChatResponse)
    assert r.message.role == "assistant" and r.message.content == REPLY
    assert r.model == MODEL and r.done is True and r.done_reason == "stop"
    assert r.eval_count == len(REPLY.split()) and r.prompt_eval_count == 5
    assert r.eval_duration > 0 and r.total_duration > 0 and r.prompt_eval_duration > 0
    (req,) = server.requests_to("/api/chat")
    assert req["method"] == "POST"
    assert req["body"]["stream"] is False
    assert req["body"]["messages"] == USER
    assert req["body"]["options"] == {"temperature": 0.0, "seed": 7, "num_ctx": 2048}


def test_chat_stream(server, client):
    parts = list(client.chat(model=MODEL, messages=USER, stream=True))
    assert len(parts) >= 3
    assert all(p.done is False and p.eval_count is None for p in parts[:-1])
    last = parts[-1]
    assert last.done is True and last.done_reason == "stop" and last.message.content == ""
    assert last.eval_count == len(REPLY.split()) and last.prompt_eval_count == 5 and last.eval_duration > 0
    assert "".join(p.message.content for p in parts) == REPLY
    assert server.requests_to("/api/chat")[0]["body"]["stream"] is True


def test_stream_is_the_default_when_absent_and_content_types(server):
    """Ollama streams NDJSON unless "stream": false; the client always sends the flag, so check the raw API."""
    with httpx.Client(base_url=server.host) as h:
        r = h.post("/api/chat", json={"model": MODEL, "messages": USER})
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert [x["done"] for x in lines] == [False] * (len(lines) - 1) + [True]
        r = h.post("/api/chat", json={"model": MODEL, "messages": USER, "stream": False})
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["message"]["content"] == REPLY
        assert h.get("/").text == "Ollama is running"


def _answered_all_at_once(n: int):
    """A responder that answers only once `n` requests are being served together: requests sent one after another
    fail (the barrier times out, the server answers 500), whatever the machine's speed."""
    barrier = threading.Barrier(n, timeout=30)

    def numbered(body: dict) -> str:
        barrier.wait()
        return "answer to " + body["messages"][-1]["content"]

    return numbered


def test_async_concurrent_requests_overlap():
    async def main(host: str) -> list[str]:
        async with ollama.AsyncClient(host=host, timeout=60) as ac:
            rs = await asyncio.gather(
                *(ac.chat(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}]) for i in range(4))
            )
            return [r.message.content for r in rs]

    with OllamaTestServer({MODEL: _answered_all_at_once(4)}) as srv:
        assert asyncio.run(main(srv.host)) == [f"answer to q{i}" for i in range(4)]
        assert srv.peak_concurrency == 4 and srv.errors == []


def test_async_stream(server):
    async def main() -> list[str]:
        async with ollama.AsyncClient(host=server.host, timeout=5) as ac:
            return [p.message.content async for p in await ac.chat(model=MODEL, messages=USER, stream=True)]

    assert "".join(asyncio.run(main())) == REPLY


def test_structured_output_schema_and_options_forwarded(server, client):
    schema = {
        "type": "object",
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "answer"],
    }
    r = client.chat(model="json-llm", messages=USER, format=schema, options={"seed": 42, "temperature": 0.3})
    assert json.loads(r.message.content) == {"question": "value-question-42", "answer": "value-answer-42"}
    body = server.requests_to("/api/chat")[-1]["body"]
    assert body["format"] == schema
    assert body["options"] == {"seed": 42, "temperature": 0.3}


def test_num_predict_truncates_with_done_reason_length(client):
    r = client.chat(model=MODEL, messages=USER, options={"num_predict": 3})
    assert r.message.content == "The quick brown" and r.done_reason == "length" and r.eval_count == 3


def test_generate(server, client):
    r = client.generate(model=MODEL, prompt="one two three", system="be brief")
    assert r.response == REPLY and r.done and r.prompt_eval_count == 5 and r.context
    parts = list(client.generate(model=MODEL, prompt="one two three", stream=True))
    assert "".join(p.response for p in parts) == REPLY and parts[-1].done and parts[-1].eval_count > 0
    assert server.requests_to("/api/generate")[0]["body"]["prompt"] == "one two three"


def test_embed(client):
    r = client.embed(model=EMBED_MODEL, input=["alpha", "beta", "alpha"])
    assert len(r.embeddings) == 3 and all(len(v) == 16 for v in r.embeddings)
    assert r.embeddings[0] == r.embeddings[2] != r.embeddings[1]
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0) for v in r.embeddings)
    single = client.embed(model=EMBED_MODEL, input="alpha")
    assert single.embeddings == [r.embeddings[0]]


def test_list_show_ps_and_digest(server, client):
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {MODEL, "json-llm", EMBED_MODEL}
    assert listed[MODEL].digest == fake_digest(MODEL) == server.digest(MODEL)
    assert len(listed[MODEL].digest) == 64 and listed[MODEL].details.family
    assert listed[MODEL].digest != listed["json-llm"].digest
    shown = client.show(MODEL)
    assert shown.details.parameter_size and shown.modelinfo["general.architecture"] and shown.modified_at
    assert "digest" not in shown.model_dump()  # the real /api/show has no digest: /api/tags (and /api/ps) do
    client.chat(model=MODEL, messages=USER)
    (running,) = client.ps().models
    assert running.model == MODEL and running.digest == fake_digest(MODEL)


def test_unknown_model_is_404_response_error(client):
    calls = {
        "chat": lambda: client.chat(model="nope:1b", messages=USER),
        "chat-stream": lambda: list(client.chat(model="nope:1b", messages=USER, stream=True)),
        "generate": lambda: client.generate(model="nope:1b", prompt="x"),
        "show": lambda: client.show("nope:1b"),
        "embed": lambda: client.embed(model="nope:1b", input="x"),
    }
    for name, call in calls.items():
        with pytest.raises(ollama.ResponseError) as ei:
            call()
        assert ei.value.status_code == 404, name
        assert "nope:1b" in ei.value.error and "not found" in ei.value.error, name
    assert ei.value.error == 'model "nope:1b" not found, try pulling it first'  # embed's wording


def test_timeout_is_httpx_read_timeout(server):
    with ollama.Client(host=server.host, timeout=0.3) as c:
        for stream in (False, True):
            # The server hangs for hang_s, then drops the connection (a RemoteProtocolError): a ReadTimeout means
            # the client's own timeout ended the wait.
            server.inject("hang", path="/api/chat")
            with pytest.raises(httpx.ReadTimeout):
                r = c.chat(model=MODEL, messages=USER, stream=stream)
                if stream:
                    list(r)
        server.inject("stall", path="/api/chat")  # headers and one chunk, then silence
        parts = []
        with pytest.raises(httpx.ReadTimeout):
            for p in c.chat(model=MODEL, messages=USER, stream=True):
                parts.append(p)  # noqa: PERF402 -- keep the parts received before the timeout
        assert len(parts) == 1
        assert c.chat(model=MODEL, messages=USER).message.content == REPLY  # faults were used up


def test_async_timeout_is_httpx_read_timeout(server):
    async def main():
        async with ollama.AsyncClient(host=server.host, timeout=0.3) as ac:
            server.inject("hang")
            await ac.chat(model=MODEL, messages=USER)

    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(main())


def test_other_faults(server, client):
    server.inject("http500", times=2, path="/api/chat")
    client.list()  # other paths are not affected
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as ei:
            r = client.chat(model=MODEL, messages=USER, stream=stream)
            if stream:
                list(r)
        assert ei.value.status_code == 500
    server.inject("http503")
    with pytest.raises(ollama.ResponseError) as ei:
        client.generate(model=MODEL, prompt="x")
    assert ei.value.status_code == 503

    for stream in (False, True):
        server.inject("drop")
        with pytest.raises(httpx.RemoteProtocolError):
            r = client.chat(model=MODEL, messages=USER, stream=stream)
            if stream:
                list(r)
        server.inject("cut")
        with pytest.raises(httpx.RemoteProtocolError):
            r = client.chat(model=MODEL, messages=USER, stream=stream)
            if stream:
                list(r)
        server.inject("malformed")
        with pytest.raises(json.JSONDecodeError):
            r = client.chat(model=MODEL, messages=USER, stream=stream)
            if stream:
                list(r)

    server.inject("stream_error")
    with pytest.raises(ollama.ResponseError) as ei:
        list(client.chat(model=MODEL, messages=USER, stream=True))
    assert ei.value.status_code == -1 and "mid-stream" in ei.value.error

    server.inject("nonjson_reply")
    r = client.chat(model="json-llm", messages=USER, format={"type": "object"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.message.content)

    server.inject("malformed", path="/api/embed")
    with pytest.raises(json.JSONDecodeError):
        client.embed(model=EMBED_MODEL, input="x")

    assert client.chat(model=MODEL, messages=USER).message.content == REPLY
    with pytest.raises(ValueError):
        server.inject("explode")


def test_responder_exception_is_500():
    def broken(body: dict) -> str:
        raise RuntimeError("boom")

    with OllamaTestServer({MODEL: broken}) as srv, ollama.Client(host=srv.host, timeout=5) as c:
        with pytest.raises(ollama.ResponseError) as ei:
            c.chat(model=MODEL, messages=USER)
        assert ei.value.status_code == 500 and "boom" in ei.value.error
        assert srv.errors == ["RuntimeError: boom"]


def test_connection_refused_after_stop():
    srv = OllamaTestServer({MODEL: fixed_reply}).start()
    host = srv.host
    c = ollama.Client(host=host, timeout=5)
    assert c.chat(model=MODEL, messages=USER).message.content == REPLY  # leaves a pooled keep-alive connection
    srv.stop()

    # stream=False: the client turns httpx.ConnectError into the builtin ConnectionError
    with pytest.raises(ConnectionError, match="Failed to connect to Ollama"):
        c.chat(model=MODEL, messages=USER)
    with pytest.raises(ConnectionError):
        c.list()
    # stream=True: chat() returns a generator without connecting; the first next() raises httpx.ConnectError,
    # unwrapped (httpx.ConnectError is not a builtin ConnectionError)
    gen = c.chat(model=MODEL, messages=USER, stream=True)
    with pytest.raises(httpx.ConnectError):
        next(gen)
    assert not issubclass(httpx.ConnectError, ConnectionError)
    c.close()

    async def main(stream: bool):
        async with ollama.AsyncClient(host=host, timeout=5) as ac:
            r = await ac.chat(model=MODEL, messages=USER, stream=stream)
            if stream:
                return [p async for p in r]
            return r

    with pytest.raises(ConnectionError):
        asyncio.run(main(False))
    with pytest.raises(httpx.ConnectError):
        asyncio.run(main(True))


# ---- the OpenAI-compatible API (/v1), with the official `openai` client ------------------------------------------
def _openai(server, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.host + "/v1", api_key="ollama", **{"max_retries": 0, "timeout": 5, **kw})


def test_openai_chat_completion(server):
    with _openai(server) as c:
        r = c.chat.completions.create(model=MODEL, messages=USER, temperature=0.0, seed=3)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL
    assert r.system_fingerprint == "fp_ollama" and isinstance(r.created, int)
    (choice,) = r.choices
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.content == REPLY
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, len(REPLY.split()))
    assert r.usage.total_tokens == 5 + len(REPLY.split())
    (req,) = server.requests_to("/v1/chat/completions")
    assert req["body"]["messages"] == USER and req["body"]["temperature"] == 0.0 and req["body"]["seed"] == 3
    assert server.peak_concurrency == 1


def test_openai_responder_sees_the_body_and_response_format(server):
    """The responder gets the OpenAI request body as sent (messages, response_format, ...)."""

    def schema_keys(body: dict) -> str:
        assert body["response_format"] == {"type": "json_object"}
        return json.dumps({"n_messages": len(body["messages"]), "max_tokens": body.get("max_tokens")})

    with OllamaTestServer({"json-llm": schema_keys}) as srv, _openai(srv) as c:
        r = c.chat.completions.create(
            model="json-llm", messages=USER, response_format={"type": "json_object"}, max_tokens=50
        )
        assert json.loads(r.choices[0].message.content) == {"n_messages": 1, "max_tokens": 50}


def test_openai_max_tokens_truncates_with_finish_reason_length(server):
    with _openai(server) as c:
        r = c.chat.completions.create(model=MODEL, messages=USER, max_tokens=3)
    assert r.choices[0].message.content == "The quick brown" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_openai_stream(server):
    with _openai(server) as c:
        chunks = list(
            c.chat.completions.create(model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True})
        )
    *content, last, usage = chunks
    assert all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
    assert len(content) >= 2 and all(ch.choices[0].finish_reason is None for ch in content)
    assert "".join(ch.choices[0].delta.content for ch in content) == REPLY
    assert last.choices[0].finish_reason == "stop" and last.choices[0].delta.content == ""
    assert usage.choices == [] and usage.usage.completion_tokens == len(REPLY.split())
    r = httpx.post(server.host + "/v1/chat/completions", json={"model": MODEL, "messages": USER, "stream": True})
    assert r.headers["content-type"] == "text/event-stream" and r.text.endswith("data: [DONE]\n\n")


def test_openai_async_concurrent():
    async def main(host: str) -> list[str]:
        async with openai.AsyncOpenAI(base_url=host + "/v1", api_key="ollama", max_retries=0, timeout=60) as ac:
            rs = await asyncio.gather(
                *(
                    ac.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}])
                    for i in range(4)
                )
            )
            return [r.choices[0].message.content for r in rs]

    with OllamaTestServer({MODEL: _answered_all_at_once(4)}) as srv:
        assert asyncio.run(main(srv.host)) == [f"answer to q{i}" for i in range(4)]
        assert srv.peak_concurrency == 4 and srv.errors == []


def test_openai_models_list_and_retrieve(server):
    with _openai(server) as c:
        models = {m.id: m for m in c.models.list()}
        assert set(models) == {MODEL, "json-llm", EMBED_MODEL}
        m = models[MODEL]
        assert m.object == "model" and m.owned_by == "library" and m.created == 1735689600  # modified_at, 2025-01-01
        assert c.models.retrieve(MODEL).id == MODEL
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("nope:1b")
    raw = httpx.get(server.host + "/v1/models").json()
    assert raw["object"] == "list" and {"id", "object", "created", "owned_by"} == set(raw["data"][0])


def test_openai_unknown_model_is_not_found_error(server):
    with _openai(server) as c:
        with pytest.raises(openai.NotFoundError) as ei:
            c.chat.completions.create(model="nope:1b", messages=USER)
        assert ei.value.status_code == 404
        assert ei.value.body == {
            "message": "model 'nope:1b' not found",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
        with pytest.raises(openai.BadRequestError) as ei:
            c.chat.completions.create(model=MODEL, messages=[])
        assert ei.value.type == "invalid_request_error"


def test_openai_http500_is_internal_server_error(server):
    server.inject("http500", path="/v1/chat/completions")
    with _openai(server) as c:
        with pytest.raises(openai.InternalServerError) as ei:
            c.chat.completions.create(model=MODEL, messages=USER)
        assert ei.value.status_code == 500 and ei.value.type == "api_error"
        assert ei.value.body == {
            "message": "injected fault: HTTP 500",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    assert len(server.requests_to("/v1/chat/completions")) == 1  # max_retries=0: one attempt
    server.inject("http503", path="/v1/chat/completions")
    with _openai(server, max_retries=1) as c:  # the client retries a 5xx itself (after a ~0.5 s backoff)
        assert c.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content == REPLY
    assert len(server.requests_to("/v1/chat/completions")) == 3


def test_openai_timeout_is_api_timeout_error(server):
    for stream in (False, True):
        # After hang_s the server drops the connection: the client would raise APIConnectionError, of which
        # APITimeoutError is a subclass that only the client's own timeout raises.
        server.inject("hang", path="/v1/chat/completions")
        with _openai(server, timeout=0.3) as c, pytest.raises(openai.APITimeoutError):
            r = c.chat.completions.create(model=MODEL, messages=USER, stream=stream)
            if stream:
                list(r)

    async def main():
        async with openai.AsyncOpenAI(base_url=server.host + "/v1", api_key="x", max_retries=0, timeout=0.3) as ac:
            server.inject("hang", path="/v1/chat/completions")
            await ac.chat.completions.create(model=MODEL, messages=USER)

    with pytest.raises(openai.APITimeoutError):
        asyncio.run(main())


def test_openai_other_faults(server):
    with _openai(server, timeout=0.3) as c:
        call = lambda **kw: c.chat.completions.create(model=MODEL, messages=USER, **kw)
        server.inject("drop", path="/v1/chat/completions")
        with pytest.raises(openai.APIConnectionError):
            call()
        server.inject("malformed", path="/v1/chat/completions")
        with pytest.raises(json.JSONDecodeError):  # the client does not wrap it
            call()
        server.inject("malformed", path="/v1/chat/completions")
        with pytest.raises(json.JSONDecodeError):
            list(call(stream=True))
        server.inject("stream_error", path="/v1/chat/completions")
        with pytest.raises(openai.APIError, match="mid-stream"):
            list(call(stream=True))
        server.inject("stall", path="/v1/chat/completions")
        with pytest.raises(openai.APITimeoutError):
            call()
        server.inject("nonjson_reply", path="/v1/chat/completions")
        text = call(response_format={"type": "json_object"}).choices[0].message.content
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        server.inject("http500", path="/api/chat")  # another path's fault leaves /v1 alone
        assert call().choices[0].message.content == REPLY


def test_openai_responder_exception_is_500_in_openai_shape():
    def broken(body: dict) -> str:
        raise RuntimeError("boom")

    with OllamaTestServer({MODEL: broken}) as srv, _openai(srv) as c:
        with pytest.raises(openai.InternalServerError) as ei:
            c.chat.completions.create(model=MODEL, messages=USER)
        assert "boom" in ei.value.message and ei.value.type == "api_error"
        assert srv.errors == ["RuntimeError: boom"]
