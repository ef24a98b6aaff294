"""departments: catalog rows → a department classification set (question: the product, answer: its label).

A label already in the catalog's label column is kept as it is; a row without one is labelled by the
teacher, through structured output whose "label" is an enum of the allowed labels, and a reply outside
the list is dropped, never mapped. The split is stratified by label, so every label with two or more
products appears in eval; the label list and counts are written beside the splits as labels.json.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from dataclasses import dataclass

from datasets_gen.backends import GenError, GenFailure, GenRequest
from datasets_gen.output import DatasetOutput, check_label_split, number_records, split_stratified
from datasets_gen.quality import parse_json
from datasets_gen.recipes import RecipeContext, register_recipe
from datasets_gen.sources import CatalogColumns, catalog_columns, cell_text, file_sha256, product_ids, read_catalog
from harness.core.config import ConfigError

SYSTEM = "You sort the products of a shop into its departments. Answer with one department from the list, nothing else."
USER = (
    "Product: {text}\n\nDepartments: {labels}\n\n"
    "Which one of these departments does this product belong to? Choose exactly one of the listed names. "
    'Return JSON: {{"label": "..."}}'
)
QUESTION = "Which department does this product belong to? {text}"


def label_schema(labels: list[str]) -> dict:
    return {"type": "object", "properties": {"label": {"type": "string", "enum": list(labels)}}, "required": ["label"]}


@register_recipe("departments")
class Departments:
    task = "classification"

    @dataclass
    class Params(CatalogColumns):
        # Used where the catalog has this column and the row's cell is non-empty; other rows ask the teacher.
        label_column: str = "department"
        # The allowed labels. None: the distinct values of label_column (then that column must exist).
        labels: list[str] | None = None
        # The product as the question shows it: {name}, {description} or any catalog column.
        text_template: str = "{name}: {description}"
        # The question each example asks, around the text: tickets, documents or leads are not products.
        question_template: str = QUESTION

    def build(self, ctx: RecipeContext) -> DatasetOutput:
        p = ctx.params
        rows = read_catalog(ctx.input, [p.id_column, p.name_column, p.description_column])
        ctx.sources[str(ctx.input)] = file_sha256(ctx.input)
        columns = catalog_columns(rows)
        placeholders = {field for _, field, _, _ in string.Formatter().parse(p.text_template) if field is not None}
        unknown = sorted(placeholders - {"name", "description", *columns})
        if unknown:
            raise ConfigError(f"recipe.text_template: unknown placeholder(s) {unknown}; use {{name}}, "
                              f"{{description}} or a column of {ctx.input} ({columns})")
        if "{text}" not in p.question_template or p.question_template.count("{") != 1:
            raise ConfigError(f"recipe.question_template={p.question_template!r}: it must hold {{text}} once and no "
                              "other placeholder, e.g. 'Which team should handle this ticket? {text}'")
        has_column = p.label_column in columns
        labels = self._labels(ctx, rows, has_column)
        ids = product_ids(ctx.input, rows, p.id_column)
        if ctx.cfg.limit:
            ids, rows = ids[: ctx.cfg.limit], rows[: ctx.cfg.limit]

        candidates, corpus = [], []
        for product_id, row in zip(ids, rows, strict=True):
            cells = {column: cell_text(row.get(column)) for column in columns}
            name, description = cell_text(row[p.name_column]), cell_text(row[p.description_column])
            text = p.text_template.format_map({**cells, "name": name, "description": description})
            corpus.append({"id": product_id, "title": name, "text": description})
            candidates.append({"question": p.question_template.format(text=text), "_product": product_id, "_text": text,
                               "_label": cells.get(p.label_column, "") if has_column else ""})
        # Duplicate products would sit on both sides of the split; dropping them first also saves teacher calls.
        candidates = ctx.quality.dedupe(candidates, lambda r: r["question"])

        ctx.generator.remember_prompt("departments.system", SYSTEM)
        ctx.generator.remember_prompt("departments.user", USER)
        schema = label_schema(labels)
        replies = ctx.generator.run("departments.label", {
            c["_product"]: GenRequest(
                messages=({"role": "system", "content": SYSTEM},
                          {"role": "user", "content": USER.format(text=c["_text"], labels=json.dumps(labels))}),
                schema=schema,
            )
            for c in candidates if not c["_label"]
        })

        allowed = set(labels)
        records = []
        for candidate in candidates:
            if candidate["_label"]:
                label, source = candidate["_label"], "column"
                if label not in allowed:
                    ctx.quality.drop("column_label_not_in_list")
                    continue
            else:
                reply, source = replies[candidate["_product"]], "teacher"
                if isinstance(reply, GenFailure):
                    ctx.quality.drop("generation_failed")
                    continue
                try:
                    label = parse_json(reply).get("label")
                except (ValueError, AttributeError):
                    label = None
                if not isinstance(label, str):
                    ctx.quality.drop("invalid_json")
                    continue
                label = label.strip()
                if label not in allowed:
                    ctx.quality.drop("label_not_in_list")
                    continue
            records.append({"question": candidate["question"], "answer": label,
                            "source_doc_ids": [candidate["_product"]], "context": "",
                            "_label": label, "_source": source})
        train, evaluation = split_stratified(records, lambda r: r["_label"], ctx.cfg.eval_fraction, ctx.cfg.seed)
        if not evaluation:
            raise GenError(f"only {len(records)} labelled products are left, too few to split: eval needs "
                           "a label with at least two products")
        warnings = check_label_split(labels, train, evaluation, lambda r: r["_label"])

        def label_counts(part: list[dict]) -> dict[str, int]:
            counts = Counter(r["_label"] for r in part)
            return {label: counts[label] for label in labels}

        return DatasetOutput(
            task=self.task,
            train=number_records(train, ctx.cfg.name, "train"),
            eval=number_records(evaluation, ctx.cfg.name, "eval"),
            corpus=corpus,
            extra_files={"labels.json": {"labels": labels, "counts": label_counts(records)}},
            warnings=warnings,
            report={
                "products": len(corpus),
                "labels": labels,
                "labels_from": "recipe.labels" if p.labels is not None else f"column '{p.label_column}'",
                "label_counts": {"train": label_counts(train), "eval": label_counts(evaluation)},
                "label_source": {"column": sum(r["_source"] == "column" for r in records),
                                 "teacher": sum(r["_source"] == "teacher" for r in records),
                                 "asked_teacher": len(replies)},
            },
        )

    def _labels(self, ctx: RecipeContext, rows: list[dict], has_column: bool) -> list[str]:
        p = ctx.params
        if p.labels is not None:
            labels = list(dict.fromkeys(str(label).strip() for label in p.labels if str(label).strip()))
        elif not has_column:
            raise ConfigError(f"recipe.labels: the catalog {ctx.input} has no '{p.label_column}' column, so list "
                              "the allowed labels, e.g. recipe.labels=[Kitchen,Garden,Office] (or set "
                              "recipe.label_column to the column that holds them)")
        else:
            labels = sorted({cell_text(row.get(p.label_column)) for row in rows} - {""})
        if len(labels) < 2:
            raise ConfigError(f"recipe.labels: a classification set needs at least two labels (got {labels})")
        return labels
