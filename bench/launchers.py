"""One 4-cell tiny_random sweep under each Hydra launcher: wall time, records written, duplicates, summary.

Each launcher gets a fresh results folder and runs the same `python -m harness -m` command (4 cells: base,
instruct, causal, base_rag on the bundled hr_handbook sample), so the figures differ only by how the cells
are launched. Then, for the exactness half of the question, two basic-launcher sweeps over the same 4 cells
are started at the same moment on one results folder: each cell must be run once in all.

Printed per row: wall time of the whole command (interpreter start-up to exit), ledger records written by
that sweep, duplicates (run keys with more than one completed record), the exit status and the summary line.

The slurm row submits the sweep as a job array through hydra/launcher=slurm_cpu (one CPU per job). It uses the
cluster SLURM_CONF (or /etc/slurm) points at when `sinfo` answers; otherwise, as root, it starts the tests'
one-node cluster (tests/slurm_cluster.py: Debian's slurm-wlm and munge, daemons in a temporary folder) for the
run and stops it after; otherwise the row says why it was skipped. `--partition` names the partition.

Run from the repo root (the 2-core CPU here is shared; numbers on a quiet machine will be lower):

    .venv/bin/python bench/launchers.py
    .venv/bin/python bench/launchers.py --steps 5 --launchers basic joblib
    .venv/bin/python bench/launchers.py --launchers slurm --skip-concurrent
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness.core.ledger import COMPLETED, Ledger  # noqa: E402

LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local"],
    "slurm": ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1"],
}


def sweep_args(steps: int) -> list[str]:
    return ["-m", "model=tiny_random", "method=base,instruct,causal,base_rag", f"qlora.max_steps={steps}",
            "eval.num_examples=4", "eval.max_new_tokens=8", "progress=false", "tracker=none"]


def start(args: list[str], results: Path, extra_env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "RAGAS_DO_NOT_TRACK": "true",
           "PYTHONPATH": str(REPO), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "harness", *args, f"results_dir={results}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def summary_line(stderr: str) -> str:
    """The sweep's closing count (the slurm launcher says other `tunebench: ` lines before it)."""
    return next((line for line in stderr.splitlines() if line.startswith("tunebench: ") and " completed, " in line),
                "(no summary)").split(" [")[0]


def ledger_figures(results: Path) -> tuple[int, int, int]:
    records = Ledger(results / "runs.jsonl").records()
    completed = Counter(r["run_key"] for r in records if r["status"] == COMPLETED)
    return len(records), len(completed), sum(n - 1 for n in completed.values() if n > 1)


@contextlib.contextmanager
def slurm_cluster():
    """(environment for a reachable Slurm cluster, None) or (None, why there is none)."""
    if shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True, timeout=60).returncode == 0:
        yield {}, None
        return
    import slurm_cluster as test_cluster  # tests/slurm_cluster.py: only this row needs it

    reason = test_cluster.why_not()
    if reason:
        yield None, reason
        return
    cluster = test_cluster.start_cluster()
    try:
        yield cluster.env, None
    finally:
        cluster.cancel_all()
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per training cell")
    parser.add_argument("--launchers", nargs="+", default=list(LAUNCHERS), choices=list(LAUNCHERS))
    parser.add_argument("--skip-concurrent", action="store_true", help="skip the two-sweeps-at-once row")
    parser.add_argument("--partition", default="debug", help="the Slurm partition of the slurm row")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tunebench-bench-launchers-") as tmp, contextlib.ExitStack() as stack:
        for name in args.launchers:
            results = Path(tmp) / name
            env, launcher = {}, LAUNCHERS[name]
            if name == "slurm":
                env, reason = stack.enter_context(slurm_cluster())
                if env is None:
                    rows.append((name, "-", "-", "-", "-", "-", f"skipped: {reason}"))
                    continue
                launcher = [*launcher, f"hydra.launcher.partition={args.partition}"]
            began = time.perf_counter()
            proc = start([*sweep_args(args.steps), *launcher], results, env)
            _, err = proc.communicate()
            wall = time.perf_counter() - began
            records, keys, duplicates = ledger_figures(results)
            rows.append((name, f"{wall:.1f}", str(records), str(keys), str(duplicates), str(proc.returncode),
                         summary_line(err)))
        if not args.skip_concurrent:
            results = Path(tmp) / "concurrent"
            began = time.perf_counter()
            procs = [start(sweep_args(args.steps), results), start(sweep_args(args.steps), results)]
            errs = [p.communicate()[1] for p in procs]
            wall = time.perf_counter() - began
            records, keys, duplicates = ledger_figures(results)
            rows.append(("2 x basic at once", f"{wall:.1f}", str(records), str(keys), str(duplicates),
                         ",".join(str(p.returncode) for p in procs), " / ".join(summary_line(e) for e in errs)))
    header = ("launcher", "wall s", "records", "cells done", "duplicates", "exit", "summary")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"4-cell tiny_random sweep, qlora.max_steps={args.steps}, {os.cpu_count()} CPUs")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0 if all(r[4] in ("0", "-") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
