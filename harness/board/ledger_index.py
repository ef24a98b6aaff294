"""The board index: what the leaderboard needs of each ledger record, kept beside the ledger so a board of a year
of sweeps (50,000 records, 300 MB) is read in a fraction of a second instead of parsed whole every time.

`results/runs.jsonl.board-index` holds, per readable ledger line, a slim copy of its record (figures, status,
names, the shown settings, its configuration's fingerprint; no prompts, data hashes, hardware prices or loss
curves), the line numbers of the lines a reader skips and why, and the ledger's size, mtime and last bytes it
was made from. The ledger stays the source of truth: the index is

- used as it is when the ledger's size and mtime are those it was made from;
- extended when the ledger only grew (its last covered bytes unchanged: an append), parsing just the new lines;
- rebuilt from the whole ledger otherwise (edited, truncated, replaced), or when it is missing, unreadable or of
  another format; where the folder cannot be written, the ledger is read without one.

Deleting it is always safe. A slim record has the ledger's field names, so every board path reads it as a record.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from harness.board.ranking import CONFIGURATION_KEY, configuration_id
from harness.board.terminal import NOT_SETTINGS
from harness.core.ledger import Ledger
from harness.metrics.keys import cost_figures

log = logging.getLogger("harness.board.ledger_index")

# Bump when what a slim record holds changes: an index of another format is rebuilt.
FORMAT = 3
SUFFIX = ".board-index"
# Bytes before the covered end whose hash tells an append (they are unchanged) from an edit.
TAIL_BYTES = 4096
TEXT_FIELDS = ("run_key", "run_id", "status", "finished_at", "sweep_id", "model", "method", "data", "hardware",
               "eval_set", "metric_samples", "predictions_file", "error_type", "failed_stage", "failure_kind")
# An error message is shown cut; the whole one stays in the ledger.
ERROR_CHARS = 500
# Of `train`, what says a row trained (and what a reader may show of it).
TRAIN_FIELDS = ("steps", "examples", "train_s", "final_loss")
# Config sections no board shows (terminal.py's NOT_SETTINGS); the configuration fingerprint covers them.
HIDDEN_SECTIONS = tuple(prefix[:-1] for prefix in NOT_SETTINGS if prefix.endswith("."))
# Each cost figure with its range over generation batches (harness/cell/cost.py: <figure>_low/_median/_high).
COST_FIELDS = frozenset(f"{name}{part}" for name in cost_figures() for part in ("", "_low", "_median", "_high"))


def index_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + SUFFIX)


def slim(record: dict) -> dict:
    """What a board reads of a record: the same field names, without what no board shows."""
    out = {name: record[name] for name in TEXT_FIELDS if name in record}
    if record.get("error") is not None:
        out["error"] = str(record["error"])[:ERROR_CHARS]
    out["metrics"] = record.get("metrics") or {}
    out["metrics_ci"] = record.get("metrics_ci") or {}
    out["cost"] = {k: v for k, v in (record.get("cost") or {}).items() if k in COST_FIELDS}
    out["train"] = {k: v for k, v in (record.get("train") or {}).items() if k in TRAIN_FIELDS}
    judged = ((record.get("judge") or {}).get("metrics")) or {}
    if judged:
        keep = ("scored", "failed", "reasons", "scored_set")
        out["judge"] = {"metrics": {name: {k: v for k, v in (counts or {}).items() if k in keep}
                                    for name, counts in judged.items()}}
    predictions_stage = ((record.get("stages") or {}).get("predictions") or {}).get("key")
    if predictions_stage:
        out["stages"] = {"predictions": {"key": predictions_stage}}
    out["config"] = {k: v for k, v in (record.get("config") or {}).items() if k not in HIDDEN_SECTIONS}
    out[CONFIGURATION_KEY] = configuration_id(record)
    return out


def data_name(record: dict) -> str:
    """The board a record belongs to (boards() files a record without one under "?")."""
    return str(record.get("data") or "?")


@dataclass
class Index:
    size: int  # ledger bytes covered (whole lines)
    mtime_ns: int  # the ledger's mtime when it had that size
    tail: str  # hash of the TAIL_BYTES before `size`
    lines: int  # lines covered
    configs: list[dict]  # shown settings, shared: a sweep's records repeat a handful of them
    skipped: list[list]  # [line number, why]
    # dataset -> [[line number, slim record with "config" as an index into configs], ...], datasets in the order
    # of their first line; each dataset is one line of the file, so `--data NAME` reads and parses only its own.
    # The others stay the bytes they were read as (written back as they are), or None: not read (an index found
    # fresh, whose other datasets nobody asked for)
    by_data: dict[str, list[list] | bytes | None]
    # dataset -> a token made anew whenever its records change (an append to them, a rebuild): what was made
    # from a dataset's records (harness/board/board_cache.py) is current while the token is
    stamps: dict[str, str] = field(default_factory=dict)

    def segment(self, name: str) -> list[list]:
        """A dataset's records, parsed now if they were left as bytes."""
        if self.by_data.get(name) is None and name in self.by_data:
            raise ValueError(f"board index: the records of {name!r} were not read")  # a caller's bug
        if isinstance(self.by_data.get(name), bytes):
            self.by_data[name] = orjson.loads(self.by_data[name])
        return self.by_data.setdefault(name, [])

    def to_bytes(self) -> bytes:
        names = list(self.by_data)
        segments = [s if isinstance(s := self.by_data[name], bytes) else orjson.dumps(s) for name in names]
        header = orjson.dumps({"format": FORMAT, "size": self.size, "mtime_ns": self.mtime_ns, "tail": self.tail,
                               "lines": self.lines, "configs": self.configs, "skipped": self.skipped,
                               "data": names, "lengths": [len(s) for s in segments],
                               "stamps": [self.stamps.get(name, "") for name in names]})
        return b"\n".join([header, *segments]) + b"\n"


def _tail_hash(path: Path, end: int) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, end - TAIL_BYTES))
        return hashlib.sha256(handle.read(end - max(0, end - TAIL_BYTES))).hexdigest()


def _load(path: Path, only: str | list[str] | None = None, current: tuple[int, int] | None = None) -> Index | None:
    """The index at `path`, or None (missing, torn, foreign: rebuilt). When it covers `current` (the ledger's
    size and mtime) only what is asked is read: `only` None every dataset's records, a name or a list of names
    those datasets' ([]: none, just the header's names, stamps and skipped lines); else every dataset's bytes,
    to be extended and written back."""
    wanted = None if only is None else {only} if isinstance(only, str) else set(only)
    try:
        with path.open("rb") as handle:
            header_line = handle.readline()
            data = orjson.loads(header_line)
            if data.get("format") != FORMAT:
                return None
            names, lengths = data["data"], data["lengths"]
            if os.fstat(handle.fileno()).st_size != len(header_line) + sum(lengths) + len(lengths):
                return None  # torn
            fresh = current == (data["size"], data["mtime_ns"])
            by_data: dict[str, list[list] | bytes | None] = {}
            for name, length in zip(names, lengths, strict=True):
                if fresh and wanted is not None and name not in wanted:
                    by_data[name] = None
                    handle.seek(length + 1, os.SEEK_CUR)
                    continue
                segment = handle.read(length + 1)[:-1]
                by_data[name] = orjson.loads(segment) if wanted is None and fresh or name in (wanted or ()) else segment
        return Index(data["size"], data["mtime_ns"], data["tail"], data["lines"], data["configs"], data["skipped"],
                     by_data, dict(zip(names, data["stamps"], strict=True)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, torn or foreign: rebuilt


def _covered_end(path: Path, size: int) -> int:
    """The end of the last whole line at or before `size` (a line still being written is read, never indexed)."""
    with path.open("rb") as handle:
        position = size
        while position > 0:
            start = max(0, position - 65536)
            handle.seek(start)
            chunk = handle.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            position = start
    return 0


def _extend(index: Index, ledger: Ledger, end: int) -> None:
    """Index the whole lines between index.size and `end`. A dataset's new records are added to its segment as
    bytes where it was left as bytes (an append parses none of the records it does not add, and a first build
    holds a dataset's records as their bytes, not as dicts)."""
    shared = {orjson.dumps(config, option=orjson.OPT_SORT_KEYS): number for number, config in enumerate(index.configs)}
    added: dict[str, list] = {}
    # Kept dumped into one buffer a dataset: each orjson.dumps result holds several times its length.
    dumped: dict[str, bytearray] = {}
    for line in ledger.scan(index.size, index.lines + 1, stop=end):
        if line.problem:
            index.skipped.append([line.number, line.problem])
            continue
        record = slim(line.record)
        key = orjson.dumps(record["config"], option=orjson.OPT_SORT_KEYS)
        if key not in shared:
            shared[key] = len(index.configs)
            index.configs.append(record["config"])
        record["config"] = shared[key]
        name = data_name(record)
        segment = index.by_data.get(name, b"")
        if segment is None:
            index.segment(name)  # not read: a caller's bug, refused there
        if isinstance(segment, list):
            added.setdefault(name, []).append([line.number, record])
        else:
            buffer = dumped.setdefault(name, bytearray())
            buffer += b"," if buffer else b""
            buffer += orjson.dumps([line.number, record])
    for name, items in added.items():
        index.by_data[name].extend(items)
    for name, buffer in dumped.items():
        segment = index.by_data.get(name)
        index.by_data[name] = (segment[:-1] + b"," if segment and segment != b"[]" else b"[") + buffer + b"]"
    for name in [*added, *dumped]:
        index.stamps[name] = os.urandom(8).hex()
    index.lines += _newlines(ledger.path, index.size, end)
    index.size = end


def _newlines(path: Path, start: int, end: int) -> int:
    """Lines between byte `start` and `end`, blank ones included (so the next extension numbers its lines as the
    ledger does), counted a block at a time: a first build must not hold the whole ledger."""
    count = 0
    with path.open("rb") as handle:
        handle.seek(start)
        while start < end:
            block = handle.read(min(1 << 20, end - start))
            if not block:
                break
            count += block.count(b"\n")
            start += len(block)
    return count


def _save(index: Index, path: Path) -> None:
    write_whole(path, index.to_bytes())


def write_whole(path: Path, data: bytes) -> None:
    """Written whole and renamed into place: a reader never sees half a file. A folder that cannot be written
    just means no file (the next reader makes it again)."""
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        log.debug("%s not written: %s", path, exc)
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def fresh_index(ledger_path: Path, only: str | list[str] | None = None) -> Index:
    """The index of `ledger_path`, made or brought up to date first (see the module's docstring). Of an index
    that is up to date only what is asked is read: `only` None every dataset's records, a name or a list of
    names those datasets' alone, [] none (its names, stamps and skipped lines)."""
    path = index_path(ledger_path)
    stat = ledger_path.stat()
    index = _load(path, only, current=(stat.st_size, stat.st_mtime_ns))
    if index is not None and index.size == stat.st_size and index.mtime_ns == stat.st_mtime_ns:
        return index
    ledger = Ledger(ledger_path)
    end = _covered_end(ledger_path, stat.st_size)
    grew = index is not None and stat.st_size > index.size and _tail_hash(ledger_path, index.size) == index.tail
    if not grew:
        index = Index(0, 0, "", 0, [], [], {})
    _extend(index, ledger, end)
    # A last line still being written leaves the size unequal, so the next reader looks again.
    index.tail, index.mtime_ns = _tail_hash(ledger_path, index.size), stat.st_mtime_ns
    _save(index, path)
    return index


def warn_skipped(index: Index, ledger: Ledger) -> None:
    """The lines a reader skips, warned about as Ledger.records() does."""
    for number, problem in index.skipped:
        ledger.warn(number, problem)


def records_of(index: Index, names: list[str]) -> list[dict]:
    """The slim records of datasets `names`, in file order (each dataset's are read once: their `config` is
    resolved in place)."""
    configs = index.configs
    segments = [index.segment(name) for name in names]
    numbered = []
    for segment in segments:
        for number, record in segment:
            record["config"] = configs[record["config"]]
            numbered.append((number, record))
    if len(segments) > 1:
        numbered.sort(key=lambda pair: pair[0])
    return [record for _, record in numbered]


def pending_records(ledger_path: Path, index: Index, ledger: Ledger, data: str | None = None) -> list[dict]:
    """The records (of dataset `data`, if given) past what the index covers: a last line not yet whole, read as
    the ledger reads it (and never indexed)."""
    out = []
    if index.size < ledger_path.stat().st_size:
        for line in ledger.scan(index.size, index.lines + 1):
            if line.problem:
                ledger.warn(line.number, line.problem)
            elif data is None or data_name(line.record) == data:
                out.append(slim(line.record))
    return out


def indexed_records(ledger_path: Path, data: str | None = None) -> list[dict]:
    """The ledger's readable records (of dataset `data` only, if given), slim, in file order; skipped lines
    warned about as Ledger.records() does."""
    index = fresh_index(ledger_path, data)
    ledger = Ledger(ledger_path)
    warn_skipped(index, ledger)
    names = [data] if data is not None else list(index.by_data)
    return records_of(index, names) + pending_records(ledger_path, index, ledger, data)


def indexed_data_names(ledger_path: Path) -> list[str]:
    """The datasets the ledger has records of."""
    return list(fresh_index(ledger_path, only=[]).by_data)
