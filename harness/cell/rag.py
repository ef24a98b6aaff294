"""Retrieval for the RAG methods: chunk a corpus, embed the chunks, index them, retrieve per question.

The corpus is `Dataset.corpus` (id -> {"id", "text", "title"?, "doc_id"?}). Documents are cut into chunks of
at most `chunk_chars` characters (ids `"{doc_id}#{i}"`); entries that are already chunks (datasets_gen's
doc_qa writes ids `"doc#i"` with a `"doc_id"` field) keep their ids when they fit, so the gold ids in
`source_doc_ids` still name them. Chunks are embedded with a sentence-transformers model (normalized,
so inner product = cosine) into a FAISS flat inner-product index.

An index is cached on disk under `<cache_dir>/rag/<key>/`, where the key hashes the chunks, the chunking
parameters and the embedding model's identity (package version, or the hash of a local model folder's
files): a second build with the same inputs loads the embeddings instead of embedding the corpus again.
The model is loaded lazily, only when something (the corpus, or queries) must be embedded.

faiss and sentence_transformers are imported inside functions: `import harness.cell.rag` stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from harness.core.config import ConfigError, RetrievalConfig
from harness.core.embedding import Embedder, model_identity

if TYPE_CHECKING:
    from harness.core.config import RunConfig
    from harness.core.data import Dataset

log = logging.getLogger(__name__)

# Bump when the cached files or what is embedded per chunk change: old cache entries are then ignored.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Chunk:
    id: str
    # The document the chunk belongs to (a pre-chunked corpus names it in its "doc_id" field).
    doc_id: str
    text: str
    title: str = ""
    # The corpus entry the chunk was cut from (equals `id` for a pre-chunked entry kept whole).
    source_id: str = ""


Hit = tuple[Chunk, float]


def chunk_text(text: str, max_chars: int, overlap_chars: int) -> list[str]:
    """Pack paragraphs (then sentences, for long ones) into chunks of at most `max_chars`; each chunk after
    the first repeats trailing units of the previous one, up to `overlap_chars`, so no fact is cut off."""
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        paragraph = paragraph.strip()
        if len(paragraph) <= max_chars:
            units.append(paragraph)
            continue
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
            units.extend(sentence[i : i + max_chars] for i in range(0, len(sentence), max_chars))
    chunks: list[list[str]] = []
    current: list[str] = []
    for unit in (u for u in units if u):
        if current and len("\n\n".join([*current, unit])) > max_chars:
            chunks.append(current)
            carried: list[str] = []
            for previous in reversed(current):
                if len("\n\n".join([previous, *carried])) > overlap_chars:
                    break
                carried.insert(0, previous)
            while carried and len("\n\n".join([*carried, unit])) > max_chars:
                carried.pop(0)
            current = carried
        current.append(unit)
    if current:
        chunks.append(current)
    return ["\n\n".join(c) for c in chunks]


def chunk_corpus(corpus: dict[str, dict], cfg: RetrievalConfig) -> list[Chunk]:
    """Every corpus entry as chunks, in corpus order. An entry with a "doc_id" field other than its own id is
    already a chunk: it keeps its id when it fits in `chunk_chars`, and is cut into `"{id}#{i}"` otherwise."""
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for entry_id, entry in corpus.items():
        text = entry.get("text", "")
        title = str(entry.get("title") or "")
        doc_id = str(entry.get("doc_id") or entry_id)
        if doc_id != entry_id and len(text.strip()) <= cfg.chunk_chars:
            pieces = [(entry_id, text.strip())] if text.strip() else []
        else:
            parts = chunk_text(text, cfg.chunk_chars, cfg.chunk_overlap)
            pieces = [(f"{entry_id}#{i}", part) for i, part in enumerate(parts)]
        for chunk_id, piece in pieces:
            if chunk_id in seen:
                raise ValueError(f"corpus: chunk id {chunk_id!r} occurs twice (from corpus entry {entry_id!r})")
            seen.add(chunk_id)
            chunks.append(Chunk(chunk_id, doc_id, piece, title, entry_id))
    return chunks


def _embedding_input(chunk: Chunk) -> str:
    """What is embedded for a chunk: its text, headed by the document title when the text lacks it (later
    chunks of a document lose its heading, and the title often carries the topic)."""
    if chunk.title and chunk.title.lower() not in chunk.text[: len(chunk.title) + 8].lower():
        return f"{chunk.title}\n\n{chunk.text}"
    return chunk.text


# ---- index ----------------------------------------------------------------------------------------------


def cache_key(chunks: list[Chunk], cfg: RetrievalConfig, identity: str) -> str:
    digest = hashlib.sha256()
    head = {"format": CACHE_FORMAT, "chunk_chars": cfg.chunk_chars, "chunk_overlap": cfg.chunk_overlap,
            "model": identity}
    digest.update(json.dumps(head, sort_keys=True).encode() + b"\n")
    for chunk in chunks:
        digest.update(json.dumps(asdict(chunk), sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


class RetrievalIndex:
    def __init__(self, chunks: list[Chunk], embeddings: np.ndarray, cfg: RetrievalConfig, embedder: Embedder,
                 key: str, from_cache: bool, path: Path | None = None) -> None:
        import faiss  # deferred, heavy: only a RAG cell imports it

        self.chunks = chunks
        self.cfg = cfg
        self.embedder = embedder
        self.key = key
        # True when the corpus embeddings were read from the disk cache instead of being computed.
        self.from_cache = from_cache
        self.path = path
        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(embeddings)

    def __len__(self) -> int:
        return len(self.chunks)

    @classmethod
    def build(cls, corpus: dict[str, dict], cfg: RetrievalConfig, cache_dir: Path | None) -> "RetrievalIndex":
        """Chunk, embed and index `corpus`, or load it from `cache_dir/rag/<key>/` (None: no disk cache)."""
        chunks = chunk_corpus(corpus, cfg)
        if not chunks:
            raise ValueError("corpus: no text to index; the RAG methods need a dataset with a corpus.jsonl")
        key = cache_key(chunks, cfg, model_identity(cfg.embedding_model))
        embedder = Embedder(cfg.embedding_model, cfg.batch_size)
        folder = Path(cache_dir).expanduser() / "rag" / key if cache_dir is not None else None
        if folder is not None and folder.is_dir():
            embeddings = _load_cached(folder, key, len(chunks))
            if embeddings is not None:
                log.info("RAG index: %d chunks loaded from %s", len(chunks), folder)
                return cls(chunks, embeddings, cfg, embedder, key, True, folder)
        embeddings = embedder.encode([_embedding_input(c) for c in chunks])
        log.info("RAG index: embedded %d chunks from %d corpus entries", len(chunks), len(corpus))
        if folder is not None:
            _write_cache(folder, key, chunks, embeddings, cfg)
        return cls(chunks, embeddings, cfg, embedder, key, False, folder)

    def retrieve(self, queries: list[str], k: int | None = None) -> list[list[Hit]]:
        """The `k` (default `top_k`) most similar chunks per query, best first, with cosine similarities."""
        if not queries:
            return []
        k = min(k or self.cfg.top_k, len(self.chunks))
        scores, rows = self.index.search(self.embedder.encode(queries), k)
        return [
            [(self.chunks[row], float(score)) for row, score in zip(row_ids, row_scores) if row >= 0]
            for row_ids, row_scores in zip(rows, scores)
        ]

    def render_context(self, hits: Sequence[Hit | Chunk], max_chars: int | None = None) -> str:
        return render_context(hits, max_chars)


def render_context(hits: Sequence[Hit | Chunk], max_chars: int | None = None) -> str:
    """One query's hits as prompt text: blocks `[title]\\ntext` (doc id when untitled), best first, separated
    by blank lines; whole blocks up to `max_chars`, and the first block cut to fit when even it is longer."""
    blocks = []
    for hit in hits:
        chunk = hit[0] if isinstance(hit, tuple) else hit
        blocks.append(f"[{chunk.title or chunk.doc_id}]\n{chunk.text}")
    text = ""
    for block in blocks:
        candidate = f"{text}\n\n{block}" if text else block
        if max_chars is not None and len(candidate) > max_chars:
            if not text:
                text = block[:max_chars].rstrip()
            break
        text = candidate
    return text


def recall_at_k(hits: list[list[Hit]], gold: list[tuple[str, ...]], k: int) -> float | None:
    """Mean over records with gold ids of the share of their gold ids found in the top `k` hits. A gold id is
    found when a hit's chunk id, source corpus entry or doc_id equals it (so document-level gold accepts any
    chunk of the document). With one gold id per record this is the hit rate. None when no record has gold."""
    if len(hits) != len(gold):
        raise ValueError(f"recall_at_k: {len(hits)} hit lists for {len(gold)} gold entries")
    if k <= 0:
        raise ValueError(f"recall_at_k: k must be > 0 (got {k})")
    shares = []
    for record_hits, record_gold in zip(hits, gold):
        wanted = set(record_gold)
        if not wanted:
            continue
        found = {name for chunk, _ in record_hits[:k] for name in (chunk.id, chunk.source_id, chunk.doc_id)}
        shares.append(len(wanted & found) / len(wanted))
    return sum(shares) / len(shares) if shares else None


# ---- disk cache -----------------------------------------------------------------------------------------


def _load_cached(folder: Path, key: str, n_chunks: int) -> np.ndarray | None:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        embeddings = np.load(folder / "embeddings.npy")
    except (OSError, ValueError) as exc:
        log.warning("RAG cache %s is unreadable (%s); rebuilding it", folder, exc)
        return None
    if meta.get("key") != key or embeddings.ndim != 2 or embeddings.shape[0] != n_chunks:
        log.warning("RAG cache %s does not match its key; rebuilding it", folder)
        return None
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def _write_cache(folder: Path, key: str, chunks: list[Chunk], embeddings: np.ndarray, cfg: RetrievalConfig) -> None:
    """Write into a temporary folder next to the target, then rename it into place: readers see a whole
    entry or none. A concurrent builder that wins the race keeps its (identical) entry."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=folder.parent))
    try:
        np.save(tmp / "embeddings.npy", embeddings)
        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as handle:
            for chunk in chunks:
                handle.write(json.dumps(asdict(chunk), ensure_ascii=False) + "\n")
        meta = {"key": key, "format": CACHE_FORMAT, "chunks": len(chunks), "dim": int(embeddings.shape[1]),
                "model": model_identity(cfg.embedding_model), "chunk_chars": cfg.chunk_chars,
                "chunk_overlap": cfg.chunk_overlap}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if folder.exists():  # a stale or broken entry under this key
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Retrieved:
    contexts: dict[str, str]  # record id -> the context text put into its prompt
    chunks: dict[str, list[str]]  # eval record id -> the chunk texts that prompt shows (for RAGAS)
    report: dict  # for the run record: recall@k, timing, index size


def retrieve_contexts(cfg: RunConfig, dataset: Dataset, eval_records) -> Retrieved:
    """Retrieved context for every train and eval question (training prompts must match inference prompts),
    from an index built once per corpus and settings and cached on disk, so a sweep's cells share it."""
    if not dataset.corpus:
        raise ConfigError(f"method={cfg.method.name} retrieves from the dataset's corpus, but {dataset.dir} has no "
                          f"{cfg.data.corpus_file}")
    start = time.perf_counter()
    index = RetrievalIndex.build(dataset.corpus, cfg.retrieval, Path(cfg.cache_dir).expanduser())
    records = dataset.train + eval_records
    hits = index.retrieve([r.question for r in records], cfg.retrieval.top_k)
    contexts = {r.id: index.render_context(h, cfg.retrieval.max_context_chars) for r, h in zip(records, hits, strict=True)}
    eval_hits = hits[len(dataset.train):]
    chunks = {r.id: shown_chunks(h, contexts[r.id]) for r, h in zip(eval_records, eval_hits, strict=True)}
    report = {
        "top_k": cfg.retrieval.top_k,
        "chunks": len(index.chunks),
        "retrieve_s": time.perf_counter() - start,
        "recall_at_k": recall_at_k(eval_hits, [r.source_doc_ids for r in eval_records], cfg.retrieval.top_k),
        "recall_at_1": recall_at_k(eval_hits, [r.source_doc_ids for r in eval_records], 1),
    }
    return Retrieved(contexts, chunks, report)


def shown_chunks(hits, rendered: str) -> list[str]:
    """The texts of the hits that made it into the rendered context (a lone first block may be cut short)."""
    shown = [chunk.text for chunk, _ in hits if chunk.text in rendered]
    if not shown and hits and rendered:
        shown = [rendered.split("\n", 1)[-1]]  # the first block, cut to max_context_chars, minus its title line
    return shown
