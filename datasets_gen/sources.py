"""Read a user's raw material (a documents folder, a catalog file); `chunk_text` (from harness.cell.rag) cuts documents."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from datasets_gen.backends import GenError
from harness.cell.rag import chunk_text  # noqa: F401  (the harness owns chunking; re-exported for recipes)

DOCUMENT_SUFFIXES = (".md", ".txt", ".pdf")
CATALOG_SUFFIXES = (".csv", ".jsonl", ".json")


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str
    path: str
    sha256: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "doc"


def read_documents(folder: Path) -> list[Document]:
    if not folder.is_dir():
        raise GenError(f"input: {folder} is not a folder of documents (.md, .txt, .pdf)")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)
    if not paths:
        raise GenError(f"input: {folder} holds no .md, .txt or .pdf files")
    documents, ids = [], set()
    for path in paths:
        raw = path.read_bytes()
        text = _pdf_text(path) if path.suffix.lower() == ".pdf" else _decode(path, raw)
        if not text.strip():
            raise GenError(f"{path}: the document is empty")
        doc_id = _slug(str(path.relative_to(folder).with_suffix("")))
        if doc_id in ids:
            raise GenError(f"{path}: two documents map to the id '{doc_id}'; rename one of them")
        ids.add(doc_id)
        title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.strip()), doc_id)
        documents.append(Document(doc_id, title, text, str(path), hashlib.sha256(raw).hexdigest()))
    return documents


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GenError(f"{path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise GenError(f"{path}: reading PDF needs the optional package pypdf (pip install pypdf)") from None
    try:
        return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    except Exception as exc:  # pypdf raises many types for damaged files
        raise GenError(f"{path}: unreadable PDF ({type(exc).__name__}: {exc})") from None


@dataclass
class CatalogColumns:
    """Where a catalog keeps what every catalog recipe needs; recipes' Params extend this."""

    id_column: str = "id"
    name_column: str = "name"
    description_column: str = "description"


def read_catalog(path: Path, required: list[str]) -> list[dict]:
    """Rows of a .csv or .jsonl catalog; every required column must exist and be non-empty."""
    if path.is_dir():
        raise GenError(f"input: {path} is a folder; give the catalog file itself (.csv or .jsonl)")
    if not path.is_file():
        raise GenError(f"input: catalog file {path} not found")
    if path.suffix.lower() == ".csv":
        # A spreadsheet's "CSV UTF-8" export starts with a byte-order mark, which would rename the first column.
        reader = csv.DictReader(io.StringIO(_decode(path, path.read_bytes()).removeprefix("\ufeff"), newline=""))
        columns = [c for c in reader.fieldnames or [] if c]
        rows = []
        for row in reader:
            if None in row:  # csv puts cells beyond the header under the key None
                raise GenError(f"{path}: row {reader.line_num} has more cells than the header's {len(columns)} "
                               "columns; quote cells that contain commas")
            rows.append(dict(row))
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(_decode(path, path.read_bytes()).splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise GenError(f"{path}:{number}: not valid JSON ({exc.msg}); a catalog is one JSON object "
                                   "a line") from None
                if not isinstance(row, dict):
                    raise GenError(f"{path}:{number}: expected a JSON object (one product a line), got "
                                   f"{type(row).__name__}")
                rows.append(row)
        columns = sorted({key for row in rows for key in row})
    else:
        raise GenError(f"input: {path} must be a .csv or .jsonl catalog")
    if not rows:
        raise GenError(f"{path}: the catalog has no rows")
    missing = [c for c in required if c not in columns]
    if missing:
        raise GenError(f"{path}: the catalog lacks required column(s) {missing}; it has {list(columns)}")
    for number, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        empty = [c for c in required if not str(row.get(c, "")).strip()]
        if empty:
            raise GenError(f"{path}: row {number} has empty required column(s) {empty}")
    return rows


def cell_text(value) -> str:
    """A catalog cell as text: JSONL cells may be numbers, lists or objects."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(cell_text(v) for v in value if cell_text(v))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell_text(v)}" for k, v in value.items() if cell_text(v))
    return str(value).strip()


def catalog_columns(rows: list[dict]) -> list[str]:
    """Every column of the catalog, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def product_ids(path: Path, rows: list[dict], id_column: str) -> list[str]:
    ids = [cell_text(row[id_column]) for row in rows]
    seen: set[str] = set()
    for product_id in ids:
        if product_id in seen:
            raise GenError(f"{path}: product id {product_id!r} appears more than once in column '{id_column}'")
        seen.add(product_id)
    return ids


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
