"""Each dataset's boards, seeds already collapsed, kept beside the ledger and its board index.

A year of sweeps is 25,000 records a dataset but a few thousand board rows (one per configuration, then the runs
that did not complete), so `results/runs.jsonl.board-rows` keeps the rows: a board read from it skips parsing the
records and collapsing their seeds. A dataset's boards are current while both hold:

- the board index's stamp of that dataset's records (harness/board/ledger_index.py) is the one they were made
  from: the index makes a new one whenever those records change (an append to them, a rebuild), so an append to
  one dataset keeps the boards of the others;
- the code that made them (this module, the index's and ranking.py's source) is unchanged.

Otherwise they are made again from the index's records and written back. The ledger stays the source of truth:
the index is brought up to date from it first, and deleting this file is always safe.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cache
from pathlib import Path

import orjson

from harness.board import ledger_index, ranking
from harness.board.ledger_index import (
    Index,
    fresh_index,
    pending_records,
    records_of,
    warn_skipped,
    write_whole,
)
from harness.board.ranking import Board, dataset_boards
from harness.core.ledger import Ledger

log = logging.getLogger(__name__)

SUFFIX = ".board-rows"
# Bump when what a line holds changes (the code stamp catches the rest).
FORMAT = 1


def cache_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + SUFFIX)


@cache
def code_stamp() -> str:
    """The source of the code that turns records into board rows: rows made by other code are made again."""
    digest = hashlib.sha256()
    for module in (ranking, ledger_index):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def ledger_boards(ledger_path: Path, data: str | None = None) -> list[Board]:
    """The boards of the ledger's runs (of dataset `data` only, if given), as ranking.dataset_boards makes them
    from indexed_records: kept ones where current, the others made and kept."""
    index = fresh_index(ledger_path, only=[])
    ledger = Ledger(ledger_path)
    warn_skipped(index, ledger)
    pending = pending_records(ledger_path, index, ledger, data)
    if pending:  # a line still being written: made from the records as they are now, never kept
        index = fresh_index(ledger_path, only=data)
        return dataset_boards(records_of(index, _names(index, data)) + pending)
    path = cache_path(ledger_path)
    kept = _load(path)
    current = {name: entry for name, entry in kept.items() if entry[0] == _made_from(index, name)}
    stale = [name for name in _names(index, data) if name not in current]
    if any(index.by_data.get(name) is None for name in stale):
        # The index was up to date, so only its header was read: read the records these boards are made from.
        index = fresh_index(ledger_path, only=stale)
        if any(index.by_data.get(name) is None for name in _names(index, data) if name not in current):
            index = fresh_index(ledger_path)  # the ledger grew meanwhile, by a dataset of its own
    names = _names(index, data)
    made = {name: dataset_boards(records_of(index, [name])) for name in names if name not in current}
    if made:
        lines = {name: entry for name, entry in current.items() if name in index.by_data}
        for name, boards in made.items():
            encoded = _encode(boards)
            if encoded is not None:
                lines[name] = (_made_from(index, name), encoded)
        _save(path, lines)
    return [board for name in names for board in (made[name] if name in made else _decode(current[name][1]))]


def _names(index: Index, data: str | None) -> list[str]:
    return [name for name in index.by_data if data is None or name == data]


def _made_from(index: Index, name: str) -> str:
    """What a dataset's boards are made from: this code, and the index's stamp of its records."""
    return f"{code_stamp()}:{index.stamps.get(name)}"


def _encode(boards: list[Board]) -> bytes | None:
    """A dataset's boards as one line; their rows share a few configs, written once. None when a figure is
    beyond what JSON holds (an integer over 64 bits): those boards are made each time."""
    configs: dict[int, int] = {}
    shared: list[dict] = []
    encoded = []
    for board in boards:
        rows = []
        for row in board.rows:
            config = row.get("config")
            if isinstance(config, dict):
                if id(config) not in configs:
                    configs[id(config)] = len(shared)
                    shared.append(config)
                row = {**row, "config": configs[id(config)]}
            rows.append(row)
        encoded.append({"data": board.data, "eval_set": board.eval_set, "title": board.title,
                        "metrics": board.metrics, "rows": rows})
    try:
        return orjson.dumps({"configs": shared, "boards": encoded})
    except orjson.JSONEncodeError:
        return None


def _decode(line: bytes) -> list[Board]:
    kept = orjson.loads(line)
    configs = kept["configs"]
    boards = []
    for board in kept["boards"]:
        for row in board["rows"]:
            if isinstance(row.get("config"), int):
                row["config"] = configs[row["config"]]
        boards.append(Board(board["data"], board["eval_set"], board["rows"], board["title"], board["metrics"]))
    return boards


def _load(path: Path) -> dict[str, tuple[str, bytes]]:
    """dataset -> (what its boards were made from, their line), undecoded; {} when missing or unreadable."""
    try:
        lines = path.read_bytes().split(b"\n")
        header = orjson.loads(lines[0])
        if header.get("format") != FORMAT or len(lines) != len(header["data"]) + 2 or lines[-1]:
            return {}
        return {name: (made_from, line) for name, made_from, line
                in zip(header["data"], header["made_from"], lines[1:-1], strict=True)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _save(path: Path, lines: dict[str, tuple[str, bytes]]) -> None:
    header = orjson.dumps({"format": FORMAT, "data": list(lines), "made_from": [made for made, _ in lines.values()]})
    write_whole(path, b"\n".join([header, *(line for _, line in lines.values())]) + b"\n")
