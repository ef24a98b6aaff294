"""datasets_gen end to end through the official ollama client against the Ollama-API test server."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from ollama_server import OllamaTestServer
from teachers import doc_qa_teacher

from datasets_gen.config import QualityConfig
from datasets_gen.output import leakage_report, split_by_group, split_stratified
from datasets_gen.quality import QualityFilter, parse_json
from datasets_gen.sources import chunk_text, read_catalog
from harness.core.config import DataConfig
from harness.core.data import load_dataset

DOCS = REPO / "harness" / "samples" / "hr_handbook" / "docs"
TEACHER = "teacher:8b"


def gen(*args: str, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datasets_gen", "progress=false", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **popen)


def doc_qa_args(server, out: Path, *extra: str) -> list[str]:
    return [f"input={DOCS}", f"output={out}", "name=handbook", f"backend.host={server.host}",
            f"backend.model={TEACHER}", "backend.backoff_s=0", "recipe.chunk_chars=600", *extra]


def test_doc_qa_writes_a_dataset_the_harness_reads(tmp_path):
    out = tmp_path / "handbook"
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        proc = gen(*doc_qa_args(server, out))
        chats = server.requests_to("/api/chat")
        host, digest = server.host, server.digest(TEACHER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out / "card.json").read_text())
    corpus = [json.loads(line) for line in (out / "corpus.jsonl").read_text().splitlines()]
    assert len(chats) == len(corpus) == card["counts"]["corpus"]
    assert {c["doc_id"] for c in corpus} == {p.stem for p in DOCS.glob("*.md")}
    # Structured output: every request carried the JSON schema and the configured options.
    assert all(c["body"]["format"]["required"] == ["pairs"] for c in chats)
    assert all(c["body"]["options"]["seed"] == 42 and c["body"]["stream"] is False for c in chats)

    data = load_dataset(DataConfig(name="handbook", dir=str(out)))  # the harness accepts it as is
    assert len(data.train) == card["counts"]["train"] > 0 and len(data.eval) == card["counts"]["eval"] > 0
    chunks = {c["id"]: c for c in corpus}
    for record in data.train + data.eval:
        (chunk_id,) = record.source_doc_ids
        assert record.context == chunks[chunk_id]["text"] and record.answer in record.context
    train_docs = {chunks[r.source_doc_ids[0]]["doc_id"] for r in data.train}
    eval_docs = {chunks[r.source_doc_ids[0]]["doc_id"] for r in data.eval}
    assert not train_docs & eval_docs and sorted(eval_docs) == card["report"]["eval_documents"]

    assert card["backend"] == {"kind": "ollama", "model": TEACHER, "digest": digest, "host": host,
                               "options": {"temperature": 0.7, "seed": 42, "num_ctx": 8192, "num_predict": 512}}
    assert "ungrounded_answer" not in card["dropped"]  # the teacher answers with the passage's own sentences
    assert card["recipe"]["name"] == "doc_qa" and card["recipe"]["params"]["chunk_chars"] == 600
    assert set(card["prompts"]) == {"doc_qa.system", "doc_qa.user"} and len(card["prompts"]["doc_qa.user"]["sha256"]) == 64
    assert len(card["sources"]) == 10 and all(len(h) == 64 for h in card["sources"].values())
    assert card["generation"]["doc_qa.pairs"]["generated"] == len(corpus)
    assert card["leakage"]["eval_questions"] == len(data.eval)
    # Overlapping chunks give the same sentence twice: the duplicate questions are dropped and counted.
    assert card["counts"]["dropped"] == sum(card["dropped"].values())


def test_rerun_reuses_every_checkpointed_reply(tmp_path):
    out = tmp_path / "handbook"
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        assert gen(*doc_qa_args(server, out)).returncode == 0
        first = len(server.requests_to("/api/chat"))
        again = gen(*doc_qa_args(server, out))
        assert again.returncode == 0, again.stderr[-2000:]
        assert len(server.requests_to("/api/chat")) == first  # nothing re-sent
    card = json.loads((out / "card.json").read_text())
    assert card["generation"]["doc_qa.pairs"]["reused"] == first


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "handbook"
    with OllamaTestServer({TEACHER: doc_qa_teacher}, delay_s=0.3) as server:
        proc = subprocess.Popen([sys.executable, "-m", "datasets_gen", "progress=false",
                                 *doc_qa_args(server, out, "backend.concurrency=2")], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        checkpoint = out / ".work" / "doc_qa.pairs.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and (not checkpoint.exists() or len(checkpoint.read_text().splitlines()) < 4):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = len(checkpoint.read_text().splitlines())
        assert saved >= 4 and not (out / "card.json").exists()
        sent_before = len(server.requests_to("/api/chat"))
        resumed = gen(*doc_qa_args(server, out, "backend.concurrency=2"))
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        sent_after = len(server.requests_to("/api/chat")) - sent_before
    card = json.loads((out / "card.json").read_text())
    total = card["counts"]["corpus"]
    assert card["generation"]["doc_qa.pairs"]["reused"] == saved
    assert sent_after == total - saved


def test_failed_requests_are_counted_then_retried_by_the_next_run(tmp_path):
    out = tmp_path / "handbook"
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        server.inject("http500", times=3, path="/api/chat")
        first = gen(*doc_qa_args(server, out, "backend.retries=0", "backend.concurrency=1"))
        assert first.returncode == 0, first.stderr[-2000:]
        card = json.loads((out / "card.json").read_text())
        assert card["dropped"]["generation_failed"] == 3
        failures = card["generation"]["doc_qa.pairs"]["failures"]
        assert sum(failures.values()) == 3 and all(reason.startswith("HTTP 500") for reason in failures)
        before = len(server.requests_to("/api/chat"))
        second = gen(*doc_qa_args(server, out, "backend.retries=0", "backend.concurrency=1"))
        assert second.returncode == 0
        assert len(server.requests_to("/api/chat")) - before == 3
    card = json.loads((out / "card.json").read_text())
    assert "generation_failed" not in card["dropped"]


def test_transient_errors_are_retried(tmp_path):
    out = tmp_path / "handbook"
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        server.inject("http503", times=2, path="/api/chat")
        server.inject("drop", times=1, path="/api/chat")
        proc = gen(*doc_qa_args(server, out, "backend.retries=3", "backend.concurrency=1"))
        asked = [r["body"] for r in server.requests_to("/api/chat")]
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((out / "card.json").read_text())
    assert "generation_failed" not in card["dropped"]
    # One request per chunk, plus one more for each fault: the first chunk was asked four times, the same request.
    assert len(asked) == card["counts"]["corpus"] + 3
    assert asked[0] == asked[1] == asked[2] == asked[3] != asked[4]


def test_no_server_tells_the_user_to_start_ollama(tmp_path):
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        host = server.host
    proc = gen(*doc_qa_args(type("S", (), {"host": host})(), tmp_path / "out"))
    assert proc.returncode == 2
    assert f"cannot reach Ollama at {host}: start it (`ollama serve`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_model_tells_the_user_to_pull_it(tmp_path):
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        proc = gen(*doc_qa_args(server, tmp_path / "out", "backend.model=llama3:70b"))
    assert proc.returncode == 2
    assert "run `ollama pull llama3:70b`" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["input=/nonexistent/docs"], "input: /nonexistent/docs does not exist"),
        (["recipe.name=poems"], "recipe.name: unknown recipe 'poems'"),
        (["recipe.chunk_chars=big"], "recipe.chunk_chars"),
        (["+recipe.colour=red"], "recipe.colour"),
        (["eval_fraction=1.5"], "eval_fraction: must be in (0, 1)"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, args, message):
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        proc = gen(*doc_qa_args(server, tmp_path / "out"), *args)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_empty_folder_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        proc = gen(*doc_qa_args(server, tmp_path / "out"), f"input={tmp_path / 'docs'}")
    assert proc.returncode == 2 and "holds no .md, .txt or .pdf files" in proc.stderr


# ---- units -----------------------------------------------------------------------------------------------------

def test_chunks_respect_size_and_overlap():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 30 for i in range(6))
    chunks = chunk_text(text, max_chars=400, overlap_chars=200)
    assert all(len(c) <= 400 for c in chunks)
    assert [c.split(".")[0] for c in chunks] == [f"Paragraph {i}" for i in range(5)]
    assert all(chunks[i].split("\n\n")[-1] == chunks[i + 1].split("\n\n")[0] for i in range(4))
    assert chunk_text(text, 400, 0)[1].startswith("Paragraph 2")


def test_quality_filter_reasons_and_dedup():
    quality = QualityFilter(QualityConfig())
    assert quality.text_problem("", "answer") == "empty_answer"
    assert quality.text_problem("Yes", "answer") == "answer_too_short"
    assert quality.text_problem("As an AI language model, I cannot say.", "answer") == "refusal_in_answer"
    assert quality.text_problem("You get 25 days of leave.", "answer") is None
    items = ["How many days of leave do I get each year?", "how many days of LEAVE do I get each year",
             "How many days of leave do I get each year in Leeds?", "Who approves my expenses?"]
    assert quality.dedupe(items, str) == [items[0], items[3]]
    assert quality.dropped == {"exact_duplicate": 1, "near_duplicate": 1}


def test_parse_json_tolerates_fences_and_prose_only():
    assert parse_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json('Here you go: {"a": [1, 2]} Enjoy!') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        parse_json("no json here")


def test_leakage_report_flags_overlapping_eval_questions():
    train = ["How many days of annual leave do I get?", "Who approves expense claims?"]
    evaluation = ["How many days of annual leave do I get?", "What is the learning budget?"]
    report = leakage_report(train, evaluation, threshold=0.5)
    assert report["flagged"] == 1 and report["exact_duplicates"] == 1 and report["max_overlap"] == 1.0
    assert report["worst"][0]["closest_train"] == train[0]
    assert report["mean_max_overlap"] == 0.5


def test_splits_by_group_and_stratified():
    records = [{"doc": f"d{i % 5}", "label": "ab"[i % 2]} for i in range(40)]
    train, evaluation = split_by_group(records, lambda r: r["doc"], 0.2, seed=1)
    assert len({r["doc"] for r in evaluation}) == 1 and not {r["doc"] for r in train} & {r["doc"] for r in evaluation}
    train, evaluation = split_stratified(records, lambda r: r["label"], 0.25, seed=1)
    assert sorted(r["label"] for r in evaluation) == ["a"] * 5 + ["b"] * 5 and len(train) == 30


def test_catalog_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("id,name\n1,Desk\n")
    with pytest.raises(Exception, match=r"catalog.csv: the catalog lacks required column\(s\) \['description'\]"):
        read_catalog(path, ["id", "name", "description"])


def _chunk_count(chunk_chars: int = 600) -> int:
    return sum(len(chunk_text(p.read_text(encoding="utf-8"), chunk_chars, 200)) for p in DOCS.glob("*.md"))


def test_limit_samples_across_documents(tmp_path):
    """limit=5 takes chunks from five documents (not five chunks of the first), so the by-document split works."""
    out = tmp_path / "handbook"
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        proc = gen(*doc_qa_args(server, out, "limit=5"))
        chats = server.requests_to("/api/chat")
    assert proc.returncode == 0, proc.stderr[-3000:]
    corpus = [json.loads(line) for line in (out / "corpus.jsonl").read_text().splitlines()]
    assert len(corpus) == len(chats) == 5 and len({c["doc_id"] for c in corpus}) == 5


def test_a_split_that_cannot_work_is_refused_before_any_request(tmp_path):
    one_doc = tmp_path / "docs"
    one_doc.mkdir()
    (one_doc / "only.md").write_text((DOCS / "annual-leave.md").read_text(encoding="utf-8"), encoding="utf-8")
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        proc = gen(*doc_qa_args(server, tmp_path / "out"), f"input={one_doc}")
        chats = server.requests_to("/api/chat")
    assert proc.returncode == 2 and chats == []
    assert "cannot split by document" in proc.stderr and "at least two" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_generation_options_are_part_of_the_checkpoint_key(tmp_path):
    """Replies made under num_predict=512 are not reused under 1024 (they may have been cut): all re-sent."""
    out = tmp_path / "handbook"
    with OllamaTestServer({TEACHER: doc_qa_teacher}) as server:
        assert gen(*doc_qa_args(server, out, "limit=4")).returncode == 0
        first = len(server.requests_to("/api/chat"))
        again = gen(*doc_qa_args(server, out, "limit=4", "backend.num_predict=1024"))
        chats = server.requests_to("/api/chat")
    assert again.returncode == 0, again.stderr[-2000:]
    assert first == 4 and len(chats) == 8
    assert all(c["body"]["options"]["num_predict"] == 1024 for c in chats[4:])
    card = json.loads((out / "card.json").read_text())
    assert card["backend"]["options"]["num_predict"] == 1024
    assert card["generation"]["doc_qa.pairs"]["reused"] == 0 and card["generation"]["doc_qa.pairs"]["generated"] == 4


def _off_topic_teacher(body: dict) -> str:
    """Half the answers come from the passage, half from elsewhere (a small teacher writing JavaScript)."""
    grounded = json.loads(doc_qa_teacher(body))["pairs"]
    made_up = {"question": "How do I declare a constant in JavaScript?",
               "answer": "Use the const keyword followed by identifier, assignment operator, and expression."}
    return json.dumps({"pairs": grounded[:1] + [made_up]})


def test_answers_the_chunk_does_not_support_are_dropped_and_counted(tmp_path):
    out = tmp_path / "handbook"
    with OllamaTestServer({TEACHER: _off_topic_teacher}) as server:
        proc = gen(*doc_qa_args(server, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out / "card.json").read_text())
    chunks = card["counts"]["corpus"]
    assert card["dropped"]["ungrounded_answer"] == chunks
    records = [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
               for line in (out / name).read_text().splitlines()]
    assert records and not [r for r in records if "JavaScript" in r["question"]]


def test_grounding_measure():
    quality = QualityFilter(QualityConfig())
    passage = "Full-time employees receive 25 days of paid annual leave per holiday year."
    assert quality.grounding_problem("Employees receive 25 days of paid leave each year.", passage) is None
    assert quality.grounding_problem("Use the const keyword to declare constants.", passage) == "ungrounded_answer"
    assert QualityFilter(QualityConfig(min_answer_support=0.0)).grounding_problem("const keyword", passage) is None
