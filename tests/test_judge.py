"""RAGAS through the harness's judge, over HTTP against the Ollama test server's /v1 endpoint.

The judge is tests/judge_double.py, a deterministic word-overlap TEST DOUBLE (no capable judge LLM runs on
this machine): every expected score below follows from its documented rule, not from a judge's opinion.
"""

import json

import numpy as np
import pytest
from judge_double import BREAK_MARKER, SLOW_MARKER, JudgeDouble
from ollama_server import OllamaTestServer

from harness.core.config import JudgeBackend, JudgeConfig
from harness.metrics.judge import Judge, JudgeUnavailable
from harness.metrics.ragas import JudgedSample, applicable_metrics, score_ragas, scored_set_hash

JUDGE = "judge-double"
CONTEXT_VACATION = "Vacation policy: employees get 25 paid vacation days per year, accrued monthly."
CONTEXT_PARKING = "Parking: the garage opens at 7 am and closes at midnight."
QUESTION = "How many vacation days do employees get?"
REFERENCE = "Employees get 25 paid vacation days per year."
SAMPLES = [
    # One supported sentence, one not: faithfulness 1/2. The relevant chunk ranks first: precision 1.
    JudgedSample("s1", QUESTION, "Employees get 25 vacation days per year. The cafeteria serves pizza on Fridays.",
                 REFERENCE, [CONTEXT_VACATION, CONTEXT_PARKING]),
    # Fully supported: faithfulness 1. The relevant chunk ranks second: average precision 1/2.
    JudgedSample("s2", QUESTION, "Employees get paid vacation days, accrued monthly.", REFERENCE,
                 [CONTEXT_PARKING, CONTEXT_VACATION]),
    # The judge answers prose for anything about this answer: faithfulness and relevancy fail (unparseable);
    # the context metrics judge the reference, not the answer, so they still score.
    JudgedSample("s3", QUESTION, f"{BREAK_MARKER} employees get vacation.", REFERENCE, [CONTEXT_VACATION]),
    # Nothing to judge: no call is made, and the failure says why.
    JudgedSample("s4", QUESTION, "   ", REFERENCE, [CONTEXT_VACATION]),
]
ALL = ["faithfulness", "answer_relevancy", "context_precision", "context_recall"]


def _judge(srv, tmp_path, model=JUDGE, **overrides) -> Judge:
    settings = {"max_retries": 0, "timeout_s": 30.0, **overrides}
    cfg = JudgeConfig(backend=JudgeBackend.ollama, model=model, base_url=srv.host + "/v1", **settings)
    judge = Judge(cfg, tmp_path / "cache")
    judge.check()
    return judge


@pytest.fixture(scope="module")
def server():
    double = JudgeDouble(slow_s=5)
    with OllamaTestServer({JUDGE: double, "other-model": JudgeDouble()}) as srv:
        yield srv
        double.release()


def test_ragas_scores_accounting_and_cache(server, tmp_path):
    judge = _judge(server, tmp_path)
    assert judge.identity == f"ollama:{JUDGE}@sha256:{server.digest(JUDGE)}"
    result = score_ragas(judge, SAMPLES, ALL)

    assert result.per_sample["faithfulness"] == [0.5, 1.0, None, None]
    assert result.errors["faithfulness"] == [None, None, "unparseable judge output", "empty answer"]
    assert result.values["faithfulness"] == pytest.approx(0.75)  # mean of the scored two, not (0.5+1+0+0)/4
    assert result.per_sample["context_precision"] == pytest.approx([1.0, 0.5, 1.0, 1.0], abs=1e-6)
    assert result.per_sample["context_recall"] == [1.0, 1.0, 1.0, 1.0]

    from harness.core.embedding import Embedder

    vectors = Embedder().encode([QUESTION, SAMPLES[0].answer, SAMPLES[1].answer])
    # The double's generated question is the answer itself: relevancy = cos(question, answer).
    expected = [float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])]
    assert result.per_sample["answer_relevancy"][:2] == pytest.approx(expected, abs=1e-4)
    assert result.per_sample["answer_relevancy"][2:] == [None, None]

    faith = result.accounting["faithfulness"]
    assert faith == {"scored": 2, "failed": 2, "reasons": {"unparseable judge output": 1, "empty answer": 1},
                     "failed_ids": ["s3", "s4"], "scored_set": scored_set_hash(["s1", "s2"])}
    assert result.accounting["context_recall"]["failed"] == 0
    assert result.accounting["context_recall"]["scored_set"] == scored_set_hash(["s1", "s2", "s3", "s4"])
    first_requests = judge.stats.requests
    assert first_requests > 0 and judge.stats.prompt_tokens > 0

    # Re-scoring with the same judge costs nothing: every reply comes from the cache, scores unchanged.
    before = len(server.requests_to("/v1/chat/completions"))
    again_judge = _judge(server, tmp_path)
    again = score_ragas(again_judge, SAMPLES, ALL)
    assert len(server.requests_to("/v1/chat/completions")) == before
    assert again_judge.stats.requests == 0 and again_judge.stats.cache_hits >= first_requests - 4 * 3
    assert again.per_sample == result.per_sample and again.accounting == result.accounting

    # A different judge model is a different cache key: it is asked afresh, in the same cache, and scores alike
    # (the other model runs the same rule).
    other = _judge(server, tmp_path, model="other-model")
    assert other.identity != judge.identity
    before = len(server.requests_to("/v1/chat/completions"))
    fresh = score_ragas(other, SAMPLES[:2], ["faithfulness"])
    asked = server.requests_to("/v1/chat/completions")[before:]
    assert other.stats.cache_hits == 0 and other.stats.requests == len(asked) > 0
    assert {r["body"]["model"] for r in asked} == {"other-model"}
    assert fresh.per_sample["faithfulness"] == [0.5, 1.0]


def test_judge_timeouts_and_http_errors_are_counted_not_scored(server, tmp_path):
    judge = _judge(server, tmp_path, timeout_s=1.0, cache=False)
    samples = [JudgedSample("ok", QUESTION, "Employees get paid vacation days.", REFERENCE, [CONTEXT_VACATION]),
               JudgedSample("slow", QUESTION, f"{SLOW_MARKER} employees get vacation days.", REFERENCE,
                            [CONTEXT_VACATION])]
    result = score_ragas(judge, samples, ["faithfulness"])
    assert result.per_sample["faithfulness"] == [1.0, None]
    assert result.accounting["faithfulness"]["reasons"] == {"timeout": 1}

    server.inject("http500", times=1, path="/v1/chat/completions")
    failed = score_ragas(judge, samples[:1], ["faithfulness"])
    assert failed.errors["faithfulness"] == ["http 500"] and "faithfulness" not in failed.values


def test_context_metrics_only_for_methods_that_retrieve():
    assert applicable_metrics(ALL, retrieves=False) == ["faithfulness", "answer_relevancy"]
    assert applicable_metrics(ALL, retrieves=True) == ALL


def test_judge_check_names_what_to_fix(server, tmp_path):
    cfg = JudgeConfig(backend=JudgeBackend.ollama, model="qwen2.5:14b", base_url=server.host + "/v1")
    with pytest.raises(JudgeUnavailable, match=r"judge.model: 'qwen2.5:14b' is not served by judge=ollama at "
                                               r".*; run `ollama pull qwen2.5:14b`; served: judge-double"):
        Judge(cfg, tmp_path).check()
    cfg = JudgeConfig(backend=JudgeBackend.ollama, model=JUDGE, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(JudgeUnavailable, match=r"cannot connect .*; start it with `ollama serve`, or set judge=none"):
        Judge(cfg, tmp_path).check()
    cfg = JudgeConfig(backend=JudgeBackend.openai, model=JUDGE, base_url=server.host + "/v1",
                      api_key_env="TUNEBENCH_TEST_UNSET_KEY")
    with pytest.raises(JudgeUnavailable, match=r"TUNEBENCH_TEST_UNSET_KEY is not set"):
        Judge(cfg, tmp_path).check()


def test_ollama_host_decides_the_default_endpoint(monkeypatch, tmp_path):
    cfg = JudgeConfig(backend=JudgeBackend.ollama, model=JUDGE)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert Judge(cfg, tmp_path).base_url == "http://127.0.0.1:11434/v1"
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11500")
    assert Judge(cfg, tmp_path).base_url == "http://gpu-box:11500/v1"


# ---- a sweep cell with judge=ollama, as a user runs it --------------------------------------------------------

TINY = ("model=tiny_random", "qlora.max_steps=2", "eval.num_examples=3", "eval.max_new_tokens=8", "progress=false",
        "tracker=none")


def test_cell_with_ragas_records_scores_failures_and_reuses_the_cache(run_harness, tmp_path):
    results, cache = tmp_path / "results", tmp_path / "cache"
    double = JudgeDouble()
    with OllamaTestServer({JUDGE: double}) as srv:
        args = (*TINY, "method=base_rag", "data.metrics=[rouge,ragas]", "judge=ollama", f"judge.model={JUDGE}",
                f"judge.base_url={srv.host}/v1", f"cache_dir={cache}")
        first = run_harness(*args, results_dir=results)
        assert first.returncode == 0, first.stderr[-3000:]
        sent = len(srv.requests_to("/v1/chat/completions"))
        assert sent > 0
        again = run_harness(*args, "force=true", results_dir=results)
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(srv.requests_to("/v1/chat/completions")) == sent  # greedy answers, same prompts: all cached

    records = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["completed", "completed"]
    record, second = records
    judge = record["judge"]
    assert judge["identity"] == f"ollama:{JUDGE}@sha256:{srv.digest(JUDGE)}" and judge["requests"] == sent
    assert second["judge"]["requests"] == 0 and second["judge"]["cache_hits"] > 0
    assert set(judge["metrics"]) == set(ALL)
    predictions = [json.loads(line) for line in open(record["predictions_file"])]
    # The context metrics judge the reference against the retrieved chunks: every sample scores. The answer metrics
    # judge the answer: an empty one (tiny_random's usual) fails as such, without a judge call.
    answered = sum(1 for p in predictions if p["prediction"].strip())
    expected_scored = {"context_precision": 3, "context_recall": 3, "faithfulness": answered,
                       "answer_relevancy": answered}
    assert {name: counts["scored"] for name, counts in judge["metrics"].items()} == expected_scored
    assert {name for name in ALL if name in record["metrics"]} == {n for n, k in expected_scored.items() if k}
    for name, counts in judge["metrics"].items():
        assert counts["failed"] == 3 - counts["scored"]
        kept = [p[name] for p in predictions if p[name] is not None]
        assert len(kept) == counts["scored"]
        assert all(0 <= v <= 1 for v in kept)
        assert [p.get(f"{name}_error") for p in predictions if p[name] is None] == \
            ["empty answer"] * (3 - counts["scored"])
        if kept:
            assert record["metrics"][name] == pytest.approx(np.mean(kept))
            assert record["metrics_ci"][name]["n"] == len(kept)
    assert record["metrics"] == second["metrics"] and record["eval_set"] == second["eval_set"]


def test_cell_with_an_unreachable_judge_fails_before_loading_anything(run_harness, tmp_path):
    results = tmp_path / "results"
    done = run_harness(*TINY, "method=base", "data.metrics=[rouge,ragas]", "judge=ollama", f"judge.model={JUDGE}",
                       "judge.base_url=http://127.0.0.1:9/v1", results_dir=results)
    assert done.returncode == 2  # refused on the command line, as every mistake there is
    output = done.stdout + done.stderr
    assert "tunebench: error: judge=ollama at http://127.0.0.1:9/v1: cannot connect (ConnectError)" in output
    assert "Traceback" not in output and not (results / "runs.jsonl").exists()


def test_judge_none_records_ragas_as_skipped_not_zero(run_harness, tmp_path):
    results = tmp_path / "results"
    done = run_harness(*TINY, "method=base", "data.metrics=[rouge,ragas]", results_dir=results)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((results / "runs.jsonl").read_text().splitlines()[0])
    assert record["judge"] == {"backend": "none", "skipped": "ragas: no judge configured (judge=none)"}
    assert not set(ALL) & set(record["metrics"]) and "rougeL" in record["metrics"]


def test_a_judge_that_is_gone_fails_every_sample_with_the_reason(tmp_path):
    cfg = JudgeConfig(backend=JudgeBackend.ollama, model=JUDGE, base_url="http://127.0.0.1:9/v1", max_retries=0)
    result = score_ragas(Judge(cfg, tmp_path), SAMPLES[:2], ["faithfulness"])
    assert result.errors["faithfulness"] == ["connection error", "connection error"]
    assert result.values == {} and result.accounting["faithfulness"]["reasons"] == {"connection error": 2}
