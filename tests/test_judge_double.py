"""RAGAS 0.4.3 collections metrics, end to end over HTTP, judged by tests/judge_double.py (a TEST DOUBLE).

ragas -> llm_factory -> instructor (Mode.JSON) -> openai.AsyncOpenAI -> tests/ollama_server.py /v1/chat/completions
-> JudgeDouble. The double scores by word overlap (see its docstring), so every expected value here is exact.

Also pins what ragas/instructor/openai do, which the harness's failure accounting relies on:
  - the request: {model, messages: [system (instructor's schema), user (ragas' prompt)], response_format
    {"type": "json_object"}, temperature, top_p 0.1, max_tokens 1024}
  - HTTP calls per sample: faithfulness 2, answer_relevancy `strictness` (3), context_precision one per retrieved
    context, context_recall 1
  - a reply that is not JSON: instructor re-asks 3 times (4 calls), then raises instructor.core.InstructorRetryException
    (__cause__ a pydantic ValidationError)
  - a client timeout / an HTTP 500: InstructorRetryException too, __cause__ openai.APITimeoutError /
    openai.InternalServerError; instructor does not re-ask on those (the openai client's own max_retries applies)
"""

import asyncio
import json
import math

import openai
import pydantic
import pytest
from instructor.core import InstructorRetryException
from judge_double import (
    PROSE_REPLY,
    JudgeDouble,
    content_words,
    overlap_ratio,
    split_sentences,
    supported,
)
from ollama_server import OllamaTestServer
from ragas.embeddings import BaseRagasEmbedding
from ragas.llms import llm_factory
from ragas.metrics.collections import AnswerRelevancy, ContextPrecision, ContextRecall, Faithfulness
from ragas.metrics.collections.faithfulness.util import StatementGeneratorInput, StatementGeneratorPrompt

JUDGE = "judge-double"
CHAT = "/v1/chat/completions"
CONTEXT = "The Eiffel Tower is in Paris. It was completed in 1889 for the World Fair."
SUPPORTED = "The Eiffel Tower is in Paris."
UNSUPPORTED = "The tower is painted bright green."


class BagOfWords(BaseRagasEmbedding):
    """A tiny deterministic embedder: one 0/1 dimension per word of a fixed vocabulary (judge_double's words)."""

    VOCAB = sorted(content_words("where eiffel tower paris sure france capital"))

    def embed_text(self, text: str, **kwargs) -> list[float]:
        words = content_words(text)
        return [1.0 if v in words else 0.0 for v in self.VOCAB]

    async def aembed_text(self, text: str, **kwargs) -> list[float]:
        return self.embed_text(text)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture
def judge():
    return JudgeDouble(slow_s=5.0)


@pytest.fixture
def server(judge):
    with OllamaTestServer({JUDGE: judge}) as srv:
        yield srv
        judge.release()


def score(server, make_metric, *, timeout: float = 5.0, max_retries: int = 0, **sample) -> float:
    """One metric.ascore over HTTP with a fresh AsyncOpenAI client (bound to this event loop)."""

    async def main() -> float:
        client = openai.AsyncOpenAI(
            base_url=server.host + "/v1", api_key="ollama", timeout=timeout, max_retries=max_retries
        )
        try:
            llm = llm_factory(JUDGE, client=client, temperature=0.0)
            return (await make_metric(llm).ascore(**sample)).value
        finally:
            await client.close()

    return asyncio.run(main())


# ---- the rule ----------------------------------------------------------------------------------------------------
def test_rule_helpers():
    assert content_words("The Eiffel Tower, in Paris (1889)!") == {"eiffel", "tower", "paris", "1889"}
    assert supported(SUPPORTED, CONTEXT) and not supported(UNSUPPORTED, CONTEXT)
    assert supported("Eiffel Tower, Paris, Rome", CONTEXT)  # 3 of 4 content words = 75% >= 60%
    assert not supported("Eiffel Tower in Rome and Berlin", CONTEXT)  # 2 of 4 = 50%
    assert not supported("It is.", CONTEXT)  # no content words: nothing to support
    assert split_sentences(f"{SUPPORTED} {UNSUPPORTED}  Why? ") == [SUPPORTED, UNSUPPORTED, "Why?"]
    assert overlap_ratio("The capital of France is Paris.", "Paris is the capital of France.") == 1.0
    assert overlap_ratio("France is in Europe.", "Paris is the capital of France.") == pytest.approx(1 / 3)


# ---- the four ragas metrics --------------------------------------------------------------------------------------
def test_faithfulness(server, judge):
    half = score(
        server,
        lambda llm: Faithfulness(llm=llm),
        user_input="Where is the Eiffel Tower?",
        response=f"{SUPPORTED} {UNSUPPORTED}",
        retrieved_contexts=[CONTEXT],
    )
    assert half == 0.5
    assert [task for task, _ in judge.calls] == ["statements", "nli"]  # 2 calls per sample
    full = score(
        server,
        lambda llm: Faithfulness(llm=llm),
        user_input="When was it completed?",
        response="The Eiffel Tower was completed in 1889.",
        retrieved_contexts=["Unrelated text about bananas.", CONTEXT],  # contexts are joined
    )
    assert full == 1.0
    assert judge.calls[-1][1]["context"] == "Unrelated text about bananas.\n" + CONTEXT


def test_request_shape_instructor_sends(server):
    score(
        server,
        lambda llm: Faithfulness(llm=llm),
        user_input="Where is the Eiffel Tower?",
        response=SUPPORTED,
        retrieved_contexts=[CONTEXT],
    )
    body = server.requests_to(CHAT)[0]["body"]
    assert set(body) == {"model", "messages", "response_format", "temperature", "top_p", "max_tokens"}
    assert body["response_format"] == {"type": "json_object"}
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"]) == (JUDGE, 0.0, 0.1, 1024)
    system, user = body["messages"]
    assert system["role"] == "system" and "json_schema" in system["content"]
    assert '"title": "StatementGeneratorOutput"' in system["content"]
    assert user["role"] == "user" and user["content"].endswith("\nOutput: ")
    assert "Now perform the same with the following input\ninput: {" in user["content"]


def test_answer_relevancy(server, judge):
    emb = BagOfWords()
    question, response = "Where is the Eiffel Tower?", SUPPORTED
    value = score(
        server,
        lambda llm: AnswerRelevancy(llm=llm, embeddings=emb),
        user_input=question,
        response=response,
    )
    # the double's "generated question" is the response itself: cos({eiffel, tower}, {eiffel, tower, paris})
    assert value == pytest.approx(2 / math.sqrt(6))
    assert value == pytest.approx(cosine(emb.embed_text(question), emb.embed_text(response)))
    assert [task for task, _ in judge.calls] == ["answer_relevance"] * 3  # strictness=3 calls per sample
    noncommittal = score(
        server,
        lambda llm: AnswerRelevancy(llm=llm, embeddings=emb, strictness=1),
        user_input=question,
        response="I'm not sure where the Eiffel Tower is.",
    )
    assert noncommittal == 0.0  # similar words, but noncommittal zeroes it


def test_context_precision(server, judge):
    irrelevant, relevant = "Bananas are rich in potassium.", "The Eiffel Tower stands in Paris, France."
    sample = {"user_input": "Where is the Eiffel Tower?", "reference": SUPPORTED}
    late = score(server, lambda llm: ContextPrecision(llm=llm), retrieved_contexts=[irrelevant, relevant], **sample)
    assert late == pytest.approx(0.5)  # verdicts [0, 1]: precision@2 = 1/2 (ragas adds 1e-10 to the denominator)
    early = score(server, lambda llm: ContextPrecision(llm=llm), retrieved_contexts=[relevant, irrelevant], **sample)
    assert early == pytest.approx(1.0)
    none = score(server, lambda llm: ContextPrecision(llm=llm), retrieved_contexts=[irrelevant], **sample)
    assert none == 0.0  # all-zero verdicts give 0.0, not NaN
    assert [task for task, _ in judge.calls] == ["context_precision"] * 5  # one call per retrieved context


def test_context_recall(server, judge):
    reference = "The Eiffel Tower is in Paris. The tower was completed in 1889. The tower is made of chocolate."
    value = score(
        server,
        lambda llm: ContextRecall(llm=llm),
        user_input="Tell me about the Eiffel Tower.",
        reference=reference,
        retrieved_contexts=[CONTEXT],
    )
    assert value == pytest.approx(2 / 3)
    assert [supported(s, CONTEXT) for s in split_sentences(reference)] == [True, True, False]
    assert [task for task, _ in judge.calls] == ["context_recall"]


# ---- failures ----------------------------------------------------------------------------------------------------
def test_judge_breaks_raises_instructor_retry_exception(server, judge):
    with pytest.raises(InstructorRetryException) as ei:
        score(
            server,
            lambda llm: Faithfulness(llm=llm),
            user_input="Where is the Eiffel Tower?",
            response="JUDGE_BREAKS The Eiffel Tower is in Paris.",
            retrieved_contexts=[CONTEXT],
        )
    assert isinstance(ei.value.__cause__, pydantic.ValidationError)
    assert ei.value.n_attempts == 4 and len(server.requests_to(CHAT)) == 4  # instructor re-asks 3 times
    last = server.requests_to(CHAT)[-1]["body"]["messages"]
    assert [m["role"] for m in last] == ["system", "user"] + ["assistant", "user"] * 3
    assert last[2]["content"] == PROSE_REPLY and last[3]["content"].startswith("Correct your JSON ONLY RESPONSE")
    assert [task for task, _ in judge.calls] == ["statements"] * 4  # each re-ask still reads the original prompt


def test_judge_slow_times_out(server):
    with pytest.raises(InstructorRetryException) as ei:
        score(
            server,
            lambda llm: ContextRecall(llm=llm),
            timeout=0.3,
            user_input="Where is the Eiffel Tower?",
            reference="JUDGE_SLOW The Eiffel Tower is in Paris.",
            retrieved_contexts=[CONTEXT],
        )
    assert isinstance(ei.value.__cause__, openai.APITimeoutError)
    assert len(server.requests_to(CHAT)) == 1  # max_retries=0, and instructor does not retry a timeout


def test_http_500_raises_instructor_retry_exception(server):
    server.inject("http500", path=CHAT)
    with pytest.raises(InstructorRetryException) as ei:
        score(
            server,
            lambda llm: ContextRecall(llm=llm),
            user_input="Where is the Eiffel Tower?",
            reference=SUPPORTED,
            retrieved_contexts=[CONTEXT],
        )
    assert isinstance(ei.value.__cause__, openai.InternalServerError)


# ---- the pairwise prompt and recognition details -----------------------------------------------------------------
def pairwise_prompt(question: str, reference: str, a: str, b: str) -> str:
    return (
        'Which answer is better? Reply as JSON {"winner": "A"|"B"|"tie", "reason": ...}.\n\n'
        f"[Question]\n{question}\n\n[Reference answer]\n{reference}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}"
    )


def test_pairwise(server, judge):
    q, ref = "What is the capital of France?", "Paris is the capital of France."
    good, weak = "The capital of France is Paris.", "France is in Europe."
    with openai.OpenAI(base_url=server.host + "/v1", api_key="ollama", max_retries=0, timeout=5) as c:

        def ask(a: str, b: str) -> dict:
            r = c.chat.completions.create(
                model=JUDGE,
                messages=[{"role": "user", "content": pairwise_prompt(q, ref, a, b)}],
                response_format={"type": "json_object"},
            )
            return json.loads(r.choices[0].message.content)

        assert ask(good, weak) == {"winner": "A", "reason": "reference overlap A=1.00 B=0.33"}
        assert ask(weak, good)["winner"] == "B"
        assert ask(good, "Paris, capital of France!")["winner"] == "tie"
        r = c.chat.completions.create(
            model=JUDGE, messages=[{"role": "user", "content": pairwise_prompt(q, ref, good, "JUDGE_BREAKS")}]
        )
        assert r.choices[0].message.content == PROSE_REPLY
    assert judge.calls[0] == ("pairwise", {"question": q, "reference": ref, "a": good, "b": weak})


def test_recognises_ragas_prompt_without_instructor_system_message(judge):
    """The schema embedded in ragas' own prompt is enough (e.g. a client that sends the prompt as is)."""
    prompt = StatementGeneratorPrompt().to_string(StatementGeneratorInput(question="Where?", answer="A b c. D e f."))
    reply = judge({"messages": [{"role": "user", "content": prompt}]})
    assert json.loads(reply) == {"statements": ["A b c.", "D e f."]}


def test_unrecognised_prompt_is_a_server_error(server):
    client = openai.OpenAI(base_url=server.host + "/v1", api_key="ollama", max_retries=0, timeout=5)
    with client, pytest.raises(openai.InternalServerError, match="judge double"):
        client.chat.completions.create(model=JUDGE, messages=[{"role": "user", "content": "hello"}])
    assert server.errors and "no ragas prompt" in server.errors[0]
