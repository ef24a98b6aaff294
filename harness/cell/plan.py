"""`plan=true`: what a sweep would do, loading nothing: each cell's run key, its status in the ledger, the
memory preflight's estimate, and time and $ estimated from comparable finished cells."""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path

from harness.cell.preflight import estimate_memory
from harness.cell.run import cell_key, not_retried_reason
from harness.core.claims import DEFAULT_TTL_S, claim_path, is_stale, read_holder
from harness.core.config import RunConfig
from harness.core.failures import recorded_failure_kind
from harness.core.ledger import COMPLETED, DETERMINISTIC, Ledger
from harness.core.outcome import PLANNED, Outcome

# Overrides that make the plan, not the cell: left out of the command printed for the cell.
PLAN_ONLY = ("plan", "sweep_id", "hydra/launcher", "hydra.launcher")


def plan_cell(cfg: RunConfig, config: dict, overrides: list[str]) -> Outcome:

    key, _, _ = cell_key(cfg, config)
    results = Path(cfg.results_dir)
    ledger = Ledger(results / "runs.jsonl")
    history = ledger.history(key)
    status = "pending"
    holder = read_holder(claim_path(results, key))
    if any(r["status"] == COMPLETED for r in history) and not cfg.force:
        status = "done"
    elif holder is not None and is_stale(holder, DEFAULT_TTL_S) is None:
        status = f"running elsewhere ({holder.host} pid {holder.pid})"
    elif history and recorded_failure_kind(history[-1]) == DETERMINISTIC:
        status = "failed, not retried" if not_retried_reason(cfg, history) else "retry (retry_failed=true)"
    elif history and recorded_failure_kind(history[-1]) is not None:
        status = f"retry ({history[-1]['status']} before, {recorded_failure_kind(history[-1])})"
    estimate = estimate_memory(cfg.model, bool(cfg.method.trainer), cfg.qlora, cfg.eval, cfg.hardware)
    est_s, est_usd, basis = estimate_cost(ledger.records(), cfg)
    command = "python -m harness " + " ".join(
        shlex.quote(o) for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(PLAN_ONLY))
    plan = {"run_key": key, "status": status, "memory_gb": round(estimate.total_gb, 3),
            "available_gb": round(estimate.available_gb, 3), "fits": bool(estimate.fits),
            "est_s": est_s, "est_usd": est_usd, "basis": basis, "command": command.strip()}
    return Outcome(PLANNED, f"{cfg.model.name}/{cfg.method.name}", run_key=key, ledger=str(ledger.path), plan=plan)


def estimate_cost(records: list[dict], cfg: RunConfig) -> tuple[float | None, float | None, str]:
    """Median wall time and $ of completed cells with the same model, method and hardware (the same dataset
    preferred). A guide, not a promise: other settings (steps, eval size) may differ."""
    done = [r for r in records if r["status"] == COMPLETED and r.get("model") == cfg.model.name
            and r.get("method") == cfg.method.name and r.get("hardware") == cfg.hardware.name
            and isinstance(r.get("cost", {}).get("total_s"), int | float)]
    same_data = [r for r in done if r.get("data") == cfg.data.name]
    pool = same_data or done
    if not pool:
        return None, None, "no comparable finished cell"
    seconds = statistics.median(r["cost"]["total_s"] for r in pool)
    usd = [r["cost"]["usd_total"] for r in pool if isinstance(r["cost"].get("usd_total"), int | float)]
    where = f"data={cfg.data.name}" if same_data else "any data"
    return round(seconds, 1), (round(statistics.median(usd), 6) if usd else None), f"median of {len(pool)} ({where})"
