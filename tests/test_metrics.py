"""Metric family tests: values must match the reference implementations exactly, offline."""

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_var, "1")

import pytest
import sacrebleu
from rouge_score import rouge_scorer

import harness.metrics as metrics_package
from harness.core.registry import Registry
from harness.metrics import METRICS, MetricResult, get_metric, register_metric, score_all
from harness.metrics.keys import higher, spec_of

PREDICTIONS = [
    "the cat sat on the mat while the dog slept by the door",
    "a quick brown fox jumps over the lazy dog",
    "",
    "machine learning models need careful evaluation on held out data",
    "it rained heavily in the city all afternoon yesterday",
]
REFERENCES = [
    "the cat sat on the mat while the dog slept by the door",
    "the quick brown fox jumped over a sleepy dog",
    "this reference has no matching prediction at all",
    "models trained with machine learning require careful evaluation",
    "it rained heavily in the city all afternoon yesterday",
]
TOL = 1e-9


@pytest.fixture(scope="module")
def results() -> dict[str, MetricResult]:
    return score_all(["bleu", "rouge", "ngram"], PREDICTIONS, REFERENCES)


def test_bleu_matches_sacrebleu(results):
    bleu = results["bleu"]
    assert bleu.values["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score / 100, abs=TOL)
    expected = [sacrebleu.sentence_bleu(p, [r]).score / 100 for p, r in zip(PREDICTIONS, REFERENCES)]
    assert bleu.per_sample["bleu"] == pytest.approx(expected, abs=TOL)
    assert bleu.per_sample["bleu"][2] == 0.0
    assert 0.0 < bleu.values["bleu"] < 1.0


def test_rouge_matches_rouge_score_mean_f1(results):
    rouge = results["rouge"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(PREDICTIONS, REFERENCES)]
    for key in ("rouge1", "rouge2", "rougeL"):
        f1 = [s[key].fmeasure for s in scores]
        assert rouge.values[key] == pytest.approx(sum(f1) / len(f1), abs=TOL)
        assert rouge.per_sample[key] == pytest.approx(f1, abs=TOL)
        assert rouge.per_sample[key][2] == 0.0
    assert set(rouge.values) == {"rouge1", "rouge2", "rougeL"}


def test_ngram_matches_sacrebleu_chrf(results):
    ngram = results["ngram"]
    chrf = sacrebleu.CHRF()
    assert ngram.values["chrf"] == pytest.approx(chrf.corpus_score(PREDICTIONS, [REFERENCES]).score / 100, abs=TOL)
    expected = [chrf.sentence_score(p, [r]).score / 100 for p, r in zip(PREDICTIONS, REFERENCES)]
    assert ngram.per_sample["chrf"] == pytest.approx(expected, abs=TOL)
    assert ngram.per_sample["chrf"][2] == 0.0


def test_per_sample_lengths_match_inputs(results):
    for result in results.values():
        assert result.per_sample
        for scores in result.per_sample.values():
            assert len(scores) == len(PREDICTIONS)


def test_identical_inputs_score_one():
    refs = [r for r in REFERENCES if r]
    results = score_all(["bleu", "rouge"], refs, refs)
    assert results["bleu"].values["bleu"] == pytest.approx(1.0, abs=TOL)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert results["rouge"].values[key] == pytest.approx(1.0, abs=TOL)


def test_all_empty_predictions_score_zero():
    results = score_all(["bleu", "rouge", "ngram"], ["", ""], REFERENCES[:2])
    values = {key: v for result in results.values() for key, v in result.values.items()}
    per_sample = {key: v for result in results.values() for key, v in result.per_sample.items()}
    expected = {"bleu": 0.0, "rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "chrf": 0.0}
    assert values == expected  # every key each metric declares, each a zero, none missing
    assert per_sample == {key: [0.0, 0.0] for key in expected}


def test_unknown_metric_lists_known_names():
    with pytest.raises(KeyError) as excinfo:
        get_metric("no-such-metric")
    message = str(excinfo.value)
    assert "no-such-metric" in message
    for name in ("bleu", "rouge", "ngram"):
        assert name in message


def test_length_mismatch_is_rejected():
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        score_all(["bleu"], ["a", "b", "c"], ["a", "b"])


def test_empty_input_is_rejected():
    with pytest.raises(ValueError, match="^cannot score an empty list of predictions$"):
        score_all(["bleu"], [], [])


def test_duplicate_registration_raises():
    before = {name: METRICS.get(name) for name in METRICS}
    with pytest.raises(ValueError, match=r"^metric 'bleu' is already registered \(.+\); pick another name$"):

        @register_metric("bleu", keys={"bleu": higher()})
        class _Duplicate:
            pass

    assert {name: METRICS.get(name) for name in METRICS} == before


def test_a_metric_must_declare_its_keys_and_directions():
    with pytest.raises(ValueError, match="must declare the keys"):

        @register_metric("no_keys_declared", keys={})
        class _NoKeys:
            pass

    assert "no_keys_declared" not in METRICS


def test_an_undeclared_key_is_refused_when_scored(monkeypatch):
    # Registered into a copy of the registry, so the real one never holds the test's metric.
    scratch = Registry("metric", option="data.metrics")
    for name in METRICS:
        scratch.add(name, METRICS.get(name))
    monkeypatch.setattr(metrics_package, "METRICS", scratch)

    @register_metric("leaky", keys={"leaky": higher()})
    class _Leaky:
        def score(self, predictions, references):
            return MetricResult(values={"leaky": 1.0, "surprise_rate": 0.5}, per_sample={})

    with pytest.raises(ValueError, match=r"undeclared key\(s\) \['surprise_rate'\]"):
        score_all(["leaky"], ["a"], ["a"])


@pytest.mark.parametrize(("key", "better"), [
    ("bleu", "higher"), ("rougeL", "higher"), ("chrf", "higher"), ("semantic", "higher"), ("accuracy", "higher"),
    ("macro_f1", "higher"), ("unparseable_rate", "lower"), ("faithfulness", "higher"), ("recall@3", "higher"),
    ("recall@10", "higher"), ("id_f1", "higher"), ("usd_per_1k_generations", "lower"), ("peak_memory_gb", "lower"),
    ("eval_latency_s_per_example", "lower"), ("eval_tokens_per_s", "higher"), ("bleu_sample_mean", "higher"),
])
def test_every_key_knows_which_way_is_better(key, better):
    assert spec_of(key).better.value == better


def test_every_registered_metric_declares_every_key_it_produces():
    from harness.metrics import get_metric

    for name in ("bleu", "rouge", "ngram", "accuracy", "product_ids"):
        metric = get_metric(name)
        values = metric.score(["Kitchen (closest product: Pan: id 3)"], ["Kitchen (closest product: Pan: id 3)"]).values
        assert set(values) <= set(type(metric).keys), name
    assert spec_of("no_such_metric") is None
