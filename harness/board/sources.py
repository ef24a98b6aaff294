"""Where the leaderboard reads runs from: the ledger, a W&B project online, or W&B runs written offline.

    --source ledger:results/runs.jsonl        (the default; the source of truth)
    --source wandb:ENTITY/PROJECT             (wandb.Api().runs(path, filters=..., lazy=False))
    --source wandb-offline:results/wandb      (offline run files, read with wandb's own CLI)

Every source yields the ledger's record dicts (W&B runs through harness/core/wandb_record.py, the mapping the
tracker writes them with), so the same build path ranks, bounds and picks them: a run present in two sources
gives the same row. Each source also yields a run's per-example predictions (the ledger's predictions file,
or the `eval/predictions` table the run logged) for the report's drill-down and for --compare.

Offline runs: wandb 0.31 writes only `run-<id>.wandb` (no summary or config files) and `wandb.Api()` needs a
server, so each run is read with `wandb leet inspect --summary --json RUN_DIR` (the supported CLI of wandb
0.31; pinned in pyproject.toml and tested against runs the test suite writes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.board.board_cache import ledger_boards
from harness.board.compare import Comparison, compare, load_predictions
from harness.board.ledger_index import data_name, indexed_data_names, indexed_records
from harness.board.ranking import Board, LeaderboardError, dataset_boards
from harness.core.wandb_record import IDENTITY, LEADERBOARD_MARKER, from_wandb

KINDS = ("ledger", "wandb", "wandb-offline")
PREDICTIONS_KEY = "eval/predictions"
# W&B run states of a run that has ended.
FINAL_STATES = ("finished", "failed", "crashed", "killed")
# Offline runs read at once (each is one short-lived `wandb` process).
READERS = 4
INSPECT_TIMEOUT_S = 120


@dataclass
class Source:
    kind: str
    location: str
    # run_id -> where its predictions are (a table file, or a W&B run object for the online source)
    _tables: dict = field(default_factory=dict, repr=False)
    skipped: list[str] = field(default_factory=list)  # W&B runs left out, and why

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"

    @property
    def ledger_path(self) -> Path | None:
        return resolve_ledger(Path(self.location)) if self.kind == "ledger" else None

    def require_predictions(self, record: dict) -> list[dict]:
        """predictions(), or a clear error naming the run (for --compare)."""
        rows = self.predictions(record)
        if rows is None:
            raise LeaderboardError(f"run {record.get('run_key')}: its predictions are not available from {self} "
                                   f"(the run logged no eval/predictions table: tracker.log_predictions=false?)")
        return rows

    def records(self, group: str | None = None, data: str | None = None) -> list[dict]:
        """The runs (of sweep `group`, of dataset `data`); a ledger's are read through its board index
        (harness/board/ledger_index.py), so they hold what a board shows, not the whole record."""
        if self.kind == "ledger":
            path = resolve_ledger(Path(self.location))
            records = indexed_records(path, data) if path.is_file() else []
        else:
            records = self._offline_records(group) if self.kind == "wandb-offline" else self._online_records(group)
            records = [r for r in records if data is None or data_name(r) == data]
        return [r for r in records if r.get("sweep_id") == group] if group and self.kind == "ledger" else records

    def boards(self, group: str | None = None, data: str | None = None) -> list[Board]:
        """The boards of the runs (of sweep `group`, of dataset `data`): one per dataset and eval set, seeds
        collapsed. A ledger's, of every sweep, come from its board cache (harness/board/board_cache.py)."""
        if self.kind == "ledger" and group is None:
            path = resolve_ledger(Path(self.location))
            return ledger_boards(path, data) if path.is_file() else []
        return dataset_boards(self.records(group, data))

    def data_names(self, group: str | None = None) -> list[str]:
        """The datasets this source has runs of."""
        if self.kind == "ledger" and group is None:
            path = resolve_ledger(Path(self.location))
            return indexed_data_names(path) if path.is_file() else []
        return list(dict.fromkeys(data_name(r) for r in self.records(group)))

    def predictions(self, record: dict) -> list[dict] | None:
        """The run's per-example rows, or None when this source cannot reach them."""
        if self.kind == "ledger":
            try:
                return load_predictions(record, self.ledger_path)
            except LeaderboardError:
                return None
        where = self._tables.get(record.get("run_id"))
        if where is None:
            return None
        if isinstance(where, Path):
            return table_rows(json.loads(where.read_text(encoding="utf-8")))
        return _download_table(*where)

    # --- W&B offline ------------------------------------------------------------------------------------

    def _offline_records(self, group: str | None) -> list[dict]:
        root = Path(self.location)
        if not root.is_dir():
            raise LeaderboardError(f"--source {self}: no such directory; offline runs are under "
                                   f"<results_dir>/wandb (e.g. --source wandb-offline:results/wandb)")
        run_dirs = sorted({p.parent for p in root.rglob("run-*.wandb")})
        if not run_dirs:
            raise LeaderboardError(f"--source {self}: no offline W&B runs (run-*.wandb) under {root}; run a "
                                   f"sweep with tracker=wandb_offline first")
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            inspected = list(pool.map(inspect_offline_run, run_dirs))
        records = []
        for run_dir, run in zip(run_dirs, inspected, strict=True):
            record = self._accept(run_dir.name, run.get("config") or {}, run.get("summary") or {}, group,
                                  run.get("state"))
            if record is None:
                continue
            table = (run.get("summary") or {}).get(PREDICTIONS_KEY)
            if isinstance(table, dict) and table.get("path"):
                self._tables[record["run_id"]] = run_dir / "files" / table["path"]
            records.append(record)
        return records

    # --- W&B online -------------------------------------------------------------------------------------

    def _online_records(self, group: str | None) -> list[dict]:
        if self.location.count("/") != 1 or not all(self.location.split("/")):
            raise LeaderboardError(f"--source {self}: expected wandb:ENTITY/PROJECT, e.g. wandb:my-team/tunebench")
        api = make_api()
        filters = {"group": group} if group else {}
        try:
            runs = list(api.runs(self.location, filters=filters, lazy=False))
        except Exception as exc:  # the API raises its own error types for a wrong path or a missing login
            raise LeaderboardError(f"--source {self}: W&B could not list the runs: {type(exc).__name__}: {exc}") \
                from None
        records = []
        for run in runs:
            summary = dict(run.summary_metrics)
            record = self._accept(run.id, run.config, summary, None, run.state)
            if record is None:
                continue
            table = summary.get(PREDICTIONS_KEY)
            if isinstance(table, dict) and table.get("path"):
                self._tables[record["run_id"]] = (run, table["path"])
            records.append(record)
        return records

    def _accept(self, name: str, config: dict, summary: dict, group: str | None, state: str | None) -> dict | None:
        if LEADERBOARD_MARKER in config:  # a run --log-wandb wrote: the boards, not a cell
            return None
        record = from_wandb(config, summary)
        if record is None and state not in FINAL_STATES:
            # A cell's record reaches W&B when it ends: before that its run has only the composed config.
            self.skipped.append(f"{name}: unfinished (W&B state {state}: still running, or killed)")
            return None
        if record is None:
            self.skipped.append(f"{name}: not a tunebench cell (no `{IDENTITY}` config)")
            return None
        if record.get("status") is None:
            self.skipped.append(f"{name}: unfinished (no status yet: still running, or killed)")
            return None
        if group and (config.get(IDENTITY) or {}).get("group") != group:
            return None
        return record


def compare_runs(source: Source, key_a: str, key_b: str, metric: str | None = None,
                 allow_different_samples: bool = False, group: str | None = None) -> Comparison:
    """`--compare` on any source: a ledger's predictions files, or the W&B runs' records (of `group`) and the
    predictions tables they logged."""
    if source.kind == "ledger":
        return compare(source.ledger_path, key_a, key_b, metric=metric, allow_different_samples=allow_different_samples)
    return compare(str(source), key_a, key_b, metric=metric, allow_different_samples=allow_different_samples,
                   records=source.records(group), load=source.require_predictions)


def parse_source(text: str) -> Source:
    kind, sep, location = text.partition(":")
    if not sep or kind not in KINDS or not location:
        raise LeaderboardError(f"--source {text!r}: expected ledger:PATH, wandb:ENTITY/PROJECT or "
                               f"wandb-offline:DIR (e.g. --source wandb-offline:results/wandb)")
    return Source(kind, location)


def resolve_ledger(path: Path) -> Path:
    """A directory means the ledger inside it (results/ -> results/runs.jsonl)."""
    if path.is_dir():
        inside = path / "runs.jsonl"
        if not inside.is_file():
            raise LeaderboardError(f"--ledger {path} is a directory without a runs.jsonl; pass the ledger file "
                                   f"(e.g. results/runs.jsonl)")
        return inside
    return path


def make_api():
    """`wandb.Api()`; it checks the login at once, so a missing one is a clear error here."""
    import wandb  # deferred, optional: only W&B tracking or a W&B source imports it

    try:
        return wandb.Api()
    except Exception as exc:
        raise LeaderboardError(f"--source wandb: cannot reach W&B ({type(exc).__name__}: {exc}); run "
                               f"`wandb login` or set WANDB_API_KEY, or read offline runs with "
                               f"--source wandb-offline:results/wandb") from None


def wandb_cli() -> list[str]:
    """The `wandb` command of the interpreter running the harness (its version is the one pyproject pins)."""
    beside = Path(sys.executable).parent / "wandb"
    return [str(beside)] if beside.is_file() else [shutil.which("wandb") or "wandb"]


def inspect_offline_run(run_dir: Path) -> dict:
    """An offline run's config and summary as `wandb leet inspect --summary --json` prints them."""
    try:
        done = subprocess.run([*wandb_cli(), "leet", "inspect", "--summary", "--json", str(run_dir)],
                              capture_output=True, text=True, timeout=INSPECT_TIMEOUT_S,
                              env={**os.environ, "WANDB_SILENT": "true"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LeaderboardError(f"cannot read offline W&B run {run_dir} with `wandb leet inspect`: {exc}") from None
    if done.returncode != 0:
        raise LeaderboardError(f"cannot read offline W&B run {run_dir}: `wandb leet inspect` exited "
                               f"{done.returncode}: {(done.stderr or done.stdout).strip()[-300:]} (it needs "
                               f"wandb>=0.31,<0.32 as pinned in pyproject.toml)")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise LeaderboardError(f"cannot read offline W&B run {run_dir}: `wandb leet inspect --json` printed no "
                               f"JSON (wandb>=0.31,<0.32 is the version this reader is tested with)") from None


def table_rows(table: dict) -> list[dict]:
    """A logged wandb.Table ({columns, data}) as the predictions file's rows: a judge's `<metric>_error` cell
    that is empty was absent from the row it came from."""
    columns = table.get("columns") or []
    rows = []
    for values in table.get("data") or []:
        row = dict(zip(columns, values, strict=True))
        rows.append({k: v for k, v in row.items() if not (k.endswith("_error") and v is None)})
    return rows


def _download_table(run, path: str) -> list[dict] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run.file(path).download(root=tmp, replace=True)
        except Exception:  # noqa: BLE001 - no table is "predictions unavailable", not a failed leaderboard
            return None
        return table_rows(json.loads((Path(tmp) / path).read_text(encoding="utf-8")))
