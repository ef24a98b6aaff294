"""The catalog recipes (product_descriptions, departments) end to end through the Ollama-API test server."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from ollama_server import OllamaTestServer
from teachers import department_teacher, product_description_teacher

from harness.core.config import DataConfig
from harness.core.data import load_dataset

TEACHER = "teacher:8b"
STYLE = "second person, benefits first, no superlatives, no prices"
LONG_FEATURES = (
    "water resistant housing, folding handle, three brightness levels, red night mode, magnetic base, hanging hook, "
    "rechargeable battery lasting twenty hours, charging cable included, shock proof rubber corners, warm white light, "
    "dimmer dial, low battery warning light, weighs four hundred grams, two year guarantee, spare diffuser, carry pouch"
)
# id, name, description, colour, material, features: two products with a long feature list (over the token
# budget below), one the teacher refuses to rewrite ("Mystery ...").
PRODUCTS = [
    ("P01", "Oak Desk",
     "A sturdy desk of solid oak with two drawers and a cable tray for a tidy home office.",
     "brown", "oak", ""),
    ("P02", "Steel Kettle",
     "A quick kettle that boils a full litre in three minutes and switches itself off.",
     "silver", "steel", ""),
    ("P03", "Linen Apron",
     "A long apron with deep pockets and adjustable straps that keeps spills off your clothes.",
     "sand", "linen", ""),
    ("P04", "Wool Throw",
     "A soft blanket woven from local wool, warm enough for cold evenings on the sofa.",
     "grey", "wool", ""),
    ("P05", "Glass Vase",
     "A tall hand blown vase with a heavy base that stands steady with long stems.",
     "clear", "glass", ""),
    ("P06", "Bamboo Tray",
     "A light serving tray with raised edges and cut out handles for breakfast in bed.",
     "natural", "bamboo", ""),
    ("P07", "Canvas Tote",
     "A roomy shopping bag with an inner pocket and strong handles for heavy loads.",
     "navy", "canvas", ""),
    ("P08", "Mystery Box", "A surprise selection of small homeware items chosen by our team.", "mixed", "mixed", ""),
    ("P09", "Garden Bench",
     "A two seat bench for the patio that weathers to a silver grey.",
     "teak", "teak", LONG_FEATURES),
    ("P10", "Camping Lantern", "A bright lantern for the tent or the garden table.", "green", "plastic", LONG_FEATURES),
]
COLUMNS = ["id", "name", "description", "colour", "material", "features"]


def gen(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datasets_gen", "progress=false", f"backend.host={server.host}",
                           f"backend.model={TEACHER}", "backend.backoff_s=0", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def write_csv(path: Path, columns: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def user_prompt(request: dict) -> str:
    return request["body"]["messages"][-1]["content"]


def test_product_descriptions_two_passes_style_and_token_budget(tmp_path):
    catalog = write_csv(tmp_path / "catalog.csv", COLUMNS, PRODUCTS)
    out = tmp_path / "shop"
    args = ["recipe=product_descriptions", f"input={catalog}", f"output={out}", "name=shop",
            "recipe.student_model=tiny_random", "recipe.max_tokens=300"]
    with OllamaTestServer({TEACHER: product_description_teacher}) as server:
        proc = gen(server, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        card = json.loads((out / "card.json").read_text())
        chats = server.requests_to("/api/chat")
        again = gen(server, *args)  # a re-run: both steps' replies come from the checkpoints
        resent = len(server.requests_to("/api/chat")) - len(chats)

    # Two passes: a draft for every product, then a refine of every draft, carrying the draft and the style rules.
    drafts = [c for c in chats if "Draft description:" not in user_prompt(c)]
    refines = [c for c in chats if "Draft description:" in user_prompt(c)]
    assert len(drafts) == len(refines) == len(PRODUCTS) == len(chats) // 2
    gen_stats = card["generation"]
    assert gen_stats["product_descriptions.draft"]["generated"] == 10
    assert gen_stats["product_descriptions.refine"]["generated"] == 10
    assert card["report"]["drafted"] == card["report"]["refined"] == card["report"]["products"] == 10
    drafted = {product_description_teacher(c["body"]) for c in drafts}
    for refine in refines:
        prompt = user_prompt(refine)
        assert f"style rules: {STYLE}." in prompt and "between 40 and 120 words" in prompt
        assert any(f"Draft description:\n{d}\n" in prompt for d in drafted)
    assert all(c["body"].get("format") is None for c in chats)  # free text, no schema
    assert set(card["prompts"]) >= {"product_descriptions.draft_user", "product_descriptions.refine_user"}
    assert card["recipe"]["params"]["style"] == STYLE and len(card["sources"]) == 1

    # Drops: the refusal is too short, the two long products exceed the student's token budget.
    assert card["dropped"] == {"description_too_short": 1, "over_token_budget": 2}
    budget = card["report"]["token_budget"]
    assert card["report"]["dropped_over_budget"] == 2 and budget["student_model"] == "tiny_random"
    assert 0 < budget["kept_mean"] <= budget["kept_max"] <= 300

    data = load_dataset(DataConfig(name="shop", dir=str(out)))
    records = data.train + data.eval
    assert len(records) == 7 and data.eval and sorted(data.corpus) == [p[0] for p in PRODUCTS]
    by_id = {p[0]: p for p in PRODUCTS}
    assert sorted(r.source_doc_ids[0] for r in records) == ["P01", "P02", "P03", "P04", "P05", "P06", "P07"]
    for record in records:
        pid, name, description, colour, material, _ = by_id[record.source_doc_ids[0]]
        assert record.question == f"Write a product description for: {name}; colour: {colour}; material: {material}"
        assert record.context == description and record.answer.startswith(f"You get the {name}.")
        assert 40 <= len(record.answer.split()) <= 120
    assert not {r.source_doc_ids[0] for r in data.train} & {r.source_doc_ids[0] for r in data.eval}
    assert data.corpus["P01"]["title"] == "Oak Desk" and PRODUCTS[0][2] in data.corpus["P01"]["text"]

    assert again.returncode == 0 and resent == 0
    rerun = json.loads((out / "card.json").read_text())
    assert rerun["generation"]["product_descriptions.draft"]["reused"] == 10
    assert rerun["generation"]["product_descriptions.refine"]["reused"] == 10
    assert (out / "train.jsonl").read_text() and rerun["counts"] == card["counts"]


def test_product_descriptions_jsonl_with_smollm2_tokenizer_and_limit(tmp_path):
    rows = [{"id": pid, "name": name, "description": description, "colour": colour, "tags": ["home", material],
             "weight_kg": 1.5} for pid, name, description, colour, material, _ in PRODUCTS]
    catalog = write_jsonl(tmp_path / "catalog.jsonl", rows)
    out = tmp_path / "shop"
    with OllamaTestServer({TEACHER: product_description_teacher}) as server:
        proc = gen(server, "recipe=product_descriptions", f"input={catalog}", f"output={out}", "name=shop",
                   "limit=6", "recipe.attribute_columns=[colour,tags]")
        chats = server.requests_to("/api/chat")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out / "card.json").read_text())
    assert len(chats) == 12 and card["counts"]["corpus"] == 6  # limit: 6 products, two passes each
    data = load_dataset(DataConfig(name="shop", dir=str(out)))
    records = data.train + data.eval
    assert len(records) == 6
    assert records[0].question == "Write a product description for: Oak Desk; colour: brown; tags: home, oak"

    from datasets_gen.recipes.product_descriptions import count_tokens, load_student_tokenizer

    tokenizer = load_student_tokenizer("smollm2_135m")
    tokens = [count_tokens(tokenizer, r.question, r.answer) for r in records]
    budget = card["report"]["token_budget"]
    assert budget["student_model"] == "smollm2_135m" and budget["kept_max"] == max(tokens)
    assert budget["kept_mean"] == round(sum(tokens) / len(tokens), 1)


DEPARTMENT_ROWS = [  # (id, name, description, department or None: no key at all)
    ("D01", "Frying pan", "Non stick pan, 28 cm.", "Kitchen"),
    ("D02", "Chef knife", "Forged blade, 20 cm.", "Kitchen"),
    ("D03", "Kettle", "Boils one litre.", None),
    ("D04", "Tea mug", "Stoneware, 350 ml.", ""),
    ("D05", "Garden hose", "Twenty metres, with reel.", "Garden"),
    ("D06", "Leaf rake", "Steel tines.", "Garden"),
    ("D07", "Seed tray", "Twenty four cells.", "Garden"),
    ("D08", "Stapler", "Staples up to 30 sheets.", "Office"),
    ("D09", "Desk lamp", "LED, dimmable.", "Office"),
    ("D10", "Notebook", "A5, dotted pages.", ""),
    ("D11", "Toy robot", "Walks and beeps.", ""),
    ("D12", "Gizmo", "Does a bit of everything.", None),
]


def test_departments_labels_from_column_and_teacher(tmp_path):
    rows = []
    for pid, name, description, department in DEPARTMENT_ROWS:
        row = {"id": pid, "name": name, "description": description}
        if department is not None:
            row["department"] = department
        rows.append(row)
    catalog = write_jsonl(tmp_path / "catalog.jsonl", rows)
    out = tmp_path / "depts"
    with OllamaTestServer({TEACHER: department_teacher}) as server:
        proc = gen(server, "recipe=departments", f"input={catalog}", f"output={out}", "name=depts")
        chats = server.requests_to("/api/chat")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out / "card.json").read_text())
    labels = ["Garden", "Kitchen", "Office"]  # the column's distinct values

    # Only the rows without a label went to the teacher, each with the enum schema (structured output).
    asked = sorted(user_prompt(c).split("\n")[0] for c in chats)
    assert asked == ["Product: Gizmo: Does a bit of everything.", "Product: Kettle: Boils one litre.",
                     "Product: Notebook: A5, dotted pages.", "Product: Tea mug: Stoneware, 350 ml.",
                     "Product: Toy robot: Walks and beeps."]
    for chat in chats:
        assert chat["body"]["format"] == {"type": "object", "properties": {"label": {"type": "string", "enum": labels}},
                                          "required": ["label"]}
    assert card["dropped"] == {"invalid_json": 1, "label_not_in_list": 1}  # Gizmo's prose, the robot's "Toys"
    assert card["task"] == "classification"
    assert card["report"]["label_source"] == {"column": 7, "teacher": 3, "asked_teacher": 5}

    data = load_dataset(DataConfig(name="depts", dir=str(out)))
    answers = {r.source_doc_ids[0]: r for r in data.train + data.eval}
    expected = {pid: dept for pid, _, _, dept in DEPARTMENT_ROWS if dept} | {"D03": "Kitchen", "D04": "Kitchen",
                                                                            "D10": "Office"}
    assert {pid: r.answer for pid, r in answers.items()} == expected
    assert answers["D01"].question == "Which department does this product belong to? Frying pan: Non stick pan, 28 cm."
    assert answers["D01"].context == ""
    # Stratified: every label in eval; labels.json and the per-split report agree with the files.
    assert sorted({r.answer for r in data.eval}) == labels
    report = card["report"]["label_counts"]
    for split, records in (("train", data.train), ("eval", data.eval)):
        assert report[split] == {label: sum(r.answer == label for r in records) for label in labels}
    assert json.loads((out / "labels.json").read_text()) == {"labels": labels,
                                                             "counts": {"Garden": 3, "Kitchen": 4, "Office": 3}}


def test_departments_without_label_column_uses_the_labels_list(tmp_path):
    rows = [(pid, name, description) for pid, name, description, _ in DEPARTMENT_ROWS if pid not in ("D11", "D12")]
    catalog = write_csv(tmp_path / "catalog.csv", ["id", "name", "description"], rows)
    out = tmp_path / "depts"
    with OllamaTestServer({TEACHER: department_teacher}) as server:
        proc = gen(server, "recipe=departments", f"input={catalog}", f"output={out}", "name=depts",
                   "recipe.labels=[Office,Kitchen,Garden]", "recipe.text_template='{name}'")
        chats = server.requests_to("/api/chat")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(chats) == 10
    assert all(c["body"]["format"]["properties"]["label"]["enum"] == ["Office", "Kitchen", "Garden"] for c in chats)
    card = json.loads((out / "card.json").read_text())
    assert card["report"]["label_source"] == {"column": 0, "teacher": 10, "asked_teacher": 10}
    assert json.loads((out / "labels.json").read_text())["labels"] == ["Office", "Kitchen", "Garden"]
    data = load_dataset(DataConfig(name="depts", dir=str(out)))
    assert data.eval[0].question.startswith("Which department does this product belong to? ")
    assert ":" not in data.eval[0].question.split("? ", 1)[1]  # text_template={name}


def test_departments_asks_the_question_the_user_words(tmp_path):
    """Tickets, leads or documents are not products: recipe.question_template words the question around {text}."""
    rows = [{"id": f"T{i:02d}", "name": f"Ticket {i}", "description": f"Problem number {i}.",
             "department": ("Network", "Printing", "Accounts")[i % 3]} for i in range(12)]
    catalog = write_jsonl(tmp_path / "tickets.jsonl", rows)
    out = tmp_path / "tickets"
    proc = subprocess.run([sys.executable, "-m", "datasets_gen", "progress=false", "recipe=departments",
                           f"input={catalog}", f"output={out}", "name=tickets",
                           "recipe.question_template='Which team should handle this ticket? {text}'"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = load_dataset(DataConfig(name="tickets", dir=str(out)))
    questions = {r.question for r in data.train + data.eval}
    assert questions == {f"Which team should handle this ticket? Ticket {i}: Problem number {i}." for i in range(12)}


@pytest.mark.parametrize(
    ("recipe", "columns", "args", "message"),
    [
        ("product_descriptions", ["id", "name", "colour"], [],
         "catalog.csv: the catalog lacks required column(s) ['description']"),
        ("departments", ["id", "title", "description"], [],
         "catalog.csv: the catalog lacks required column(s) ['name']"),
        ("product_descriptions", COLUMNS, ["recipe.attribute_columns=[colour,size]"],
         "the catalog lacks column(s) ['size'] named in recipe.attribute_columns"),
        ("product_descriptions", COLUMNS, ["recipe.student_model=gpt9"], "recipe.student_model: model=gpt9"),
        ("departments", ["id", "name", "description"], [], "recipe.labels: the catalog"),
        ("departments", COLUMNS, ["recipe.text_template='{name} ({size})'"],
         "recipe.text_template: unknown placeholder"),
        ("departments", COLUMNS, ["recipe.question_template='Which team handles this?'"],
         "recipe.question_template='Which team handles this?': it must hold {text} once"),
    ],
)
def test_bad_catalog_input_gets_a_clear_error(tmp_path, recipe, columns, args, message):
    catalog = write_csv(tmp_path / "catalog.csv", columns, [row[: len(columns)] for row in PRODUCTS])
    with OllamaTestServer({TEACHER: department_teacher}) as server:
        proc = gen(server, f"recipe={recipe}", f"input={catalog}", f"output={tmp_path / 'out'}", *args)
        chats = server.requests_to("/api/chat")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not chats  # nothing paid for before the mistake is reported


def test_departments_labelled_by_column_needs_no_backend(tmp_path):
    """Every row labelled in the catalog: no request to make, so no server is asked for (none runs here)."""
    rows = [{"id": f"P{i:02d}", "name": f"Item {i}", "description": f"Thing number {i}.",
             "department": ("Garden", "Kitchen", "Office")[i % 3]} for i in range(12)]
    catalog = write_jsonl(tmp_path / "catalog.jsonl", rows)
    # No Ollama at that address, and no such local model config: either backend, once checked, would fail.
    for backend in ("backend.host=http://127.0.0.1:9", "backend=local backend.model=no_such_model"):
        out = tmp_path / backend.split("=")[1].split()[0]
        proc = subprocess.run([sys.executable, "-m", "datasets_gen", "progress=false", "recipe=departments",
                               f"input={catalog}", f"output={out}", "name=depts", *backend.split()],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        card = json.loads((out / "card.json").read_text())
        assert card["counts"]["train"] + card["counts"]["eval"] == 12
        assert all(step["requested"] == 0 for step in card["generation"].values())
