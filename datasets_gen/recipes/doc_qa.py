"""doc_qa: a folder of documents → chunks → k grounded question/answer pairs per chunk.

Each record cites the chunk it came from (`source_doc_ids`, ids in corpus.jsonl) and carries that chunk
as `context`, so retrieval can be scored later. Train and eval are split by source *document*: eval
asks about documents the model never saw in training pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets_gen.backends import GenFailure, GenRequest
from datasets_gen.output import DatasetOutput, check_splittable, number_records, split_by_group, spread_limit
from datasets_gen.quality import parse_json
from datasets_gen.recipes import RecipeContext, register_recipe
from datasets_gen.sources import chunk_text, read_documents

SYSTEM = (
    "You write question and answer pairs for training an assistant. Every answer must be stated in the "
    "passage you are given; never use outside knowledge."
)
USER = (
    "Passage from the document \"{title}\":\n\n{chunk}\n\n"
    "Write {k} different questions that {audience} might ask and that this passage answers, each with a short, "
    "direct answer (one or two sentences) taken only from the passage. Return JSON: "
    '{{"pairs": [{{"question": "...", "answer": "..."}}]}}'
)
# Length caps keep a small or rambling teacher from running out of tokens mid-JSON.
SCHEMA = {
    "type": "object",
    "properties": {
        "pairs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "question": {"type": "string", "maxLength": 200},
                    "answer": {"type": "string", "maxLength": 400},
                },
                "required": ["question", "answer"],
            },
        }
    },
    "required": ["pairs"],
}


@register_recipe("doc_qa")
class DocQA:
    task = "qa"

    @dataclass
    class Params:
        chunk_chars: int = 1500
        chunk_overlap: int = 200
        questions_per_chunk: int = 3
        audience: str = "a reader of these documents"
        min_answer_words: int = 2
        max_answer_words: int = 80

    def build(self, ctx: RecipeContext) -> DatasetOutput:
        p = ctx.params
        documents = read_documents(ctx.input)
        ctx.sources.update({d.path: d.sha256 for d in documents})
        corpus = []
        for doc in documents:
            for index, chunk in enumerate(chunk_text(doc.text, p.chunk_chars, p.chunk_overlap)):
                corpus.append({"id": f"{doc.id}#{index}", "doc_id": doc.id, "title": doc.title, "text": chunk})
        corpus = spread_limit(corpus, ctx.cfg.limit, lambda c: c["doc_id"])
        check_splittable({c["doc_id"] for c in corpus}, "document")
        ctx.generator.remember_prompt("doc_qa.system", SYSTEM)
        ctx.generator.remember_prompt("doc_qa.user", USER)
        requests = {
            chunk["id"]: GenRequest(
                messages=(
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": USER.format(title=chunk["title"], chunk=chunk["text"],
                                                            k=p.questions_per_chunk, audience=p.audience)},
                ),
                schema=SCHEMA,
            )
            for chunk in corpus
        }
        replies = ctx.generator.run("doc_qa.pairs", requests)

        candidates = []
        for chunk in corpus:
            reply = replies[chunk["id"]]
            if isinstance(reply, GenFailure):
                ctx.quality.drop("generation_failed")
                continue
            try:
                pairs = parse_json(reply).get("pairs")
                if not isinstance(pairs, list):
                    raise ValueError
            except (ValueError, AttributeError):
                ctx.quality.drop("invalid_json")
                continue
            for pair in pairs[: p.questions_per_chunk]:
                if not isinstance(pair, dict):
                    ctx.quality.drop("invalid_pair")
                    continue
                question, answer = pair.get("question"), pair.get("answer")
                problem = ctx.quality.text_problem(question, "question") or ctx.quality.text_problem(
                    answer, "answer", p.min_answer_words, p.max_answer_words)
                problem = problem or ctx.quality.grounding_problem(answer, chunk["text"])
                if problem:
                    ctx.quality.drop(problem)
                    continue
                candidates.append({"question": question.strip(), "answer": answer.strip(),
                                   "source_doc_ids": [chunk["id"]], "context": chunk["text"],
                                   "_doc": chunk["doc_id"]})
        records = ctx.quality.dedupe(candidates, lambda r: r["question"])
        train, evaluation = split_by_group(records, lambda r: r["_doc"], ctx.cfg.eval_fraction, ctx.cfg.seed)
        return DatasetOutput(
            task=self.task,
            train=number_records(train, ctx.cfg.name, "train"),
            eval=number_records(evaluation, ctx.cfg.name, "eval"),
            corpus=corpus,
            report={"documents": len(documents), "chunks": len(corpus),
                    "eval_documents": sorted({r["_doc"] for r in evaluation})},
        )
