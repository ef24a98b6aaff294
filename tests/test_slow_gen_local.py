"""doc_qa on the in-process backend with the embedded SmolLM2 on two documents (about a minute on a CPU)."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from harness.core.config import DataConfig
from harness.core.data import load_dataset

pytestmark = pytest.mark.slow
DOCS = REPO / "harness" / "samples" / "hr_handbook" / "docs"
NUM_PREDICT = 200


def test_doc_qa_with_the_embedded_model_and_no_server(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("annual-leave.md", "expenses.md"):
        shutil.copy(DOCS / name, docs / name)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "datasets_gen", "backend=local", f"input={docs}", f"output={out}", "name=two_docs",
         "progress=false", "recipe.questions_per_chunk=2", "recipe.chunk_chars=700",
         f"backend.num_predict={NUM_PREDICT}", "backend.batch_size=6", "limit=6",
         # This test is about the local backend's mechanics. A 135M teacher's answers are mostly not supported by
         # their chunk (one run: 3 of the 4 pairs that passed the length check, e.g. job-interview advice for a
         # leave policy), and the grounding filter rightly drops them, leaving too few records to split.
         "quality.min_answer_support=0"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    replies = [json.loads(line) for line in (out / ".work" / "doc_qa.pairs.jsonl").read_text().splitlines()]
    assert len(replies) == 6
    # Schema-constrained decoding: a reply is valid JSON unless it ran out of tokens before closing it.
    for reply in replies:
        try:
            assert isinstance(json.loads(reply["text"])["pairs"], list)
        except json.JSONDecodeError:
            assert reply["completion_tokens"] >= NUM_PREDICT, reply
    card = json.loads((out / "card.json").read_text())
    assert card["backend"] == {"kind": "local", "model": "smollm2_135m", "digest": None, "host": None,
                               "options": {"temperature": 0.7, "seed": 42, "num_predict": NUM_PREDICT,
                                           "hardware": "cpu"}}
    data = load_dataset(DataConfig(name="two_docs", dir=str(out)))
    assert len(data.train) == card["counts"]["train"] >= 1 and len(data.eval) == card["counts"]["eval"] >= 1
    doc_of = {c["id"]: c["doc_id"] for c in map(json.loads, (out / "corpus.jsonl").read_text().splitlines())}
    train_docs = {doc_of[r.source_doc_ids[0]] for r in data.train}
    eval_docs = {doc_of[r.source_doc_ids[0]] for r in data.eval}
    assert train_docs and eval_docs and not train_docs & eval_docs
    assert card["counts"]["dropped"] == sum(card["dropped"].values())
