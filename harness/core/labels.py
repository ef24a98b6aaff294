"""A dataset's label set (labels.json) and the UTF-8 reading every dataset file goes through.

Apart from harness/core/data.py, which reads whole dataset folders through the config schema: the accuracy
metric reads a label set, and importing the metrics (as the leaderboard does, for which way each figure is
better) must not import Hydra with the schema.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.core.errors import DataError

LABELS_FILE = "labels.json"


def read_labels(path: Path, hashes: dict[str, str] | None = None) -> list[str]:
    """The label list of a labels.json file; its bytes join the run key (the prompt shows the labels)."""
    raw = path.read_bytes()
    try:
        labels = json.loads(utf8_text(path, raw))["labels"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: expected {{\"labels\": [...]}} ({exc})") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise DataError(f"{path}: \"labels\" must be a non-empty list of strings")
    seen: dict[str, str] = {}
    for label in labels:
        # Scoring matches answers ignoring case and spacing: two such labels could never be told apart.
        normal = " ".join(label.split()).casefold()
        if normal in seen:
            same = "is listed twice" if seen[normal] == label.strip() else f"and {seen[normal]!r} differ only in case"
            raise DataError(f"{path}: label {label.strip()!r} {same}; keep one")
        seen[normal] = label.strip()
    if hashes is not None:
        hashes[path.name] = hashlib.sha256(raw).hexdigest()
    return [label.strip() for label in labels]


def utf8_text(path: Path, raw: bytes) -> str:
    """`raw` as text, or a DataError naming the file, the line and the byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
                        "save the file as UTF-8") from None
