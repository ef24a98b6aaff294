"""`python -m harness.leaderboard --log-wandb`: the boards, the picks with their reasons and the Pareto plot as a
W&B run of job type `leaderboard`, in the sweep's group, beside the cells' runs.

Read from `--source wandb:ENTITY/PROJECT`, it logs online to that project; otherwise offline (no account
needed) under the results folder, in project `tunebench` (conf/tracker), for `wandb sync` later. WANDB_MODE in
the environment wins. The run's config says it is a leaderboard (`tunebench_leaderboard`), so the W&B sources
do not mistake it for a cell.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.board.boards import BoardReport
from harness.board.options import BoardOptions
from harness.board.text import cost_text, row_label
from harness.core.redact import redact_text
from harness.core.wandb_record import LEADERBOARD_MARKER

DEFAULT_PROJECT = "tunebench"


def sweep_group(reports: list[BoardReport], group: str | None) -> str | None:
    """`group` (--group / --sweep) when given, else the one sweep every row comes from (None when several)."""
    if group:
        return group
    sweeps = {row.get("sweep_id") for report in reports for row in report.rows}
    return sweeps.pop() if len(sweeps) == 1 else None


def log_leaderboard(reports: list[BoardReport], options: BoardOptions, pareto: Path | None = None) -> str:
    """`pareto`: the plot this leaderboard run wrote (None with --no-report: no plot is logged, not an old one).
    Offline runs go beside the report (options.out's folder)."""
    import wandb  # deferred, optional: only W&B tracking or a W&B source imports it

    source, cost = options.source, options.cost
    folder = options.out.parent
    if source.kind == "wandb":
        entity, project = source.location.split("/")
        mode = os.environ.get("WANDB_MODE", "online")
    else:
        entity, project, mode = None, DEFAULT_PROJECT, os.environ.get("WANDB_MODE", "offline")
    group = sweep_group(reports, options.group)
    bounds = sorted({b.text() for report in reports for b in report.bounds})
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, group=group, job_type="leaderboard", mode=mode,
                     dir=str(folder), name=f"leaderboard-{group or 'all'}", reinit="finish_previous",
                     config={LEADERBOARD_MARKER: {"source": str(source), "bounds": bounds, "cost": cost,
                                                  "sort": options.sort, "group": group}},
                     settings=wandb.Settings(save_code=False, disable_git=True, console="off", silent=True))
    try:
        payload, summary = {}, {}
        for report in reports:
            name = report.board.data + (f"-{report.board.eval_set[:8]}" if report.board.eval_set else "")
            payload[f"leaderboard/{name}"] = wandb.Table(columns=report.header, data=report.body)
            if report.verdict is not None:
                pick = report.verdict.pick
                summary[f"pick/{name}"] = (f"{row_label(pick)} at {cost_text(pick, cost)} ({cost})"
                                           if pick else "none: no completed run meets every bound")
                payload[f"not_picked/{name}"] = wandb.Table(
                    columns=["run", "why not picked"],
                    data=[[row_label(row), redact_text(reason)] for row, reason in report.verdict.rejected])
        if pareto is not None and pareto.is_file():
            payload["pareto"] = wandb.Image(str(pareto), caption="quality against cost, one panel per board")
        run.log(payload)
        run.summary.update(summary)
        where = run.dir if mode == "offline" else run.url
    finally:
        run.finish()
    return str(Path(where).parent) if mode == "offline" else str(where)
