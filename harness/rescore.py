"""`python -m harness.rescore`: score a finished sweep's stored predictions with more metrics (or a judge),
without loading a model.

    python -m harness.rescore --sweep 2026-11-29_18-00-00-abc123 --add ngram --add semantic
    python -m harness.rescore --add ragas --set judge.backend=ollama --set judge.model=qwen2.5:14b

Each latest completed record (of the sweep, or of the whole ledger) is run again as a cell with its own
configuration plus the new metrics: its run key changes (the metric set is part of it), its predictions stage
(harness/core/stages.py) is found, and only scoring runs. The new record says where its predictions came from
(`stages.predictions.reused_from`) and keeps the producing run's cost figures. A sweep re-run with the new
metrics does the same; this command needs no Hydra overrides to say which cells those were.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from harness.board.ranking import latest_per_key
from harness.cell.run import cell_key, run_cell
from harness.core.config import ConfigError, RunConfig, to_run_config
from harness.core.data import DataError
from harness.core.ledger import COMPLETED, Ledger
from harness.core.logs import quiet_libraries
from harness.core.outcome import DONE_BEFORE
from harness.core.stages import PREDICTIONS, StageStore

log = logging.getLogger("harness.rescore")


def cell_config(record: dict, results_dir: Path, cache_dir: str, metrics: list[str], settings: list[str]):
    """The record's own configuration, as the sweep composed it, with the new metric list and settings."""
    config = OmegaConf.merge(
        OmegaConf.structured(RunConfig),
        OmegaConf.create(record["config"]),
        {"results_dir": str(results_dir), "cache_dir": cache_dir, "sweep_id": f"rescore-{record['sweep_id']}",
         "tracker": {"backend": "none"}, "progress": False, "preflight": False},
        OmegaConf.from_dotlist(settings),
    )
    config.data.metrics = metrics
    return config


def rescore(ledger: Path, sweep: str | None, add: list[str], settings: list[str], cache_dir: str) -> list[dict]:
    records = [r for r in Ledger(ledger).records() if r.get("status") == COMPLETED
               and (sweep is None or r.get("sweep_id") == sweep) and r.get("method") != "baseline"]
    records = latest_per_key(records)
    if not records:
        raise ConfigError(f"no completed runs in {ledger}{' for sweep ' + sweep if sweep else ''} to rescore")
    store, done = StageStore(ledger.parent), []
    for record in records:
        label = f"{record.get('model')}/{record.get('method')} [{record.get('run_key')}]"
        stage = (record.get("stages") or {}).get(PREDICTIONS) or {}
        if not stage.get("key") or store.load(PREDICTIONS, stage["key"]) is None:
            log.warning("%s: no stored predictions stage (a record from before stages); re-run its sweep with the "
                        "new metrics instead, which generates again", label)
            continue
        metrics = list(dict.fromkeys([*record["config"]["data"]["metrics"], *add]))
        config = cell_config(record, ledger.parent, cache_dir, metrics, settings)
        run_cfg = to_run_config(config)
        key = cell_key(run_cfg, OmegaConf.to_container(config, resolve=True))[0]
        outcome = run_cell(run_cfg, OmegaConf.to_container(config, resolve=True))
        log.info("%s: %s -> run key %s (%s)", label, ", ".join(metrics), key, outcome.status)
        done.append({"from": record.get("run_key"), "run_key": key, "status": outcome.status})
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", type=Path, default=Path("results/runs.jsonl"))
    parser.add_argument("--sweep", default=None, help="only the runs of this sweep id (default: every run)")
    parser.add_argument("--add", action="append", default=[], metavar="METRIC", required=True,
                        help="a metric to add to each run's data.metrics; repeatable")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a config setting for the rescoring, e.g. --set judge.backend=ollama")
    parser.add_argument("--cache-dir", default="~/.cache/tunebench")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    quiet_libraries()
    try:
        done = rescore(args.ledger, args.sweep, args.add, args.settings, args.cache_dir)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    completed = sum(d["status"] in (COMPLETED, DONE_BEFORE) for d in done)
    print(f"rescored {completed} of {len(done)} runs into {args.ledger} (already rescored before: "
          f"{sum(d['status'] == DONE_BEFORE for d in done)}); "
          f"python -m harness.leaderboard --ledger {args.ledger}", file=sys.stderr)
    return 0 if completed == len(done) else 1


if __name__ == "__main__":
    sys.exit(main())
