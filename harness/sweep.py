"""What a sweep did, told from the ledger: the end-of-sweep summary and exit status, right under any launcher.

Under joblib and submitit the task function runs in other processes, so nothing the parent holds in memory
knows what happened. Each job writes one small `outcome.json` into its own Hydra job folder (what it decided:
ran, skipped as done, running elsewhere, not retried, configuration error), and the results of the cells
that ran are read back from the ledger, filtered by the sweep id. A Hydra callback prints the summary in
the parent process once every job has returned, and sets the exit status.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.core.ledger import COMPLETED, FAILED, INTERRUPTED, PRUNED, SKIPPED, Ledger
from harness.core.outcome import (
    CONFIG_ERROR,
    DONE_BEFORE,
    ERROR,
    JOB_ENDED,
    NOT_RETRIED,
    OUTCOME_FILE,
    PLANNED,
    RUNNING_ELSEWHERE,
    Outcome,
    read_outcome,
)


def job_dirs(config: DictConfig, multirun: bool) -> list[Path]:
    """The Hydra job folders of this sweep (one per cell launched), in job-number order. A job that never got
    to write Hydra's files has only the outcome its launcher wrote for it."""
    if not multirun:
        return [Path(str(config.hydra.run.dir))]
    sweep_dir = Path(str(config.hydra.sweep.dir))
    found = [p for p in sweep_dir.iterdir()
             if p.is_dir() and ((p / ".hydra").is_dir() or (p / OUTCOME_FILE).is_file())] if sweep_dir.is_dir() else []
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


@dataclass
class Summary:
    sweep_id: str
    ledgers: list[str]
    ran: Counter = field(default_factory=Counter)  # ledger status of this sweep's records → count
    decided: list[Outcome] = field(default_factory=list)  # jobs that did not run their cell, and why
    unaccounted: int = 0  # jobs with neither an outcome nor a record: their process died
    # This sweep's cells whose latest record failed or was interrupted: what to look at, by name.
    not_completed: list[dict] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.decided if o.status == status)

    @property
    def failed(self) -> int:
        return self.ran[FAILED] + self.ran[INTERRUPTED] + self.count(CONFIG_ERROR) + self.count(ERROR)

    @property
    def no_result(self) -> int:
        """Jobs that ended without a word from their cell: silent ones, and those their launcher reported."""
        return self.unaccounted + self.count(JOB_ENDED)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.count(NOT_RETRIED) or self.no_result else 0

    def lines(self) -> list[str]:
        head = (f"tunebench: {self.ran[COMPLETED]} completed, {self.count(DONE_BEFORE)} skipped, {self.failed} failed"
                + (f" ({self.ran[INTERRUPTED]} interrupted)" if self.ran[INTERRUPTED] else "")
                + (f", {self.ran[PRUNED]} pruned by the search" if self.ran[PRUNED] else "")
                + (f", {self.ran[SKIPPED]} refused by the memory preflight" if self.ran[SKIPPED] else "")
                + (f", {self.count(RUNNING_ELSEWHERE)} running elsewhere" if self.count(RUNNING_ELSEWHERE) else "")
                + (f", {self.count(NOT_RETRIED)} not retried" if self.count(NOT_RETRIED) else "")
                + (f", {self.no_result} with no result (process died?)" if self.no_result else ""))
        if self.ledgers:
            where = self.ledgers[0]
            head += f" [sweep {self.sweep_id}] (ledger: {where}; table: python -m harness.leaderboard --ledger {where})"
        out = [head]
        for r in self.not_completed:
            cell = f"{r.get('model')}/{r.get('method')} [{r.get('run_key')}]"
            first_line = (r.get("error") or "").strip().splitlines()[:1]
            if r.get("status") == INTERRUPTED:
                out.append(f"  interrupted: {cell}: {first_line[0] if first_line else 'stopped by a signal'}; the "
                           "same command resumes it")
            else:
                stage = f" at {r['failed_stage']}" if r.get("failed_stage") else ""
                what = ": " + ": ".join(x for x in (r.get("error_type"), first_line[0][:160] if first_line else "")
                                        if x) if r.get("error_type") or first_line else ""
                out.append(f"  failed: {cell}{stage}{what}")
        for o in self.decided:
            if o.status == NOT_RETRIED:
                out.append(f"  not retried: {o.cell}: {o.detail}")
            elif o.status == RUNNING_ELSEWHERE:
                out.append(f"  running elsewhere: {o.cell}: {o.detail}")
            elif o.status == CONFIG_ERROR:
                out.append(f"  configuration error: {o.cell}: {o.detail}")
            elif o.status == ERROR:
                out.append(f"  error before the cell ran: {o.cell}: {o.detail}")
            elif o.status == JOB_ENDED:
                out.append(f"  no result: {o.cell}: {o.detail}")
        return out


def summarize(sweep_id: str, dirs: list[Path], default_ledger: Path) -> Summary:
    outcomes = [read_outcome(d) for d in dirs]
    ledgers = sorted({o.ledger for o in outcomes if o is not None and o.ledger} or {str(default_ledger)})
    summary = Summary(sweep_id, ledgers)
    recorded: set[str] = set()
    for path in ledgers:
        # A cell's latest record in this sweep: a job requeued after an interruption ends `completed`.
        latest = {r["run_key"]: r for r in Ledger(Path(path)).for_sweep(sweep_id)}
        for record in latest.values():
            summary.ran[record["status"]] += 1
            if record["status"] in (FAILED, INTERRUPTED):
                summary.not_completed.append(record)
        recorded |= set(latest)
    summary.decided = [o for o in outcomes if o is not None and o.status in
                       (DONE_BEFORE, RUNNING_ELSEWHERE, NOT_RETRIED, CONFIG_ERROR, ERROR, JOB_ENDED)]
    # A job killed before its outcome was written may still have appended its record: those are accounted.
    silent = sum(1 for o in outcomes if o is None)
    reported = {o.run_key for o in outcomes if o is not None and o.run_key}
    summary.unaccounted = max(silent - len(recorded - reported), 0)
    return summary


def plan_lines(outcomes: list[Outcome], emit: str) -> list[str]:
    rows = [o for o in outcomes if o.status == PLANNED and o.plan]
    if emit == "commands":
        return [o.plan["command"] for o in rows if o.plan["status"] == "pending" or o.plan["status"].startswith("retry")]
    header = ["#", "cell", "run key", "status", "memory GB (est/avail)", "fits", "est. time", "est. $", "basis"]
    table = [header]
    for i, o in enumerate(rows):
        p = o.plan
        table.append([str(i), o.cell, p["run_key"], p["status"],
                      f"{p['memory_gb']:.2f}/{p['available_gb']:.1f}" if p.get("memory_gb") is not None else "?",
                      {True: "yes", False: "NO"}.get(p.get("fits"), "?"),
                      f"{p['est_s']:.0f} s" if p.get("est_s") is not None else "?",
                      f"{p['est_usd']:.4f}" if p.get("est_usd") is not None else "?",
                      p.get("basis", "")])
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    pending = sum(1 for o in rows if o.plan["status"] in ("pending",) or o.plan["status"].startswith("retry"))
    known = [o.plan["est_s"] for o in rows if o.plan.get("est_s") is not None and o.plan["status"] != "done"]
    usd = [o.plan["est_usd"] for o in rows if o.plan.get("est_usd") is not None and o.plan["status"] != "done"]
    lines.append(f"tunebench plan: {len(rows)} cells, {pending} to run"
                 + (f"; estimated {sum(known):.0f} s, ${sum(usd):.4f} for the {len(known)} with comparable finished "
                    f"cells" if known else "")
                 + ". Nothing was loaded or run; plan=commands prints one command per cell to run.")
    return lines


class SweepReport(Callback):
    """Registered in conf/config.yaml under hydra.callbacks; runs in the process that launched the jobs."""

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        self._report(config, multirun=False)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._report(config, multirun=True)

    def _report(self, config: DictConfig, multirun: bool) -> None:
        dirs = job_dirs(config, multirun)
        outcomes = [o for o in (read_outcome(d) for d in dirs) if o is not None]
        plan = str(OmegaConf.select(config, "plan", default="false")).lower()
        if plan not in ("false", "off") or any(o.status == PLANNED for o in outcomes):
            for line in plan_lines(outcomes, "commands" if plan == "commands" else "table"):
                print(line, flush=True)
            return
        summary = summarize(str(config.sweep_id), dirs, Path(str(config.results_dir)) / "runs.jsonl")
        for line in summary.lines():
            print(line, file=sys.stderr, flush=True)
        if summary.exit_code:
            # Hydra gives a callback no other way to set the exit status; nothing runs after this hook.
            raise SystemExit(summary.exit_code)
