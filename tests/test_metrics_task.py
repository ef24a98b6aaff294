"""Task metric families: semantic similarity, classification accuracy/macro-F1, product ids."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from sklearn.metrics import accuracy_score, f1_score

from harness.metrics import METRICS, get_metric, score_all
from harness.metrics.classification import Accuracy, LabelParser
from harness.metrics.recommendation import ProductIds, citations, cited_ids

UNPARSEABLE = "<unparseable>"


def test_task_metrics_are_registered():
    for name in ("semantic", "accuracy", "product_ids"):
        assert name in METRICS
        assert get_metric(name).name == name


# ---- semantic --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def semantic():
    return get_metric("semantic")  # one instance: the MiniLM loads once for the module


def test_semantic_identical_paraphrase_unrelated_and_empty(semantic):
    reference = "Employees get 25 days of paid vacation per year."
    predictions = [
        reference,
        "Staff are entitled to twenty-five days of paid annual leave.",
        "The office canteen serves pasta on Thursdays.",
        "",
        "   ",
    ]
    result = semantic.score(predictions, [reference] * len(predictions))
    scores = result.per_sample["semantic"]
    assert len(scores) == len(predictions)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] > scores[2]
    assert scores[1] > 0.5 > scores[2]
    assert scores[3] == 0.0 and scores[4] == 0.0
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.values["semantic"] == pytest.approx(sum(scores) / len(scores))


def test_semantic_through_score_all_uses_embedding_cosine(semantic):
    import numpy as np

    from harness.core.embedding import Embedder

    predictions, references = ["a red apple", "a cold winter"], ["a green apple", "a hot summer"]
    vectors = Embedder().encode(predictions + references)
    expected = [float(np.dot(vectors[i], vectors[i + 2])) for i in range(2)]
    result = score_all(["semantic"], predictions, references)["semantic"]
    assert result.per_sample["semantic"] == pytest.approx(expected, abs=1e-5)


# ---- classification ----------------------------------------------------------------------------------------

LABELS = ["Home", "Home Office", "Kitchen", "Garden", "Health & Beauty", "Toys (Kids)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("Kitchen", "Kitchen"),                                        # exact
    ("kitchen", "Kitchen"),                                        # case
    ("  KITCHEN \n", "Kitchen"),                                   # case and spaces
    ("home   office", "Home Office"),                              # inner whitespace
    ('"Garden."', "Garden"),                                       # quotes and punctuation
    ("**Health & Beauty**", "Health & Beauty"),                    # markdown, label with a symbol
    ("toys (kids)", "Toys (Kids)"),                                # a label that ends in a bracket
    ("Department: kitchen", "Kitchen"),                            # short lead-in
    ("The answer: Home Office.", "Home Office"),
    ("Home", "Home"),
    # Anything that is not a label is unparseable: a mention inside a sentence earns nothing.
    ("This product belongs in the Garden department.", None),
    ("Kitchen. Definitely the kitchen.", None),
    ("Kitchen\n\nThe product is a knife.", None),                 # a label followed by an explanation
    ("It goes in the Home Office section.", None),
    ("Either Kitchen or Garden.", None),
    ("Homeware", None),
    ("Gardening tools", None),
    ("I am not sure.", None),
    ("The product name is: Garden hose reel", None),               # lead-in, then no label
    ("", None),
    ("   ", None),
])
def test_label_parser(text, expected):
    assert LabelParser(LABELS).parse(text) == expected


# What base models answered on a real catalog of Debian packages, and the lenient parser credited.
ECHO_LABELS = ["perl", "golang", "text", "python", "libs", "web"]


@pytest.mark.parametrize("echo", [
    'The product belongs to the "libhtml-truncate-perl" package.',
    "golang-github-mattn-go-runewidth",
    "This is golang-x-text, a Go library.",
    "golang-gopkg-yaml.v2 is the package.",
    "The package golang-github-spf13-cobra provides a CLI framework.",
    "HarfBuzz is an OpenType text shaping engine.",
    "python3-requests (HTTP for Humans)",
    "Department of Transportation (DOT)",
])
def test_echoed_product_names_are_not_labels(echo):
    assert LabelParser(ECHO_LABELS).parse(echo) is None
    result = score_all(["accuracy"], [echo], ["perl"])["accuracy"]
    assert result.values["accuracy"] == 0.0 and result.values["unparseable_rate"] == 1.0


def test_label_parser_rejects_empty_label_set():
    with pytest.raises(ValueError, match="^classification: the label set is empty$"):
        LabelParser(["", "  "])


CLS_REFS = ["Kitchen", "Garden", "Home Office", "Home", "Kitchen", "Garden", "Home", "Kitchen"]
CLS_PREDS = [
    "Kitchen",                               # right
    "Garden.",                               # right
    "Home",                                  # wrong label
    "home",                                  # right
    "Kitchen or Garden",                     # unparseable
    "",                                      # unparseable
    "Label: Home Office",                    # wrong label
    "KITCHEN",                               # right
]


def test_accuracy_and_macro_f1_match_sklearn():
    metric = Accuracy()
    parsed = metric.parse(CLS_PREDS, CLS_REFS)
    assert parsed == ["Kitchen", "Garden", "Home", "Home", None, None, "Home Office", "Kitchen"]
    result = score_all(["accuracy"], CLS_PREDS, CLS_REFS)["accuracy"]
    as_labels = [p if p is not None else UNPARSEABLE for p in parsed]
    label_set = sorted(set(CLS_REFS))
    assert result.values["accuracy"] == pytest.approx(accuracy_score(CLS_REFS, as_labels))
    assert result.values["accuracy"] == pytest.approx(4 / 8)
    expected_f1 = f1_score(CLS_REFS, as_labels, labels=label_set, average="macro", zero_division=0)
    assert result.values["macro_f1"] == pytest.approx(expected_f1)
    assert result.values["unparseable_rate"] == pytest.approx(2 / 8)
    assert result.per_sample["accuracy"] == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert result.per_sample["unparseable_rate"] == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]


def test_macro_f1_has_a_bootstrap_interval_that_recomputes_it_on_resamples():
    import numpy as np

    result = score_all(["accuracy"], CLS_PREDS, CLS_REFS)["accuracy"]
    interval = result.intervals["macro_f1"]
    assert interval["mean"] == pytest.approx(result.values["macro_f1"]) and interval["n"] == 8
    assert 0.0 <= interval["low"] < interval["mean"] < interval["high"] <= 1.0
    # The same interval by hand: resample examples with the same seed, recompute sklearn's macro-F1.
    parsed = Accuracy().parse(CLS_PREDS, CLS_REFS)
    as_labels = np.array([p if p is not None else UNPARSEABLE for p in parsed])
    refs = np.array(CLS_REFS)
    rng = np.random.default_rng(0)
    f1s = []
    for _ in range(2000):
        idx = rng.integers(0, 8, size=8)
        present = sorted(set(refs[idx]) | (set(as_labels[idx]) - {UNPARSEABLE}))
        f1s.append(f1_score(refs[idx], as_labels[idx], labels=present, average="macro", zero_division=0))
    low, high = np.quantile(f1s, [0.025, 0.975])
    assert (interval["low"], interval["high"]) == pytest.approx((low, high))


def test_unparseable_answers_count_as_wrong():
    result = Accuracy().score(["no idea", "", "Garden"], ["Kitchen", "Garden", "Garden"])
    assert result.values["accuracy"] == pytest.approx(1 / 3)
    assert result.values["unparseable_rate"] == pytest.approx(2 / 3)
    # Kitchen: 1 FN -> F1 0; Garden: TP 1, FN 1 -> F1 2/3.
    assert result.values["macro_f1"] == pytest.approx((0 + 2 / 3) / 2)


def test_explicit_label_set():
    # "Office" is not among the references, but with the label list given it parses (and is wrong).
    metric = Accuracy(labels=["Kitchen", "Garden", "Office"])
    refs = ["Kitchen", "Garden", "Garden"]
    preds = ["Office", "garden", "Garden"]
    result = metric.score(preds, refs)
    assert result.values["unparseable_rate"] == 0.0
    assert result.values["accuracy"] == pytest.approx(2 / 3)
    expected = f1_score(refs, ["Office", "Garden", "Garden"], labels=["Kitchen", "Garden", "Office"],
                        average="macro", zero_division=0)
    assert result.values["macro_f1"] == pytest.approx(expected)
    # Through the registry (labels = distinct references) the same answer is unparseable.
    assert Accuracy().score(preds, refs).values["unparseable_rate"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="not in the label set"):
        Accuracy(labels=["Kitchen"]).score(["Kitchen"], ["Garden"])


# ---- product ids -------------------------------------------------------------------------------------------


def test_citation_parsing_is_lenient():
    text = ("The Thermo Flask keeps coffee hot (closest product: Thermo Flask 500: id 12). Also "
            "(Closest Product:Kid ID Bracelet :ID: P-7 .) and (closest  product: Note: Pad: id #0012) "
            "and (closest product: id 9)")
    assert citations(text) == [("Thermo Flask 500", "12"), ("Kid ID Bracelet", "P-7"), ("Note: Pad", "0012"),
                               ("", "9")]
    assert cited_ids(text) == ["12", "p-7", "0012", "9"]
    assert cited_ids("(closest product: A: id 3) (closest product: A: id 3)") == ["3"]
    assert cited_ids("no citation here; id 4") == []


def cite(*ids: str) -> str:
    return " ".join(f"Reason {i} (closest product: Item {i}: id {i})." for i in ids)


def test_product_id_precision_recall():
    references = [cite("1", "2"), cite("3"), cite("4", "5", "6"), cite("7")]
    predictions = [
        cite("1", "2"),              # P 1, R 1
        cite("3", "99"),             # P 1/2, R 1 (99 is not a real product)
        cite("4") + " " + cite("4"),  # duplicate citation counts once: P 1, R 1/3
        "Try the blue one.",         # cites nothing: P 0, R 0
    ]
    result = score_all(["product_ids"], predictions, references)["product_ids"]
    assert result.per_sample["id_precision"] == pytest.approx([1.0, 0.5, 1.0, 0.0])
    assert result.per_sample["id_recall"] == pytest.approx([1.0, 1.0, 1 / 3, 0.0])
    assert result.per_sample["id_f1"] == pytest.approx([1.0, 2 / 3, 0.5, 0.0])
    assert result.values["id_precision"] == pytest.approx(2.5 / 4)
    assert result.values["id_recall"] == pytest.approx((2 + 1 / 3) / 4)
    assert result.values["id_f1"] == pytest.approx((1 + 2 / 3 + 0.5) / 4)
    # Cited ids: 1, 2, 3, 99, 4; without a catalog the known ids are those cited in the references.
    assert result.values["valid_id_rate"] == pytest.approx(4 / 5)


def test_valid_id_rate_with_catalog():
    predictions, references = [cite("1", "8"), cite("9")], [cite("1"), cite("2")]
    assert ProductIds(catalog_ids=["1", "2", "8"]).score(predictions, references).values["valid_id_rate"] == \
        pytest.approx(2 / 3)
    assert ProductIds().score(predictions, references).values["valid_id_rate"] == pytest.approx(1 / 3)
    assert ProductIds().score(["nothing"], references[:1]).values["valid_id_rate"] == 0.0


# ---- metrics that read their reference sets from the run's dataset ------------------------------------------


def test_product_ids_from_dataset_counts_ids_outside_the_catalog_as_invalid(tmp_path):
    from harness.core.data import Dataset

    catalog = Dataset("recs", tmp_path, [], [], corpus={"p1": {"text": "a"}, "p2": {"text": "b"}, "p9": {"text": "c"}})
    predictions = ["Try (closest product: Lamp: id p9) and (closest product: Mug: id p404)."]
    references = ["Try (closest product: Desk: id p1)."]
    from_catalog = score_all(["product_ids"], predictions, references, catalog)["product_ids"]
    assert from_catalog.values["valid_id_rate"] == 0.5  # p9 exists in the catalog though no reference cites it
    guessed = score_all(["product_ids"], predictions, references)["product_ids"]
    assert guessed.values["valid_id_rate"] == 0.0  # without the catalog only referenced ids count as real


def test_accuracy_from_dataset_uses_labels_json(tmp_path):
    from harness.core.data import Dataset

    (tmp_path / "labels.json").write_text('{"labels": ["Kitchen", "Garden", "Home Office"], "counts": {}}')
    data = Dataset("departments", tmp_path, [], [])
    # "Garden" never occurs in the eval references, yet is a label of the set: parsed, and wrong, not unparseable.
    result = score_all(["accuracy"], ["Garden", "kitchen."], ["Kitchen", "Kitchen"], data)["accuracy"]
    assert result.values["unparseable_rate"] == 0.0 and result.values["accuracy"] == 0.5
    without = score_all(["accuracy"], ["Garden", "kitchen."], ["Kitchen", "Kitchen"])["accuracy"]
    assert without.values["unparseable_rate"] == 0.5
    (tmp_path / "labels.json").write_text('{"labels": "Kitchen"}')
    with pytest.raises(ValueError, match=r"labels.json: \"labels\" must be a non-empty list of strings"):
        score_all(["accuracy"], ["Garden"], ["Kitchen"], data)
