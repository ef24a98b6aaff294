"""The append-only results ledger (results/runs.jsonl): one RunRecord a line, the source of truth.

Appends take an exclusive `flock` and write one whole line with a single `write` on an O_APPEND file,
so cells running in parallel (joblib, submitit on a shared filesystem with lock support) never
interleave. A line torn by a crash (a process killed mid-write, a full disk) is closed off by the next
append, which starts on a fresh line, so the torn fragment never swallows a good record. Reading skips,
with one warning naming file:line, anything that is not a whole record of the right shape.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

log = logging.getLogger("harness.core.ledger")

SCHEMA_VERSION = 1
COMPLETED, FAILED, SKIPPED = "completed", "failed", "skipped"
# Stopped by a signal (Ctrl-C, Slurm's SIGTERM before preemption): not a result, re-run by the next sweep.
INTERRUPTED = "interrupted"
# Stopped by its search's pruner after an intermediate evaluation (harness/cell/pruning.py): a deliberate end, not
# a result and not a failure; the record keeps its intermediate curve.
PRUNED = "pruned"
STATUSES = (COMPLETED, FAILED, SKIPPED, INTERRUPTED, PRUNED)
# `failure_kind` of a failed record: a transient failure (out of memory, connection, timeout) may pass on a
# re-run and is retried by the next sweep; a deterministic one is not, unless retry_failed=true.
TRANSIENT, DETERMINISTIC = "transient", "deterministic"


@dataclass
class RunRecord:
    run_key: str
    run_id: str
    status: str
    started_at: str
    finished_at: str
    sweep_id: str
    model: str
    method: str
    data: str
    hardware: str
    config: dict
    # Corpus-level metric values (0..1), flattened: {"bleu": .., "rouge1": .., "rougeL": .., "chrf": ..}.
    metrics: dict[str, float] = field(default_factory=dict)
    metric_samples: int = 0
    # 95% bootstrap CIs of per-sample means: {name: {mean, low, high, n}}; `<metric>_sample_mean` names a
    # metric whose corpus figure is not a per-sample mean (BLEU, chrF). See harness/core/stats.py.
    metrics_ci: dict[str, dict] = field(default_factory=dict)
    # Fingerprint of the eval examples scored (ids + references): rows with different ones do not rank together.
    eval_set: str | None = None
    # Which stages this cell ran and which it re-used (harness/core/stages.py): {adapter: {key, ran, reused_from},
    # predictions: {...}}; a re-used stage's cost figures are those of the run that produced it.
    stages: dict = field(default_factory=dict)
    # How the questions were asked: template_sha256 (system prompt, template, labels shown) and the exact rendered
    # prompt of the first eval example (chat template applied), so a reader can see what every cell was sent.
    prompt: dict = field(default_factory=dict)
    # The LLM judge and, per judged metric: scored, failed, reasons, failed_ids, scored_set (see metrics/ragas.py).
    judge: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    retrieval: dict = field(default_factory=dict)
    # The memory preflight's estimate (compare with cost.peak_memory_gb).
    preflight: dict = field(default_factory=dict)
    data_hashes: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    adapter_dir: str | None = None
    predictions_file: str | None = None
    error: str | None = None
    error_type: str | None = None
    failed_stage: str | None = None
    failure_kind: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)


def append_line(path: Path, text: str) -> None:
    """Append one whole line under an exclusive lock, flushed to disk before returning. If the file does not
    end in a newline (a writer died mid-line), the line starts with one: the fragment stays a line of its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (text + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# eval.* settings added after results existed, with the value every earlier cell ran at: at that value they stay out
# of the run and predictions keys (see without_added_defaults), so earlier results keep their keys.
EVAL_ADDED_DEFAULTS = {"scoring": "generate", "fewshot": 0}


def without_added_defaults(config: dict) -> dict:
    """`config` without the eval.* settings added after results existed, where they hold the value every earlier
    cell ran at (EVAL_ADDED_DEFAULTS): hashed so, earlier results keep their keys; any other value changes them."""
    evaluation = config.get("eval")
    if not isinstance(evaluation, dict):
        return config
    kept = {k: v for k, v in evaluation.items() if k not in EVAL_ADDED_DEFAULTS or v != EVAL_ADDED_DEFAULTS[k]}
    return {**config, "eval": kept}


def run_key(config: dict, data_hashes: dict[str, str], code_version: str) -> str:
    """Same config, same data bytes and same harness version → same key → the cell is not run again."""
    payload = json.dumps(
        {"config": without_added_defaults(config), "data": data_hashes, "code": code_version}, sort_keys=True,
        separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# Fields a reader relies on, and the JSON type each must have where present.
_DICT_FIELDS = ("config", "metrics", "metrics_ci", "judge", "cost", "train", "retrieval", "preflight",
                "data_hashes", "versions")
_TEXT_FIELDS = ("run_id", "started_at", "finished_at", "sweep_id", "model", "method", "data", "hardware")


def record_problem(record) -> str | None:
    """Why a parsed ledger line is not a usable record, or None when it is one."""
    if not isinstance(record, dict):
        return f"not a record (a JSON {type(record).__name__})"
    if not isinstance(record.get("run_key"), str) or not record["run_key"]:
        return "no run_key"
    if record.get("status") not in STATUSES:
        return f"status {record.get('status')!r} is not one of {', '.join(STATUSES)}"
    for name in _DICT_FIELDS:
        if name in record and not isinstance(record[name], dict):
            return f"{name} is {type(record[name]).__name__}, not an object"
    for name in _TEXT_FIELDS:
        if name in record and record[name] is not None and not isinstance(record[name], str):
            return f"{name} is {type(record[name]).__name__}, not a string"
    for name, value in record.get("metrics", {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {name} is {type(value).__name__}, not a number"
    return None


def parse_line(raw: bytes):
    """One ledger line as JSON. orjson first (several times faster on a ledger of a year of sweeps); json for
    what orjson refuses but json wrote or reads (NaN, integers beyond 64 bits, bytes that are not UTF-8)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw.decode("utf-8", errors="replace"))


@dataclass(frozen=True)
class LedgerLine:
    number: int  # 1-based, counting blank lines too (what a warning names)
    end: int  # byte offset just past the line
    record: dict | None  # a usable record, or None (then `problem` says why)
    problem: str | None


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._warned: set[tuple[int, str]] = set()

    def append(self, record: RunRecord) -> None:
        append_line(self.path, record.to_json())

    def records(self) -> list[dict]:
        """Every readable record in file order; a torn or malformed line is skipped with a warning naming
        file:line (a sweep and the leaderboard go on with the rest)."""
        out = []
        for line in self.scan():
            if line.problem:
                self.warn(line.number, line.problem)
            else:
                out.append(line.record)
        return out

    def scan(self, start: int = 0, first_number: int = 1, stop: int | None = None) -> Iterator[LedgerLine]:
        """The non-blank lines from byte `start` (the start of line `first_number`) up to byte `stop` (default:
        the end), each parsed and checked; nothing is kept, so a reader can keep only what it needs of each."""
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(start)
            offset = start
            for number, raw in enumerate(handle, start=first_number):
                if stop is not None and offset >= stop:
                    return
                offset += len(raw)
                if not raw.strip():
                    continue
                try:
                    record = parse_line(raw)
                except ValueError:
                    yield LedgerLine(number, offset, None, "unreadable ledger line skipped (torn write?)")
                    continue
                problem = record_problem(record)
                yield LedgerLine(number, offset, None if problem else record,
                                 f"ledger line skipped: {problem}" if problem else None)

    def warn(self, number: int, message: str) -> None:
        # Once per line and reader: a sweep reads the ledger several times per cell.
        if (number, message) not in self._warned:
            self._warned.add((number, message))
            log.warning("%s:%d: %s", self.path, number, message)

    def history(self, key: str) -> list[dict]:
        """Every record of one run key, oldest first."""
        return [r for r in self.records() if r["run_key"] == key]

    def completed(self, key: str) -> dict | None:
        """The latest completed record for a run key, if any."""
        found = None
        for record in self.history(key):
            if record["status"] == COMPLETED:
                found = record
        return found

    def for_sweep(self, sweep_id: str) -> list[dict]:
        return [r for r in self.records() if r.get("sweep_id") == sweep_id]


# Keys that change where or how results are shown, not what a cell computes: left out of the run key.
NON_SEMANTIC_KEYS = ("tracker", "results_dir", "cache_dir", "force", "progress", "sweep_id", "preflight",
                     "retry_failed", "plan", "objective", "keep_base_loaded", "crash_at", "trial")
# qlora settings that watch or checkpoint training, never change what it learns.
QLORA_WATCH_KEYS = ("save_steps", "eval_steps")
# data.* settings that permit a cell to run, never change what it computes.
DATA_PERMISSION_KEYS = ("allow_overlap", "allow_truncation")
# Metrics scored by an LLM judge rather than by the registry's score(predictions, references).
JUDGED_METRICS = ("ragas",)
# How the judge is reached, not what it answers: changing them re-uses a cell's result.
JUDGE_TRANSPORT_KEYS = ("concurrency", "timeout_s", "max_retries", "cache", "check_on_start", "api_key_env")


def semantic_config(config: dict) -> dict:
    """The part of a composed config that decides a cell's results, hashed into its run key: the judge only
    where a judged metric is listed, and then without its transport settings."""
    key_config = {k: v for k, v in config.items() if k not in NON_SEMANTIC_KEYS}
    if key_config.get("data"):  # permissions to score or train, not what is scored or trained
        key_config["data"] = {k: v for k, v in key_config["data"].items() if k not in DATA_PERMISSION_KEYS}
    if key_config.get("qlora"):  # how often training is checkpointed or evaluated, not what it learns
        key_config["qlora"] = {k: v for k, v in key_config["qlora"].items() if k not in QLORA_WATCH_KEYS}
        if not key_config["qlora"].get("validation_examples"):  # none held out: keys made before it existed hold
            key_config["qlora"].pop("validation_examples", None)
    metrics = (key_config.get("data") or {}).get("metrics") or []
    if "judge" in key_config:
        if any(name in JUDGED_METRICS for name in metrics):
            key_config["judge"] = {k: v for k, v in key_config["judge"].items() if k not in JUDGE_TRANSPORT_KEYS}
        else:
            del key_config["judge"]
    return key_config
