"""RAGAS (0.4, `ragas.metrics.collections`) judged by the configured LLM, with honest failure accounting.

Which metrics apply (`applicable_metrics`):
- faithfulness (are the answer's claims supported by the contexts?) and answer_relevancy (does the answer
  address the question?) for every method. The contexts are what the model saw: the retrieved chunks for a
  RAG method; for a method without retrieval, the dataset's reference context (the passage the Q&A pair was
  written from), so faithfulness then reads "is the answer supported by the source passage?". Records
  without either have no contexts, and faithfulness is not computed for them (counted, not guessed).
- context_precision and context_recall judge the retrieval itself, so only methods that retrieve get them.

Accounting: every (sample, metric) is either scored (a number in 0..1) or failed with a reason (timeout,
http NNN, unparseable judge output, empty answer, no score (NaN) when the judge extracted no statements,
no contexts). Corpus values are means over scored samples only, and `accounting[metric]` says how many
were scored and failed, why, which ids failed, and a hash of the scored id set, so the leaderboard can
refuse to rank two runs scored on different samples. A metric with no scored sample has no value at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.core.embedding import Embedder
from harness.metrics.judge import INSTALL_HINT, Judge, JudgeUnavailable, failure_reason

RETRIEVAL_METRICS = ("context_precision", "context_recall")


@dataclass
class JudgedSample:
    id: str
    question: str
    answer: str
    reference: str
    # What the model saw (retrieved chunks), else the reference context; empty when there is neither.
    contexts: list[str] = field(default_factory=list)


@dataclass
class JudgedScores:
    values: dict[str, float]
    per_sample: dict[str, list[float | None]]  # None where the sample failed
    errors: dict[str, list[str | None]]  # the failure reason where it failed
    accounting: dict[str, dict]
    judge_s: float = 0.0


def applicable_metrics(wanted: Sequence[str], retrieves: bool) -> list[str]:
    return [m for m in wanted if retrieves or m not in RETRIEVAL_METRICS]


def scored_set_hash(ids: Sequence[str]) -> str:
    """Short fingerprint of a set of sample ids: equal hashes mean the same samples were scored."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def account(samples: Sequence[JudgedSample], scores: list[float | None],
            errors: list[str | None]) -> dict:
    failed = [(s.id, e) for s, e in zip(samples, errors, strict=True) if e is not None]
    scored_ids = [s.id for s, v in zip(samples, scores, strict=True) if v is not None]
    return {
        "scored": len(scored_ids),
        "failed": len(failed),
        "reasons": dict(Counter(reason for _, reason in failed)),
        "failed_ids": [sample_id for sample_id, _ in failed],
        "scored_set": scored_set_hash(scored_ids),
    }


def minilm_embeddings(embedding_model: str = ""):
    """The harness's sentence embedder (bundled MiniLM unless `embedding_model` names a folder) behind
    RAGAS's embedding interface, for answer relevancy's question-to-question cosine."""
    from ragas.embeddings import BaseRagasEmbedding  # deferred, optional extra [judge]: only RAGAS scoring imports it


    class MiniLMEmbedding(BaseRagasEmbedding):
        def __init__(self) -> None:
            super().__init__()
            self.embedder = Embedder(embedding_model)

        def embed_text(self, text: str, **kwargs) -> list[float]:
            return self.embedder.encode([text])[0].tolist()

        async def aembed_text(self, text: str, **kwargs) -> list[float]:
            return self.embed_text(text)

        def embed_texts(self, texts: list[str], **kwargs) -> list[list[float]]:
            return [vector.tolist() for vector in self.embedder.encode(list(texts))]

        async def aembed_texts(self, texts: list[str], **kwargs) -> list[list[float]]:
            return self.embed_texts(texts)

    return MiniLMEmbedding()


def _build_metrics(names: Sequence[str], llm, embeddings, strictness: int) -> dict:
    from ragas.metrics.collections import (  # deferred, optional extra [judge]: only RAGAS scoring imports it
        AnswerRelevancy,
        ContextPrecision,
        ContextRecall,
        Faithfulness,
    )

    factories = {
        "faithfulness": lambda: Faithfulness(llm=llm),
        "answer_relevancy": lambda: AnswerRelevancy(llm=llm, embeddings=embeddings, strictness=strictness),
        "context_precision": lambda: ContextPrecision(llm=llm),
        "context_recall": lambda: ContextRecall(llm=llm),
    }
    return {name: factories[name]() for name in names}


def _arguments(name: str, sample: JudgedSample) -> dict:
    if name == "faithfulness":
        return {"user_input": sample.question, "response": sample.answer, "retrieved_contexts": sample.contexts}
    if name == "answer_relevancy":
        return {"user_input": sample.question, "response": sample.answer}
    return {"user_input": sample.question, "reference": sample.reference, "retrieved_contexts": sample.contexts}


def _precheck(name: str, sample: JudgedSample) -> str | None:
    """A reason not to call the judge at all, for inputs RAGAS cannot score."""
    if name in ("faithfulness", "answer_relevancy") and not sample.answer.strip():
        return "empty answer"
    if name != "answer_relevancy" and not sample.contexts:
        return "no contexts"
    return None


async def _score_async(judge: Judge, samples: Sequence[JudgedSample], names: Sequence[str],
                       embedding_model: str) -> tuple[dict, dict]:
    from ragas.llms import llm_factory  # deferred, optional extra [judge]: only RAGAS scoring imports it

    client = judge.client()
    llm = llm_factory(judge.cfg.model, provider="openai", client=client, temperature=judge.cfg.temperature,
                      max_tokens=judge.cfg.max_tokens)
    embeddings = minilm_embeddings(embedding_model) if "answer_relevancy" in names else None
    metrics = _build_metrics(names, llm, embeddings, judge.cfg.answer_relevancy_strictness)
    gate = asyncio.Semaphore(judge.cfg.concurrency)
    scores = {name: [None] * len(samples) for name in names}
    errors: dict[str, list[str | None]] = {name: [None] * len(samples) for name in names}

    async def one(name: str, i: int) -> None:
        if (reason := _precheck(name, samples[i])) is not None:
            errors[name][i] = reason
            return
        async with gate:
            try:
                result = await metrics[name].ascore(**_arguments(name, samples[i]))
            except Exception as exc:  # counted per sample; one bad reply must not lose the others
                errors[name][i] = failure_reason(exc)
                return
        value = float(result.value) if result.value is not None else math.nan
        if math.isnan(value):
            errors[name][i] = "no score (NaN)"
        else:
            scores[name][i] = min(1.0, max(0.0, value))

    try:
        await asyncio.gather(*(one(name, i) for name in names for i in range(len(samples))))
    finally:
        await client.close()
    return scores, errors


def score_ragas(judge: Judge, samples: Sequence[JudgedSample], names: Sequence[str],
                embedding_model: str = "") -> JudgedScores:
    """Score every sample with every named RAGAS metric; see the module docstring for the accounting."""
    try:
        import ragas  # noqa: F401
    except ImportError as exc:
        raise JudgeUnavailable(INSTALL_HINT) from exc
    start = time.perf_counter()
    scores, errors = asyncio.run(_score_async(judge, samples, names, embedding_model))
    values, accounting = {}, {}
    for name in names:
        kept = [v for v in scores[name] if v is not None]
        if kept:
            values[name] = sum(kept) / len(kept)
        accounting[name] = account(samples, scores[name], errors[name])
    return JudgedScores(values=values, per_sample=scores, errors=errors, accounting=accounting,
                        judge_s=time.perf_counter() - start)
