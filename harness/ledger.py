"""The append-only results ledger (results/runs.jsonl): one RunRecord a line, the source of truth.

Appends take an exclusive `flock` and write one whole line with a single `write` on an O_APPEND file,
so cells running in parallel (joblib, submitit on a shared filesystem with lock support) never
interleave. A line torn by a crash is reported and skipped when reading, never silently parsed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
COMPLETED, FAILED, SKIPPED = "completed", "failed", "skipped"


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
    # metric whose corpus figure is not a per-sample mean (BLEU, chrF). See harness/stats.py.
    metrics_ci: dict[str, dict] = field(default_factory=dict)
    # Fingerprint of the eval examples scored (ids + references): rows with different ones do not rank together.
    eval_set: str | None = None
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
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)


def append_line(path: Path, text: str) -> None:
    """Append one whole line under an exclusive lock, flushed to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (text + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def run_key(config: dict, data_hashes: dict[str, str], code_version: str) -> str:
    """Same config, same data bytes and same harness version → same key → the cell is not run again."""
    payload = json.dumps(
        {"config": config, "data": data_hashes, "code": code_version}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: RunRecord) -> None:
        append_line(self.path, record.to_json())

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    warnings.warn(f"{self.path}:{number}: unreadable ledger line skipped (torn write?)", stacklevel=2)
        return out

    def completed(self, key: str) -> dict | None:
        """The latest completed record for a run key, if any."""
        found = None
        for record in self.records():
            if record.get("run_key") == key and record.get("status") == COMPLETED:
                found = record
        return found
