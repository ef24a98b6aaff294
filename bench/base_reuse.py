"""Loading time of a three-adapter sweep on one base: `method=instruct qlora.r=4,8,16` run once with every cell
loading its own base (keep_base_loaded=false, as before harness/cell/base_keeper.py) and once with the base kept loaded
between cells (the default). Prints, per cell, the seconds it really spent loading (the ledger's
`stages.base.load_s`) and whether it loaded or re-used the base, then the totals and the sweeps' wall times, and
checks that both sweeps produced the same predictions and training losses.

    .venv/bin/python bench/base_reuse.py --model smollm2_135m
    .venv/bin/python bench/base_reuse.py --model tiny_random --steps 2
    .venv/bin/python bench/base_reuse.py --model llama3_8b --hardware a10 eval.merge_adapter=false  # a GPU box

Extra arguments are Hydra overrides for both sweeps. On a GPU, 4-bit training cells evaluate on a merged 16-bit
copy by default and free the 4-bit base first, so the base is kept across them only with eval.merge_adapter=false.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, however this script is started
from common import run_harness_sweep  # noqa: E402

RANKS = "4,8,16"


def sweep(results: Path, cache: Path, args, keep: bool) -> tuple[float, list[dict]]:
    return run_harness_sweep([f"model={args.model}", f"hardware={args.hardware}", "method=instruct",
                              f"qlora.r={RANKS}", "tracker=none", "progress=false", f"qlora.max_steps={args.steps}",
                              f"eval.num_examples={args.examples}", f"eval.max_new_tokens={args.max_new_tokens}",
                              f"cache_dir={cache}", f"keep_base_loaded={str(keep).lower()}", *args.overrides], results)


def _predictions(record: dict) -> list[str]:
    return [json.loads(line)["prediction"] for line in Path(record["predictions_file"]).read_text().splitlines()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model name (default: smollm2_135m)")
    parser.add_argument("--hardware", default="cpu", help="a conf/hardware preset (default: cpu)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per adapter")
    parser.add_argument("--examples", type=int, default=4, help="eval examples per cell")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both sweeps, e.g. eval.merge_adapter=false")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tunebench-base-reuse-") as tmp:
        cache = Path(tmp) / "cache"
        # Warm-up outside the figures: converted weights (GGUF → safetensors) and the tiny model's folder are
        # written on a first load, which belongs to neither side.
        sweep(Path(tmp) / "warmup", cache, argparse.Namespace(**{**vars(args), "steps": 1, "examples": 1}), False)
        sides = {keep: sweep(Path(tmp) / f"keep-{keep}", cache, args, keep) for keep in (False, True)}
        same = all(_predictions(a) == _predictions(b) and a["train"]["losses"] == b["train"]["losses"]
                   for a, b in zip(sides[False][1], sides[True][1], strict=True))

    print(f"three adapters (qlora.r={RANKS}) on {args.model}, hardware={args.hardware}, {args.steps} steps, "
          f"{args.examples} eval examples")
    print(f"{'':26} {'cell 1':>12} {'cell 2':>12} {'cell 3':>12} {'load total':>11} {'sweep wall':>11}")
    totals = {}
    for keep, label in ((False, "each cell loads (before)"), (True, "base kept (after)")):
        wall, records = sides[keep]
        cells = [r["stages"]["base"] for r in records]
        totals[keep] = sum(c["load_s"] for c in cells)
        shown = [f"{c['load_s']:.2f}s {'load' if c['ran'] else 'kept'}" for c in cells]
        print(f"{label:26} {shown[0]:>12} {shown[1]:>12} {shown[2]:>12} {totals[keep]:>10.2f}s {wall:>10.1f}s")
    print(f"load time after / before: {totals[True] / totals[False]:.2f}" if totals[False] else "")

    print("predictions and training losses identical in both sweeps" if same else
          "DIFFERENT predictions or losses between the sweeps: the kept base changed a result")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
