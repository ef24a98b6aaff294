"""The bundled shop catalog: its classification set is exactly what datasets_gen builds from its CSV, and it loads."""

import csv
import json
import os
import subprocess
import sys
from collections import Counter

from conftest import REPO

from harness.core.config import DataConfig, load_option, resolve_data_dir, to_run_config
from harness.core.data import load_dataset
from harness.metrics.classification import Accuracy

SAMPLE = REPO / "harness" / "samples" / "shop_catalog"
CATALOG = SAMPLE / "catalog.csv"
DATA_FILES = ("train.jsonl", "eval.jsonl", "corpus.jsonl", "labels.json")
# Card fields decided by the inputs and the recipe (not by when, where or with which backend it ran).
CARD_FIELDS = ("name", "task", "recipe", "seed", "eval_fraction", "limit", "prompts", "counts", "dropped", "filters",
               "leakage", "report")


def catalog_rows() -> list[dict]:
    with CATALOG.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_bundled_catalog_is_what_datasets_gen_builds_from_its_csv(tmp_path):
    # Labels come from the department column, so no teacher is asked (no Ollama server runs here).
    out = tmp_path / "built"
    proc = subprocess.run(
        [sys.executable, "-m", "datasets_gen", "recipe=departments", f"input={CATALOG}", "name=shop_catalog",
         f"output={out}", "progress=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (SAMPLE / name).read_bytes(), f"{name} differs from a fresh build"
    built, bundled = (json.loads(p.read_text(encoding="utf-8")) for p in (out / "card.json", SAMPLE / "card.json"))
    for key in CARD_FIELDS:
        assert bundled[key] == built[key], key
    assert list(bundled["sources"].values()) == list(built["sources"].values())  # the CSV's sha256
    assert bundled["report"]["label_source"] == {"column": 200, "teacher": 0, "asked_teacher": 0}


def test_catalog_has_eight_distinct_departments_of_named_products():
    rows = catalog_rows()
    assert len(rows) == 200
    assert len({r["id"] for r in rows}) == len({r["name"] for r in rows}) == 200
    assert all(r["name"].strip() and r["description"].strip() for r in rows)
    sizes = Counter(r["department"] for r in rows)
    assert len(sizes) == 8 and all(20 <= n <= 30 for n in sizes.values()), sizes


def test_bundled_catalog_loads_as_a_stratified_classification_set(compose_cfg):
    cfg = to_run_config(compose_cfg("data=shop_catalog"))
    assert resolve_data_dir(cfg.data) == SAMPLE and cfg.data.task == "classification"
    assert cfg.data.metrics == ["accuracy"]
    data = load_dataset(cfg.data)
    assert (len(data.train), len(data.eval), len(data.corpus)) == (159, 41, 200)
    labels = Accuracy.from_dataset(data).label_set([r.answer for r in data.eval])
    departments = {r["department"] for r in catalog_rows()}
    assert set(labels) == departments
    # every department is in both splits; no product is in both
    assert {r.answer for r in data.eval} == {r.answer for r in data.train} == departments
    assert not {p for r in data.train for p in r.source_doc_ids} & {p for r in data.eval for p in r.source_doc_ids}
    # each question names its product as the catalog does
    by_id = {r["id"]: r for r in catalog_rows()}
    for record in data.train + data.eval:
        row = by_id[record.source_doc_ids[0]]
        assert f"{row['name']}: {row['description']}" in record.question and record.answer == row["department"]


def test_data_config_names_the_bundled_folder():
    data = load_option("data", "shop_catalog", DataConfig)
    assert data.dir == "samples:shop_catalog" and data.name == "shop_catalog"
