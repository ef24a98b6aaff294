"""What a sweep costs again: the first `method=base,instruct` sweep, then the same sweep, the sweep with another
`eval.max_new_tokens`, and the sweep with one more metric, each as a ratio of the first's wall time, with the
stages each one ran (trained, generated) read from the ledger. Goals: the repeat under 5% of the first, the
evaluation change trains nothing, the added metric loads no model.

    .venv/bin/python bench/rerun_cost.py --model tiny_random
    .venv/bin/python bench/rerun_cost.py --model smollm2_135m --steps 10 --examples 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, however this script is started
from common import run_harness_sweep  # noqa: E402

# The metrics of the first sweeps; the last one adds chrF (ngram).
METRICS = "bleu,rouge"


def sweep(results: Path, cache: Path, args, *extra: str, metrics: str = METRICS) -> tuple[float, list[dict]]:
    return run_harness_sweep([f"model={args.model}", "method=base,instruct", "tracker=none", "progress=false",
                              f"qlora.max_steps={args.steps}", f"eval.num_examples={args.examples}",
                              f"cache_dir={cache}", f"data.metrics=[{metrics}]", *extra], results)


def _stages(records: list[dict]) -> str:
    if not records:
        return "nothing ran (all cells already completed)"
    def ran(record: dict, stage: str) -> bool:
        return bool(((record.get("stages") or {}).get(stage) or {}).get("ran"))

    trained = sum(ran(r, "adapter") for r in records)
    generated = sum(ran(r, "predictions") for r in records)
    return f"{len(records)} cells: {trained} trained, {generated} generated (loaded a model)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny_random", "smollm2_135m"], default="tiny_random")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--examples", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results, cache = Path(tmp) / "results", Path(tmp) / "cache"
        cache.mkdir()
        first, made = sweep(results, cache, args)
        rows = [("first sweep", first, made)]
        rows.append(("same sweep again", *sweep(results, cache, args)))
        rows.append(("eval.max_new_tokens changed", *sweep(results, cache, args, "eval.max_new_tokens=16")))
        rows.append(("one metric added", *sweep(results, cache, args, metrics=f"{METRICS},ngram")))
    print(f"model={args.model}, method=base,instruct, qlora.max_steps={args.steps}, eval.num_examples={args.examples}")
    print(f"{'sweep':<30} | {'wall s':>7} | {'of first':>8} | stages")
    for name, wall, records in rows:
        print(f"{name:<30} | {wall:>7.1f} | {wall / first:>8.2f} | {_stages(records)}")
    print("(wall time includes ~10 s of interpreter start, imports and Hydra per sweep)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
