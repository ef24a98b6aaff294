"""catalog_recs end to end (python -m datasets_gen against the Ollama-API test server), and its classifier."""

import csv
import hashlib
import json
import re
import subprocess
import sys

import pytest
from conftest import REPO
from ollama_server import OllamaTestServer
from teachers_recs import FAR_PRODUCT, catalog_recs_teacher

from harness.core.config import DataConfig
from harness.core.data import load_dataset

TEACHER = "teacher:8b"
CATALOG = [
    ("11", "Thermo Flask 500", "Vacuum-insulated stainless steel bottle, 500 ml, keeps drinks hot for 12 hours.",
     "keeping coffee hot on a long commute"),
    ("12", "Cork Yoga Mat", "Non-slip cork exercise mat, 6 mm thick, with a carry strap.",
     "stretching and yoga practice at home"),
    ("13", "Lumen Desk Lamp", "Dimmable LED desk lamp with an adjustable arm and warm light settings.",
     "reading late at night without eye strain"),
    ("14", "Quiet Wave Headphones", "Over-ear wireless headphones with active noise cancelling and a 30 hour battery.",
     "blocking out chatter in an open-plan office"),
    ("15", "Santoku Chef Knife", "Seven-inch Japanese steel kitchen knife for slicing vegetables and fish.",
     "chopping vegetables quickly for dinner"),
    ("16", "Trail 30 Backpack", "Thirty litre hiking backpack with a rain cover and a padded hip belt.",
     "carrying gear on a day hike in the mountains"),
    ("17", "Rapid Boil Kettle", "Electric kettle of 1.7 litres that boils water in three minutes, with auto shut-off.",
     "making tea quickly in the morning"),
    ("18", "Merino Trek Socks", "Cushioned merino wool socks that stay warm and dry on long walks.",
     "keeping feet warm and dry while walking in the rain"),
]
STEPS = ("describe", "paraphrase", "questions", "recommend", "expand")
CITATION = re.compile(r"\(closest product: (.+?): id (\w+)\)")


def gen(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datasets_gen", "progress=false", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One run, then a second one that must find every reply (and every embedding) checkpointed."""
    tmp = tmp_path_factory.mktemp("catalog_recs")
    catalog = tmp / "catalog.csv"
    with catalog.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "description", "use"])
        writer.writerows(CATALOG)
    out = tmp / "recs"
    with OllamaTestServer({TEACHER: catalog_recs_teacher}) as server:
        args = [f"input={catalog}", f"output={out}", "recipe=catalog_recs", "name=recs", f"backend.host={server.host}",
                f"backend.model={TEACHER}", "backend.backoff_s=0"]
        first = gen(*args)
        assert first.returncode == 0, first.stderr[-3000:]
        chats = server.requests_to("/api/chat")
        first_card = json.loads((out / "card.json").read_text())
        second = gen(*args)
        assert second.returncode == 0, second.stderr[-3000:]
        resent = len(server.requests_to("/api/chat")) - len(chats)
    return {"out": out, "catalog": catalog, "chats": chats, "first_card": first_card, "resent": resent,
            "card": json.loads((out / "card.json").read_text()),
            "mappings": json.loads((out / "mappings.json").read_text())}


def test_dataset_loads_and_cites_real_products(built):
    out, card = built["out"], built["card"]
    names = {pid: name for pid, name, _, _ in CATALOG}
    data = load_dataset(DataConfig(name="recs", dir=str(out)))  # the harness accepts it as is
    assert card["task"] == "recommendation" and card["recipe"]["name"] == "catalog_recs"
    assert len(data.train) == card["counts"]["train"] > 0 and len(data.eval) == card["counts"]["eval"] > 0
    assert set(data.corpus) == set(names) and all(data.corpus[pid]["title"] == names[pid] for pid in names)
    for record in data.train + data.eval:
        cited = CITATION.findall(record.answer)
        assert cited, record.answer
        assert all(names[pid] == name for name, pid in cited)  # every id exists and carries its own name
        assert list(record.source_doc_ids) == [pid for _, pid in cited]
        assert all(data.corpus[pid]["text"] in record.context for pid in record.source_doc_ids)
        assert FAR_PRODUCT not in record.answer
    # Split by the question's origin product: no need appears on both sides.
    assert not {r.question for r in data.train} & {r.question for r in data.eval}
    assert len(card["report"]["eval_products"]) == 2
    assert list(card["sources"].values()) == [hashlib.sha256(built["catalog"].read_bytes()).hexdigest()]
    assert set(card["prompts"]) >= {f"catalog_recs.{s}.user" for s in STEPS}


def test_each_step_sends_the_expected_requests(built):
    card, report = built["card"], built["card"]["report"]
    generation = built["first_card"]["generation"]
    n = len(CATALOG)
    expected = {"describe": n, "paraphrase": n, "questions": n, "recommend": 2 * n,
                "expand": report["recommendations"]}
    assert {s: generation[f"catalog_recs.{s}"]["generated"] for s in STEPS} == expected
    assert len(built["chats"]) == sum(expected.values())
    schemas = [c["body"].get("format") for c in built["chats"]]
    required = [tuple(f["required"]) for f in schemas if isinstance(f, dict)]
    assert required.count(("recommendations",)) == 2 * n and required.count(("variants",)) == n
    assert required.count(("questions",)) == n and schemas.count(None) == n + report["recommendations"]
    assert report["products"] == n and report["variants"] == 4 * n and report["questions"] == 2 * n
    assert report["mapped"] + report["dropped"] == report["recommendations"]
    assert card["counts"]["dropped"] == sum(card["dropped"].values())


def test_classifier_accuracy_is_reported_and_high(built):
    classifier = built["card"]["report"]["classifier"]
    assert classifier["kind"] == "nearest_centroid_cosine" and classifier["n_products"] == len(CATALOG)
    assert classifier["n_heldout"] == len(CATALOG)  # 4 variants x 0.25 = one held out per product
    assert classifier["accuracy"] >= 0.75
    # Every recommendation of a catalog product maps back to that very product, a name given loosely included.
    catalog_recs = [m for m in built["mappings"] if m["recommended"] != FAR_PRODUCT]
    loose = {"Thermo Flask": "Thermo Flask 500"}
    assert catalog_recs and all(m["kept"] and m["product_name"] == loose.get(m["recommended"], m["recommended"])
                                for m in catalog_recs)
    assert any(m["recommended"] == "Thermo Flask" for m in catalog_recs)
    assert min(m["similarity"] for m in catalog_recs) >= 0.6


def test_far_recommendation_is_dropped_as_no_close_product(built):
    card, mappings = built["card"], built["mappings"]
    far = [m for m in mappings if m["recommended"] == FAR_PRODUCT]
    assert len(far) == 2  # the two hiking questions
    assert all(not m["kept"] and m["similarity"] < 0.45 for m in far)  # recorded, with its similarity
    assert card["dropped"]["no_close_product"] == 2 == card["report"]["dropped"]


def test_second_run_sends_nothing(built):
    assert built["resent"] == 0
    generation = built["card"]["generation"]
    assert all(generation[f"catalog_recs.{s}"]["generated"] == 0 for s in STEPS)
    assert all(generation[f"catalog_recs.{s}"]["reused"] == built["first_card"]["generation"][f"catalog_recs.{s}"]
               ["generated"] for s in STEPS)
    assert list((built["out"] / ".work").glob("catalog_recs.embeddings-*.npz"))
    assert built["card"]["report"] == built["first_card"]["report"]


# ---- the classifier on its own ----------------------------------------------------------------------------------

def test_centroid_classifier_predicts_held_out_paraphrases():
    from datasets_gen.recipes.catalog_recs import CentroidClassifier, Embedder, holdout_accuracy

    embedder = Embedder()
    texts = {
        "flask": ["an insulated bottle that keeps coffee hot all day", "vacuum flask for warm drinks on the go"],
        "mat": ["a non-slip mat for yoga and stretching", "cushioned exercise mat for pilates at home"],
        "lamp": ["an LED lamp for reading at your desk", "adjustable desk light with a dimmer"],
    }
    held = {"flask": ["a thermos to keep my tea warm"], "mat": ["something soft to do yoga on"],
            "lamp": ["a light for my study table"]}
    result = holdout_accuracy(texts, held, embedder.encode)
    assert result == {"accuracy": 1.0, "n_heldout": 3, "n_products": 3}
    labels = [label for label, items in texts.items() for _ in items]
    classifier = CentroidClassifier.fit(embedder.encode([t for items in texts.values() for t in items]), labels)
    (label, close), (_, far) = classifier.predict(embedder.encode(["a thermos for hot soup", "a tax return form"]))
    assert label == "flask" and close > 0.45 > far


@pytest.mark.parametrize(
    ("arg", "message"),
    [("recipe.holdout_fraction=1.5", "recipe.holdout_fraction: must be in [0, 1)"),
     ("recipe.embedding_model=/nonexistent/model", "/nonexistent/model is not a sentence-transformers model folder")],
)
def test_bad_parameters_fail_before_any_request(tmp_path, arg, message):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"id": i, "name": n, "description": d, "use": u}) + "\n"
                               for i, n, d, u in CATALOG))
    with OllamaTestServer({TEACHER: catalog_recs_teacher}) as server:
        proc = gen(f"input={catalog}", f"output={tmp_path / 'out'}", "recipe=catalog_recs",
                   f"backend.host={server.host}", f"backend.model={TEACHER}", arg)
        assert not server.requests_to("/api/chat")
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
