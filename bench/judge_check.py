"""Score a fixed set with a real judge and print its failure rate and time per sample.

    .venv/bin/python bench/judge_check.py --judge ollama --model qwen2.5:14b
    .venv/bin/python bench/judge_check.py --judge openai --model Qwen/Qwen2.5-14B-Instruct --url http://localhost:8000/v1

The set is fixed: the bundled hr_handbook eval split (20 questions), each judged with its reference answer as
the response and its reference context as the context, plus the same questions with a deliberately unfaithful
answer (the reference of another question). A judge worth using scores faithfulness near 1 on the first half
and near 0 on the second, and fails (unparseable output, timeouts) on few samples. The reply cache is off, so
every figure is a fresh call; `--cache` measures the cached re-run instead.

Needs a machine where the judge runs (a GPU with Ollama or vLLM); this box has neither, so the script is not
part of the tests. It prints per metric: scored / failed (with reasons), mean on faithful and on unfaithful
answers, and wall seconds per sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.core.config import RAGAS_METRICS, JudgeBackend, JudgeConfig  # noqa: E402
from harness.core.data import read_qa_file  # noqa: E402
from harness.metrics.judge import Judge  # noqa: E402
from harness.metrics.ragas import JudgedSample, score_ragas  # noqa: E402

SAMPLE = REPO / "harness" / "samples" / "hr_handbook" / "eval.jsonl"


def fixed_set() -> tuple[list[JudgedSample], list[JudgedSample]]:
    records = read_qa_file(SAMPLE)
    faithful = [JudgedSample(r.id, r.question, r.answer, r.answer, [r.context]) for r in records]
    # Each question answered with the next question's reference: fluent, confident, and unsupported.
    unfaithful = [JudgedSample(r.id + "-wrong", r.question, records[(i + 1) % len(records)].answer, r.answer,
                               [r.context]) for i, r in enumerate(records)]
    return faithful, unfaithful


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", choices=[b.value for b in JudgeBackend if b != JudgeBackend.none], default="ollama")
    parser.add_argument("--model", required=True, help="the judge model as the server names it")
    parser.add_argument("--url", default=None, help="OpenAI-compatible base URL (default for ollama: $OLLAMA_HOST/v1)")
    parser.add_argument("--api-key-env", default=None, help="NAME of the variable holding the API key")
    parser.add_argument("--metrics", nargs="+", default=list(RAGAS_METRICS), choices=RAGAS_METRICS)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--cache", action="store_true", help="use the reply cache (measures a re-score)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/tunebench"))
    args = parser.parse_args()

    cfg = JudgeConfig(backend=JudgeBackend(args.judge), model=args.model, base_url=args.url,
                      api_key_env=args.api_key_env, concurrency=args.concurrency, timeout_s=args.timeout,
                      cache=args.cache, ragas_metrics=args.metrics)
    judge = Judge(cfg, args.cache_dir)
    judge.check()
    faithful, unfaithful = fixed_set()
    samples = faithful + unfaithful
    start = time.perf_counter()
    result = score_ragas(judge, samples, args.metrics)
    wall = time.perf_counter() - start

    print(f"judge {judge.identity}: {len(samples)} samples x {len(args.metrics)} metrics in {wall:.1f} s "
          f"({wall / len(samples):.2f} s per sample, concurrency {cfg.concurrency}); "
          f"{judge.stats.requests} requests, {judge.stats.cache_hits} cache hits, "
          f"{judge.stats.prompt_tokens} prompt + {judge.stats.completion_tokens} completion tokens")
    half = len(faithful)
    print(f"{'metric':<20}{'scored':>8}{'failed':>8}{'fail %':>8}{'faithful':>10}{'unfaithful':>12}  reasons")
    for name in args.metrics:
        counts = result.accounting[name]
        values = result.per_sample[name]
        means = []
        for part in (values[:half], values[half:]):
            kept = [v for v in part if v is not None]
            means.append(f"{sum(kept) / len(kept):.3f}" if kept else "-")
        rate = counts["failed"] / len(samples)
        reasons = ", ".join(f"{k}: {v}" for k, v in counts["reasons"].items()) or "-"
        print(f"{name:<20}{counts['scored']:>8}{counts['failed']:>8}{rate:>8.1%}{means[0]:>10}{means[1]:>12}  {reasons}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
