"""Recommendation: which catalog products an answer cites, against the products the reference cites.

catalog_recs answers cite every product as `(closest product: NAME: id N)`. `cited_ids` reads those
citations leniently: any case, any spacing, `id 7` / `id: 7` / `ID #7`, the name optional, a stray full stop
before the closing bracket. Ids are compared as strings (no number parsing: "007" is not "7"), case-folded.
A product cited twice counts once.

Per sample, with P the set of predicted ids and G the gold ids:
- id_precision = |P ∩ G| / |P|, and 0 when the prediction cites nothing (saying nothing earns nothing);
- id_recall = |P ∩ G| / |G| (0 when the reference cites nothing, which catalog_recs never writes);
- id_f1 = their harmonic mean (0 when both are 0).
The corpus values are the means of these. `valid_id_rate` is the share of all cited ids (pooled over the
eval set) that name a real product: one of the constructor's `catalog_ids` (in a sweep: the ids of the
dataset's corpus, which catalog_recs writes one product per entry), else one cited anywhere in the references.
0 when no prediction cites anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from harness.metrics import MetricResult, register_metric
from harness.metrics.keys import higher

CITATION = re.compile(
    r"\(\s*closest\s+product\s*:?\s*"
    r"(?:(?P<name>(?:(?!closest\s+product)[^\n])*?)\s*:\s*)?"  # NAME, lazily: it may hold colons itself
    r"\bid\b\s*[:#]?\s*(?P<id>[^()\s]+?)\s*[.,;]?\s*\)",
    re.IGNORECASE,
)


def _normal_id(product_id: str) -> str:
    return product_id.strip().casefold()


def citations(text: str) -> list[tuple[str, str]]:
    """(name, id) of every citation in `text`, in order; the name is "" where the citation gives none."""
    return [((m.group("name") or "").strip(), m.group("id").strip()) for m in CITATION.finditer(text)]


def cited_ids(text: str) -> list[str]:
    """The distinct normalized ids `text` cites, in order of first citation."""
    return list(dict.fromkeys(_normal_id(product_id) for _, product_id in citations(text)))


@register_metric("product_ids", keys={
    "id_precision": higher("share of cited product ids that are gold"),
    "id_recall": higher("share of gold product ids cited"),
    "id_f1": higher("F1 of cited against gold product ids"),
    "valid_id_rate": higher("share of cited ids that exist in the catalog"),
})
class ProductIds:
    """Precision/recall/F1 of cited product ids, and the share of cited ids that exist in the catalog."""

    name: str

    def __init__(self, catalog_ids: Iterable[str] | None = None) -> None:
        self.catalog_ids = {_normal_id(str(i)) for i in catalog_ids} if catalog_ids is not None else None

    @classmethod
    def from_dataset(cls, dataset) -> ProductIds:
        """The catalog is the dataset's corpus (one entry per product, id = product id), when it has one."""
        return cls(catalog_ids=list(dataset.corpus)) if dataset.corpus else cls()

    def score(self, predictions: list[str], references: list[str]) -> MetricResult:
        predicted = [set(cited_ids(p)) for p in predictions]
        gold = [set(cited_ids(r)) for r in references]
        known = self.catalog_ids if self.catalog_ids is not None else set().union(*gold)
        precision, recall, f1 = [], [], []
        for pred, true in zip(predicted, gold, strict=True):
            hits = len(pred & true)
            p = hits / len(pred) if pred else 0.0
            r = hits / len(true) if true else 0.0
            precision.append(p)
            recall.append(r)
            f1.append(2 * p * r / (p + r) if p + r else 0.0)
        n_cited = sum(len(pred) for pred in predicted)
        n_valid = sum(len(pred & known) for pred in predicted)
        n = len(predictions)
        values = {
            "id_precision": sum(precision) / n if n else 0.0,
            "id_recall": sum(recall) / n if n else 0.0,
            "id_f1": sum(f1) / n if n else 0.0,
            "valid_id_rate": n_valid / n_cited if n_cited else 0.0,
        }
        return MetricResult(values=values,
                            per_sample={"id_precision": precision, "id_recall": recall, "id_f1": f1})
