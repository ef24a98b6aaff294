"""Search against grid on one LoRA space: does hydra/sweeper=tunebench with pruning find a configuration as good as
the full grid's best for less compute?

The space is 12 configurations, qlora.r in {4, 16, 64} x qlora.lr in {1e-4, 3e-4, 1e-3, 3e-3}, method=instruct on
the bundled shop catalog (department classification, accuracy). Both arms train the same steps on the same data:
the same validation slice (qlora.validation_examples) is held out of training in both, so the grid's cells and the
search's differ only in whether a pruner may stop them. Each arm gets its own results folder (nothing is re-used
between them).

Printed per arm: wall time of the command; compute seconds (the sum of cost.total_s over its ledger records: load,
train with the intermediate evaluations, predict, for completed and pruned cells alike); cells completed / pruned;
the best accuracy with its 95% bootstrap interval; and for the search, the compute it spent (in ledger order) until
it first completed a configuration whose accuracy lies within the grid's best interval (at or above its low end).

Run from the repo root (2 shared CPU cores here: the full SmolLM2 run takes hours; --steps/--eval-examples shrink it):

    .venv/bin/python bench/search.py                                   # SmolLM2, 30 steps, the whole eval split
    .venv/bin/python bench/search.py --steps 6 --eval-examples 24 --validation-examples 16 --eval-steps 2
    .venv/bin/python bench/search.py --model tiny_random --steps 4     # plumbing only: its accuracy is noise
    .venv/bin/python bench/search.py --scoring choices --steps 12 --eval-examples 48   # label log-likelihoods
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.core.ledger import COMPLETED, PRUNED, Ledger  # noqa: E402

RANKS, LRS = ("4", "16", "64"), ("1e-4", "3e-4", "1e-3", "3e-3")


@dataclass
class Arm:
    name: str
    wall_s: float
    records: list[dict]
    exit_code: int

    @property
    def compute_s(self) -> float:
        return sum(float((r.get("cost") or {}).get("total_s") or 0.0) for r in self.records)

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r["status"] == status)

    def best(self) -> dict | None:
        done = [r for r in self.records if r["status"] == COMPLETED and "accuracy" in r["metrics"]]
        return max(done, key=lambda r: r["metrics"]["accuracy"], default=None)


def common(args) -> list[str]:
    return [f"model={args.model}", "method=instruct", "data=shop_catalog", f"qlora.max_steps={args.steps}",
            f"qlora.validation_examples={args.validation_examples}", f"eval.max_new_tokens={args.max_new_tokens}",
            f"eval.scoring={args.scoring}", "progress=false", "tracker=none", f"hardware.num_threads={args.threads}",
            *([f"eval.num_examples={args.eval_examples}"] if args.eval_examples else [])]


def run_arm(name: str, overrides: list[str], results: Path) -> Arm:
    cmd = [sys.executable, "-m", "harness", "-m", *overrides, f"results_dir={results}", f"sweep_id=bench-{name}"]
    print(f"[{name}] {' '.join(cmd[3:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
    return Arm(name, wall, Ledger(results / "runs.jsonl").records(), proc.returncode)


def interval(record: dict) -> tuple[float, float]:
    ci = (record.get("metrics_ci") or {}).get("accuracy") or {}
    value = record["metrics"]["accuracy"]
    return float(ci.get("low", value)), float(ci.get("high", value))


def label(record: dict) -> str:
    q = record["config"]["qlora"]
    return f"r={q['r']} lr={q['lr']:g}"


def compute_to_reach(arm: Arm, floor: float) -> tuple[float, dict] | None:
    """Compute the arm spent, in the order its cells finished, until one completed at or above `floor`."""
    spent = 0.0
    for record in arm.records:
        spent += float((record.get("cost") or {}).get("total_s") or 0.0)
        if record["status"] == COMPLETED and record["metrics"].get("accuracy", -1.0) >= floor:
            return spent, record
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--steps", type=int, default=30, help="qlora.max_steps of every cell (both arms)")
    parser.add_argument("--eval-examples", type=int, default=0, help="eval.num_examples (0: the whole eval split)")
    parser.add_argument("--validation-examples", type=int, default=24, help="train examples held out (both arms)")
    parser.add_argument("--eval-steps", type=int, default=5, help="the search's qlora.eval_steps (pruning points)")
    parser.add_argument("--n-trials", type=int, default=8, help="the search's trials")
    parser.add_argument("--pruner", default="successive_halving")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--scoring", choices=("generate", "choices"), default="generate",
                        help="eval.scoring of every cell (its pruning watch scores the validation slice the same way)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42, help="the search's sampler seed")
    parser.add_argument("--results", type=Path, default=None, help="folder for both arms (default: a temporary one)")
    args = parser.parse_args()
    root = args.results or Path(tempfile.mkdtemp(prefix="tunebench-search-"))

    grid = run_arm("grid", [*common(args), f"qlora.r={','.join(RANKS)}", f"qlora.lr={','.join(LRS)}"],
                   root / "grid")
    search = run_arm("search", [*common(args), "hydra/sweeper=tunebench", f"qlora.r=choice({','.join(RANKS)})",
                                f"qlora.lr=choice({','.join(LRS)})", f"qlora.eval_steps={args.eval_steps}",
                                f"hydra.sweeper.n_trials={args.n_trials}", f"hydra.sweeper.seed={args.seed}",
                                f"hydra.sweeper.pruner.name={args.pruner}"], root / "search")

    print(f"\nmodel={args.model} steps={args.steps} eval examples={args.eval_examples or 'all'} validation examples="
          f"{args.validation_examples} search: {args.n_trials} trials, eval_steps={args.eval_steps}, "
          f"pruner={args.pruner}; results in {root}")
    print(f"{'arm':8} {'wall s':>8} {'compute s':>10} {'done':>5} {'pruned':>6} {'failed':>6}  best accuracy [95% CI]")
    for arm in (grid, search):
        best = arm.best()
        shown = (f"{best['metrics']['accuracy']:.3f} [{interval(best)[0]:.3f}, {interval(best)[1]:.3f}] "
                 f"({label(best)})") if best else "none completed"
        failed = len(arm.records) - arm.count(COMPLETED) - arm.count(PRUNED)
        print(f"{arm.name:8} {arm.wall_s:8.0f} {arm.compute_s:10.0f} {arm.count(COMPLETED):5d} {arm.count(PRUNED):6d} "
              f"{failed:6d}  {shown}")
    best = grid.best()
    if best is None:
        print("the grid completed no cell: nothing to compare")
        return
    floor = interval(best)[0]
    reached = compute_to_reach(search, floor)
    if reached is None:
        print(f"the search never completed a configuration within the grid's best interval (accuracy >= {floor:.3f})")
    else:
        spent, record = reached
        print(f"the search first reached the grid's best interval (accuracy >= {floor:.3f}) with {label(record)} "
              f"after {spent:.0f} compute s: {spent / grid.compute_s:.0%} of the grid's {grid.compute_s:.0f} s "
              f"(goal <= 40%)")
    print(f"the search's whole run: {search.compute_s / grid.compute_s:.0%} of the grid's compute")


if __name__ == "__main__":
    main()
