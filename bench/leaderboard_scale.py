"""The leaderboard on a year of sweeps: a 50,000-record ledger (about 300 MB), then the wall time and the peak RSS
of `python -m harness.leaderboard` writing the board, the markdown and the report page. Goal: <= 3 s and <= 400 MB.

    .venv/bin/python bench/leaderboard_scale.py                       # a tiny sweep gives the record shapes
    .venv/bin/python bench/leaderboard_scale.py --templates results/runs.jsonl --records 50000

The records are copies of real ones (the ledger given with --templates, else one a tiny sweep writes: tiny_random,
methods base and instruct, on hr_handbook and shop_catalog; about 90 s on a 2-core CPU, done once and kept in the
work folder), varied the way a year of sweeps varies them: 10 models, 4 LoRA ranks, 5 learning rates, 3 seeds, two
versions of each dataset's eval set (so two boards per dataset), about 1,000 sweeps, 8% failed, and 5% re-runs of a
configuration and seed already in the ledger under another run key (they must count as one seed). Every record's
predictions file is a copy of its template's, so the report's per-example drill-down reads real files.

Each command is timed as a whole process (fork to exit) from the `wait4` rusage of the child: the first run on a
new ledger (it builds the board index beside the ledger: runs.jsonl.board-index), then the next runs (they read the
index and the boards kept beside it: runs.jsonl.board-rows), every board (the first run also makes the boards of the
datasets --data did not ask for), then the same after 10 records were appended (the index is extended, not rebuilt;
the boards of the datasets appended to are made again). Each row prints the median wall time, the median CPU time
(user + system, of the command and the drawing process it forks: what load on a shared machine stretches least)
and the largest peak RSS. Run it on an idle machine, or say the load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_S, GOAL_MB = 3.0, 400.0
MODELS = ("tiny_random", "smollm2_135m", "smollm2_360m", "qwen2_5_0_5b", "gemma3_270m", "phi_2", "phi3_mini",
          "llama3_8b", "mistral_7b_v03", "gemma_2b")
RANKS, LRS, SEEDS = (4, 8, 16, 32), (5e-5, 1e-4, 2e-4, 5e-4, 1e-3), (1, 2, 3)
FAILED_SHARE, RERUN_SHARE, RECORDS_PER_SWEEP = 0.08, 0.05, 50
TINY_SWEEP = ("model=tiny_random", "method=base,instruct", "data=hr_handbook,shop_catalog", "qlora.max_steps=3",
              "eval.num_examples=4", "eval.max_new_tokens=8", "progress=false", "tracker=none")


def template_records(work: Path, templates: Path | None) -> list[dict]:
    """Completed records to copy: from --templates, else from a tiny sweep run once into the work folder."""
    if templates is None:
        templates = work / "templates" / "results" / "runs.jsonl"
        if not templates.is_file():
            print("running a tiny sweep for the record shapes (about 90 s) ...", flush=True)
            subprocess.run([sys.executable, "-m", "harness", "-m", *TINY_SWEEP,
                            f"results_dir={templates.parent}", f"hydra.sweep.dir={work / 'templates' / 'hydra'}"],
                           cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    records = [json.loads(line) for line in templates.read_text(encoding="utf-8").splitlines() if line.strip()]
    done = [r for r in records if r.get("status") == "completed"]
    if not done:
        raise SystemExit(f"{templates}: no completed record to copy")
    return done


def _jitter(section: dict, rng: random.Random, scale: float) -> dict:
    """Numbers moved by up to `scale` of themselves (rates stay within 0..1), everything else as it is."""
    out = {}
    for key, value in section.items():
        if isinstance(value, float):
            moved = value * (1 + rng.uniform(-scale, scale)) + rng.uniform(0, 0.05)
            out[key] = min(moved, 1.0) if 0.0 <= value <= 1.0 and key not in ("usd_per_hour",) else moved
        elif isinstance(value, dict):
            out[key] = _jitter(value, rng, scale)
        else:
            out[key] = value
    return out


def _predictions_copy(template: dict, source_ledger: Path, folder: Path) -> str | None:
    """The template's predictions file copied into the bench ledger's folder (absolute path), or None."""
    stored = template.get("predictions_file")
    if not stored:
        return None
    found = next((p for p in (Path(stored), source_ledger.parent / "runs" / template["run_key"] / Path(stored).name,
                              REPO / stored) if p.is_file()), None)
    if found is None:
        return None
    target = folder / "predictions" / f"{template['run_key']}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copyfile(found, target)
    return str(target)


def build_ledger(path: Path, templates: list[dict], source_ledger: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    predictions = {t["run_key"]: _predictions_copy(t, source_ledger, path.parent) for t in templates}
    made: list[dict] = []
    start = time.mktime((2026, 1, 1, 0, 0, 0, 0, 0, 0))
    with path.open("w", encoding="utf-8") as out:
        for index in range(count):
            if made and rng.random() < RERUN_SHARE:
                # The same configuration and seed again under a new run key (e.g. a non-semantic setting changed).
                record = json.loads(json.dumps(rng.choice(made)))
            else:
                template = rng.choice(templates)
                record = json.loads(json.dumps(template))
                model = rng.choice(MODELS)
                config = record["config"]
                config["model"]["name"] = record["model"] = model
                qlora = config.setdefault("qlora", {})
                qlora["r"], qlora["lr"], qlora["seed"] = rng.choice(RANKS), rng.choice(LRS), rng.choice(SEEDS)
                version = rng.choice((1, 2))
                if record.get("eval_set"):
                    record["eval_set"] = f"v{version}{record['eval_set'][:14]}"
                for name in record.get("data_hashes") or {}:
                    record["data_hashes"][name] = f"{record['data_hashes'][name][:60]}v{version:03d}"
                record["metrics"] = _jitter(record.get("metrics") or {}, rng, 0.5)
                record["metrics_ci"] = _jitter(record.get("metrics_ci") or {}, rng, 0.5)
                record["cost"] = _jitter(record.get("cost") or {}, rng, 0.5)
                record["predictions_file"] = predictions.get(template["run_key"])
                if len(made) < 20_000:
                    made.append(record)
            record["run_key"] = f"{rng.getrandbits(64):016x}"
            record["run_id"] = f"{rng.getrandbits(48):012x}"
            moment = start + index * (365 * 86400 / count)
            record["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(moment))
            record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(moment + 60))
            record["sweep_id"] = f"sweep-{index // RECORDS_PER_SWEEP:05d}"
            stages = record.get("stages") or {}
            if stages.get("predictions"):
                stages["predictions"] = {**stages["predictions"], "key": f"{rng.getrandbits(64):016x}"}
            if rng.random() < FAILED_SHARE:
                record = {**record, "status": "failed", "metrics": {}, "metrics_ci": {}, "eval_set": None,
                          "error": "CUDA out of memory. Tried to allocate 2.00 GiB", "error_type": "OutOfMemoryError",
                          "failed_stage": "train", "failure_kind": "transient"}
            out.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")


def timed(command: list[str]) -> tuple[float, float, int, float]:
    """(wall s, peak RSS MB, exit code, CPU s: user + system) of one whole process (with the children it
    waited for)."""
    begin = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - begin
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        print(process.stderr.read().decode(errors="replace")[-2000:], file=sys.stderr)
    process.stderr.close()
    return wall, usage.ru_maxrss / 1024, process.returncode, usage.ru_utime + usage.ru_stime


def report(label: str, runs: list[tuple[float, float, int, float]]) -> bool:
    walls, peaks, cpus = [r[0] for r in runs], [r[1] for r in runs], [r[3] for r in runs]
    ok = max(r[2] for r in runs) == 0 and statistics.median(walls) <= GOAL_S and max(peaks) <= GOAL_MB
    print(f"{label:<50} wall s median {statistics.median(walls):5.2f} (min {min(walls):.2f}, max {max(walls):.2f})"
          f"  CPU s median {statistics.median(cpus):5.2f}  peak RSS MB max {max(peaks):4.0f}  "
          f"{'within' if ok else 'OVER'} {GOAL_S:g} s / {GOAL_MB:g} MB", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tunebench-leaderboard-scale"),
                        help="folder of the ledger, its index, the reports and the template sweep")
    parser.add_argument("--templates", type=Path, default=None, help="a ledger of real records to copy")
    parser.add_argument("--data", default="shop_catalog", help="the board asked for with --data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    templates = template_records(args.work, args.templates)
    source = args.templates or args.work / "templates" / "results" / "runs.jsonl"
    ledger = args.work / "results" / "runs.jsonl"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    for stale in (ledger, ledger.with_name(ledger.name + ".board-index")):
        stale.unlink(missing_ok=True)
    begin = time.perf_counter()
    # Built in a child process: the timed commands are forked from this one, and a fork starts with its parent's
    # memory counted in its peak RSS (the builder's copies of 20,000 records would be).
    builder = multiprocessing.get_context("fork").Process(target=build_ledger,
                                                          args=(ledger, templates, source, args.records))
    builder.start()
    builder.join()
    if builder.exitcode:
        raise SystemExit(f"building {ledger} failed (exit {builder.exitcode})")
    lines = sum(1 for _ in ledger.open("rb"))
    print(f"ledger: {ledger}, {lines} records, {ledger.stat().st_size / 1e6:.0f} MB "
          f"(built in {time.perf_counter() - begin:.0f} s from {len(templates)} real records of {source})")
    base = [sys.executable, "-m", "harness.leaderboard", "--ledger", str(ledger)]
    one = [*base, "--data", args.data, "--out", str(args.work / "results" / "leaderboard-one.md")]
    every = [*base, "--out", str(args.work / "results" / "leaderboard.md")]
    ok = report(f"--data {args.data}, first run (builds the index)", [timed(one)])
    ok &= report(f"--data {args.data}, index fresh", [timed(one) for _ in range(args.repeats)])
    # The first run of every board also makes the boards of the datasets --data did not ask for.
    ok &= report("every board, first (other datasets' boards made)", [timed(every)])
    ok &= report("every board, index fresh", [timed(every) for _ in range(args.repeats)])
    # Read a line at a time: a fork starts with this process's memory counted in its peak RSS, so reading the
    # whole ledger here would show in the next command's figure.
    with ledger.open("rb") as source:
        first = [next(source) for _ in range(10)]
    with ledger.open("ab") as out:
        out.writelines(first)
    ok &= report(f"--data {args.data}, 10 records appended", [timed(one)])
    ok &= report("every board, after that append", [timed(every)])
    for name in ("leaderboard-one.md", "leaderboard-one-report.html", "leaderboard.md", "report.html"):
        written = args.work / "results" / name
        if written.is_file():
            print(f"  {name}: {written.stat().st_size / 1e3:.0f} KB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
