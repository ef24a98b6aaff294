"""product_descriptions: a catalog (attributes + the shop's own description) → house-style descriptions.

Two teacher passes per product: a *draft* written from the attributes (the original description is
reference material only), then a *refine* pass that rewrites the draft to the style rules and length
limits of the recipe; the refined text is the training target. The student is asked with the
attributes alone ("Write a product description for: name; colour: red; ..."), so it learns to write
the description from the facts. Examples whose prompt + target do not fit the student's token budget
(counted with the student model's own tokenizer and chat template) are dropped and counted. Train and
eval are split by product.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets_gen.backends import GenError, GenFailure, GenRequest
from datasets_gen.output import DatasetOutput, number_records, split_by_group
from datasets_gen.recipes import RecipeContext, register_recipe
from datasets_gen.sources import CatalogColumns, catalog_columns, cell_text, file_sha256, product_ids, read_catalog
from harness.core.config import ConfigError

DRAFT_SYSTEM = (
    "You write product descriptions for an online shop. Use only the facts you are given; never invent "
    "features, materials, sizes or uses."
)
DRAFT_USER = (
    "Product: {name}\nAttributes:\n{attributes}\n\n"
    "The shop's current description (reference material: reuse its facts, not its wording):\n{description}\n\n"
    "Write a description of this product for the shop. Reply with the description only."
)
REFINE_SYSTEM = (
    "You are an editor. You rewrite product descriptions so that they follow a house style exactly, "
    "keeping every fact and adding none."
)
REFINE_USER = (
    "Product: {name}\nAttributes:\n{attributes}\n\nDraft description:\n{draft}\n\n"
    "Rewrite the draft following these style rules: {style}.\n"
    "Length: between {min_words} and {max_words} words.\n"
    "Keep only facts found in the attributes or the draft. Reply with the rewritten description only: "
    "no title, no notes."
)
STUDENT_PROMPT = "Write a product description for: {fields}"


def load_student_tokenizer(name: str):
    """The tokenizer (only) of a harness model config, with the chat template training will apply."""
    from harness.core.config import ModelConfig, ModelSource, RunConfig, load_option

    try:
        model = load_option("model", name, ModelConfig)
    except ConfigError as exc:
        raise ConfigError(f"recipe.student_model: {exc}") from None
    from harness.cell.models import build_tiny_tokenizer, ensure_chat_template, gguf_safetensors_cache  # imports torch

    if model.source == ModelSource.tiny_random:
        tokenizer = build_tiny_tokenizer(model.vocab_size)
    else:
        from transformers import AutoTokenizer

        try:
            if model.source == ModelSource.gguf_package:
                folder = gguf_safetensors_cache(model, Path(RunConfig.cache_dir).expanduser())
                tokenizer = AutoTokenizer.from_pretrained(folder)
            else:
                kwargs = {"revision": model.revision} if model.revision else {}
                tokenizer = AutoTokenizer.from_pretrained(model.hf_id, trust_remote_code=model.trust_remote_code,
                                                          **kwargs)
        except ConfigError as exc:
            raise ConfigError(f"recipe.student_model={name}: {exc}") from None
        except (OSError, ValueError) as exc:  # not cached offline, gated, no network
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GenError(f"recipe.student_model={name}: cannot load its tokenizer ({first}); "
                           "download the model first or pick another student") from None
    ensure_chat_template(tokenizer)
    return tokenizer


def count_tokens(tokenizer, question: str, answer: str) -> int:
    """Tokens of one training example as the harness formats it (user turn, assistant turn, chat template)."""
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@register_recipe("product_descriptions")
class ProductDescriptions:
    task = "generation"

    @dataclass
    class Params(CatalogColumns):
        # None: every column other than the id, name and description columns.
        attribute_columns: list[str] | None = None
        style: str = "second person, benefits first, no superlatives, no prices"
        min_words: int = 40
        max_words: int = 120
        # The harness model config (conf/model/) to be fine-tuned: its tokenizer measures the budget.
        student_model: str = "smollm2_135m"
        # Most tokens of prompt + target (chat template included); keep at or below qlora.max_length.
        max_tokens: int = 512

        def __post_init__(self) -> None:
            if self.min_words <= 0 or self.max_words < self.min_words:
                raise ConfigError(f"recipe.min_words/max_words: need 0 < min_words <= max_words "
                                  f"(got {self.min_words}, {self.max_words})")
            if self.max_tokens <= 0:
                raise ConfigError(f"recipe.max_tokens: must be > 0 (got {self.max_tokens})")

    def build(self, ctx: RecipeContext) -> DatasetOutput:
        p = ctx.params
        own = [p.id_column, p.name_column, p.description_column]
        rows = read_catalog(ctx.input, own)
        ctx.sources[str(ctx.input)] = file_sha256(ctx.input)
        columns = catalog_columns(rows)
        if p.attribute_columns is None:
            attributes = [c for c in columns if c not in own]
        else:
            attributes = list(p.attribute_columns)
            missing = [c for c in attributes if c not in columns]
            if missing:
                raise GenError(f"{ctx.input}: the catalog lacks column(s) {missing} named in "
                               f"recipe.attribute_columns; it has {columns}")
        ids = product_ids(ctx.input, rows, p.id_column)
        products = []
        for product_id, row in zip(ids, rows, strict=True):
            facts = [(c, cell_text(row.get(c))) for c in attributes]
            facts = [(c, v) for c, v in facts if v]
            products.append({"id": product_id, "name": cell_text(row[p.name_column]),
                             "description": cell_text(row[p.description_column]), "facts": facts})
        if ctx.cfg.limit:
            products = products[: ctx.cfg.limit]
        # Before any teacher call: a student whose tokenizer cannot load should cost nothing.
        tokenizer = load_student_tokenizer(p.student_model)

        for name, text in (("product_descriptions.draft_system", DRAFT_SYSTEM),
                           ("product_descriptions.draft_user", DRAFT_USER),
                           ("product_descriptions.refine_system", REFINE_SYSTEM),
                           ("product_descriptions.refine_user", REFINE_USER),
                           ("product_descriptions.student", STUDENT_PROMPT)):
            ctx.generator.remember_prompt(name, text)

        def fact_lines(product: dict) -> str:
            return "\n".join(f"- {c}: {v}" for c, v in product["facts"]) or "- (none)"

        drafts = ctx.generator.run("product_descriptions.draft", {
            product["id"]: GenRequest(messages=(
                {"role": "system", "content": DRAFT_SYSTEM},
                {"role": "user", "content": DRAFT_USER.format(name=product["name"], attributes=fact_lines(product),
                                                              description=product["description"])},
            ))
            for product in products
        })
        drafted = {}
        for product in products:
            draft = drafts[product["id"]]
            if isinstance(draft, GenFailure):
                ctx.quality.drop("generation_failed")
                continue
            problem = ctx.quality.text_problem(draft, "draft", 1, 10**6)
            if problem:
                ctx.quality.drop(problem)
                continue
            drafted[product["id"]] = draft.strip()

        refined = ctx.generator.run("product_descriptions.refine", {
            product["id"]: GenRequest(messages=(
                {"role": "system", "content": REFINE_SYSTEM},
                {"role": "user", "content": REFINE_USER.format(
                    name=product["name"], attributes=fact_lines(product), draft=drafted[product["id"]],
                    style=p.style, min_words=p.min_words, max_words=p.max_words)},
            ))
            for product in products if product["id"] in drafted
        })

        candidates, over_budget = [], 0
        for product in products:
            if product["id"] not in refined:
                continue
            text = refined[product["id"]]
            if isinstance(text, GenFailure):
                ctx.quality.drop("generation_failed")
                continue
            problem = ctx.quality.text_problem(text, "description", p.min_words, p.max_words)
            if problem:
                ctx.quality.drop(problem)
                continue
            fields = "; ".join([product["name"], *(f"{c}: {v}" for c, v in product["facts"])])
            question, answer = STUDENT_PROMPT.format(fields=fields), text.strip()
            tokens = count_tokens(tokenizer, question, answer)
            if tokens > p.max_tokens:
                ctx.quality.drop("over_token_budget")
                over_budget += 1
                continue
            candidates.append({"question": question, "answer": answer, "source_doc_ids": [product["id"]],
                               "context": product["description"], "_product": product["id"], "_tokens": tokens})
        records = ctx.quality.dedupe(candidates, lambda r: r["answer"])
        train, evaluation = split_by_group(records, lambda r: r["_product"], ctx.cfg.eval_fraction, ctx.cfg.seed)
        corpus = [{"id": product["id"], "title": product["name"],
                   "text": "\n".join([*(f"{c}: {v}" for c, v in product["facts"]), "", product["description"]]).strip()}
                  for product in products]
        kept_tokens = [r["_tokens"] for r in records]
        return DatasetOutput(
            task=self.task,
            train=number_records(train, ctx.cfg.name, "train"),
            eval=number_records(evaluation, ctx.cfg.name, "eval"),
            corpus=corpus,
            report={
                "products": len(products),
                "attribute_columns": attributes,
                "drafted": len(drafted),
                "refined": sum(not isinstance(t, GenFailure) for t in refined.values()),
                "dropped_over_budget": over_budget,
                "token_budget": {
                    "student_model": p.student_model,
                    "max_tokens": p.max_tokens,
                    "measured": "student prompt + target in the student's chat template, student tokenizer",
                    "kept_max": max(kept_tokens, default=0),
                    "kept_mean": round(sum(kept_tokens) / len(kept_tokens), 1) if kept_tokens else 0.0,
                },
                "eval_products": sorted(r["_product"] for r in evaluation),
            },
        )
