"""Choice scoring (eval.scoring=choices), its calibration metrics and few-shot prompts.

The oracle is lm-evaluation-harness itself (`lm_eval.models.huggingface.HFLM.loglikelihood`, 0.4.13) on the same
weights, prompts and labels. lm-eval moves a context's trailing whitespace onto the continuation
(`lm_eval/api/model.py` `_encode_pair`): the harness's prompt ends with the chat template's "assistant\\n", so
lm-eval is asked for (prompt without its trailing newline, newline + label), and for (same, newline) alone, whose
difference is the label's log-probability after the whole prompt (the chain rule), what the harness scores.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cell.choices import score_choices
from harness.cell.models import load_model
from harness.core.config import ConfigError, EvalConfig, to_run_config
from harness.core.data import QARecord, fewshot_examples, load_dataset, prompt_messages
from harness.core.ledger import run_key, semantic_config
from harness.core.stages import predictions_key
from harness.metrics import LabelScores, score_all
from harness.metrics.calibration import expected_calibration_error

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
NEEDS_LM_EVAL = pytest.mark.optional(HAS_LM_EVAL, "lm-eval is not installed (pip install -e '.[oracle]')")


def _catalog_prompts(compose_cfg, *overrides, n=12):
    cfg = to_run_config(compose_cfg("data=shop_catalog", *overrides))
    dataset = load_dataset(cfg.data)
    records = dataset.eval[:n]
    shots = fewshot_examples(dataset.train, dataset.eval, cfg.eval.fewshot, cfg.qlora.seed, dataset.labels)
    conversations = [prompt_messages(r, cfg.data, cfg.model, None, dataset.labels, shots) for r in records]
    return cfg, dataset, conversations


def _lm_eval_logliks(model, tokenizer, conversations, labels):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    # max_length: lm-eval would cut few-shot prompts of tiny_random (a 512-token config) from the left; RoPE
    # does not need it, and the harness never cuts a prompt.
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device=str(next(model.parameters()).device), batch_size=8,
              max_length=8192)
    requests = []
    for conversation in conversations:
        prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        context, space = prompt.rstrip(), prompt[len(prompt.rstrip()):]
        assert space == "\n"  # the chat template's "assistant\n": it travels with the continuation in lm-eval
        for continuation in [space, *(space + label for label in labels)]:
            requests.append(Instance(request_type="loglikelihood", doc={}, arguments=(context, continuation),
                                     idx=len(requests)))
    scores = [score for score, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    per_prompt = len(labels) + 1
    return [[scores[i + 1 + k] - scores[i] for k in range(len(labels))]
            for i in range(0, len(scores), per_prompt)]


def _assert_agree(ours, theirs):
    ours, theirs = np.array(ours), np.array(theirs)
    assert np.abs(ours - theirs).max() < 1e-4, np.abs(ours - theirs).max()
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()


def _sharpened(loaded):
    """tiny_random's weights with a larger spread: its own small init puts nearly equal mass on every token, so
    label scores that differ only by a bug's worth would still tie."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.5)
    return loaded


@NEEDS_LM_EVAL
@pytest.mark.parametrize("fewshot", [0, 3])
def test_label_logliks_agree_with_lm_evaluation_harness_on_tiny_random(compose_cfg, fewshot):
    cfg, dataset, conversations = _catalog_prompts(compose_cfg, "model=tiny_random", f"eval.fewshot={fewshot}")
    loaded = _sharpened(load_model(cfg.model, cfg.hardware, cfg.qlora, cache_dir=None))
    ours = score_choices(loaded.model, loaded.tokenizer, conversations, dataset.labels,
                         EvalConfig(batch_size=5), progress=False)
    theirs = _lm_eval_logliks(loaded.model, loaded.tokenizer, conversations, dataset.labels)
    _assert_agree(ours.label_logliks, theirs)
    assert ours.predictions == [dataset.labels[int(np.argmax(row))] for row in theirs]
    centred = np.array(theirs) - np.array(theirs).mean(axis=1, keepdims=True)
    assert np.ptp(centred, axis=0).max() > 0.1  # the sharpened model's label scores do depend on the product


@pytest.mark.slow
@NEEDS_LM_EVAL
def test_label_logliks_agree_with_lm_evaluation_harness_on_smollm2(compose_cfg):
    cfg, dataset, conversations = _catalog_prompts(compose_cfg, "model=smollm2_135m", n=16)
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, cache_dir=Path(cfg.cache_dir).expanduser())
    ours = score_choices(loaded.model, loaded.tokenizer, conversations, dataset.labels, EvalConfig(batch_size=8),
                         progress=False)
    _assert_agree(ours.label_logliks, _lm_eval_logliks(loaded.model, loaded.tokenizer, conversations,
                                                       dataset.labels))


def test_batched_kv_cache_scoring_equals_one_full_forward_per_label(compose_cfg):
    cfg, dataset, conversations = _catalog_prompts(compose_cfg, "model=tiny_random", n=7)
    loaded = _sharpened(load_model(cfg.model, cfg.hardware, cfg.qlora, cache_dir=None))
    labels = [*dataset.labels, "Home Office Furniture and Lighting"]  # a long multi-token label beside short ones
    batched = score_choices(loaded.model, loaded.tokenizer, conversations, labels, EvalConfig(batch_size=4),
                            progress=False)
    single = score_choices(loaded.model, loaded.tokenizer, conversations, labels, EvalConfig(batch_size=1),
                           progress=False)
    tokenizer = loaded.tokenizer
    for conversation, row in zip(conversations, batched.label_logliks, strict=True):
        prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for label, got in zip(labels, row, strict=True):
            ids = tokenizer(prompt + label, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(loaded.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            want = sum(logp[i - 1, ids[i]].item() for i in range(len(prompt_ids), len(ids)))
            assert got == pytest.approx(want, abs=1e-4)
    np.testing.assert_allclose(batched.label_logliks, single.label_logliks, atol=1e-4)
    assert batched.generated_tokens == [0] * 7 and batched.generate_s > 0


def test_brier_and_ece_by_hand():
    labels = ["a", "b"]
    # softmax of (log 0.8, log 0.2) is (0.8, 0.2): confidences 0.8, 0.8, 0.6; right, wrong, right.
    scores = LabelScores(labels, [[math.log(0.8), math.log(0.2)], [math.log(0.8), math.log(0.2)],
                                  [math.log(0.4), math.log(0.6)]])
    result = score_all(["calibration", "accuracy_norm"], ["a", "a", "b"], ["a", "b", "b"], label_scores=scores)
    brier = [0.2**2 + 0.2**2, 0.8**2 + 0.8**2, 0.4**2 + 0.4**2]
    assert result["calibration"].values["brier"] == pytest.approx(sum(brier) / 3)
    assert result["calibration"].per_sample["brier"] == pytest.approx(brier)
    # bins (0.533, 0.6] holds the 0.6 (accuracy 1) and (0.8-, 0.8] holds both 0.8 (accuracy 0.5).
    assert result["calibration"].values["ece"] == pytest.approx(1 / 3 * 0.4 + 2 / 3 * 0.3)
    interval = result["calibration"].intervals["ece"]
    assert interval["low"] <= interval["mean"] <= interval["high"] and interval["n"] == 3
    # Per character: a's -0.22/1 beats b's -1.6/1 on the first two, b wins the third: 2 of 3 right.
    assert result["accuracy_norm"].values["accuracy_norm"] == pytest.approx(2 / 3)


def test_accuracy_norm_prefers_the_longer_label_the_summed_score_would_lose():
    scores = LabelScores(["Home", "Home Office"], [[-2.0, -3.0]])
    result = score_all(["accuracy_norm"], ["Home"], ["Home Office"], label_scores=scores)
    assert result["accuracy_norm"].values["accuracy_norm"] == 1.0  # -2/4 < -3/11


def test_ece_edges_and_perfect_calibration():
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.0
    # Half right at confidence 0.5 exactly: perfectly calibrated, whichever bin 0.5 falls in.
    assert expected_calibration_error(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == 0.0
    assert expected_calibration_error(np.array([0.99] * 4), np.array([0.0] * 4)) == pytest.approx(0.99)


def test_calibration_without_label_scores_is_refused():
    with pytest.raises(ValueError, match="eval.scoring=choices"):
        score_all(["calibration"], ["a"], ["a"])


def _records(n_per_label, labels):
    return [QARecord(f"{label}{i}", f"item {label} {i}", label) for label in labels for i in range(n_per_label)]


def test_fewshot_draw_shows_every_label_once_before_any_twice_and_never_an_eval_example():
    labels = ["A", "B", "C"]
    train = _records(5, labels)
    eval_records = [QARecord("A0", "other", "A"), QARecord("x", "item B 1", "B")]  # shares an id, a question
    shots = fewshot_examples(train, eval_records, 7, seed=3, labels=labels)
    assert len(shots) == 7 and len({s.id for s in shots}) == 7
    assert sorted(s.answer for s in shots[:3]) == labels and sorted(s.answer for s in shots[3:6]) == labels
    assert not {"A0", "B1"} & {s.id for s in shots}
    assert shots == fewshot_examples(train, eval_records, 7, seed=3, labels=labels)  # seeded
    assert shots != fewshot_examples(train, eval_records, 7, seed=4, labels=labels)
    with pytest.raises(ConfigError, match="eval.fewshot=20"):
        fewshot_examples(train, eval_records, 20, seed=0, labels=labels)


def test_fewshot_turns_come_before_the_question(compose_cfg):
    cfg, dataset, conversations = _catalog_prompts(compose_cfg, "model=tiny_random", "eval.fewshot=8", n=1)
    turns = conversations[0]
    assert [t["role"] for t in turns] == ["system"] + ["user", "assistant"] * 8 + ["user"]
    assert sorted(t["content"] for t in turns[2:-1:2]) == sorted(dataset.labels)  # one shot per department
    assert turns[-1]["content"] == dataset.eval[0].question


def test_scoring_and_fewshot_enter_the_keys_and_defaults_keep_earlier_ones(compose_cfg):
    def keys(*overrides):
        cfg = compose_cfg("model=tiny_random", "data=shop_catalog", *overrides)
        from omegaconf import OmegaConf

        config = semantic_config(OmegaConf.to_container(cfg, resolve=True))
        hashes = load_dataset(to_run_config(cfg).data).file_hashes
        return run_key(config, hashes, "v"), predictions_key(config, hashes, "v", None), config

    plain, choices, fewshot = keys(), keys("eval.scoring=choices"), keys("eval.fewshot=4")
    # At their defaults they hash as if they did not exist: earlier results keep their keys.
    before = {**plain[2], "eval": {k: v for k, v in plain[2]["eval"].items() if k not in ("scoring", "fewshot")}}
    hashes = load_dataset(to_run_config(compose_cfg("data=shop_catalog")).data).file_hashes
    assert (run_key(before, hashes, "v"), predictions_key(before, hashes, "v", None)) == plain[:2]
    assert len({plain[0], choices[0], fewshot[0]}) == 3 and len({plain[1], choices[1], fewshot[1]}) == 3
    assert keys("eval.fewshot=4", "qlora.seed=1")[1] != fewshot[1]  # the seed draws the shots


def test_choices_on_an_open_ended_task_and_calibration_under_generate_are_refused(compose_cfg):
    from harness.cell.checks import check_before_load

    with pytest.raises(ConfigError, match="eval.scoring: choices scores a label set"):
        to_run_config(compose_cfg("data=hr_handbook", "eval.scoring=choices"))
    with pytest.raises(ConfigError, match="eval.scoring: must be one of generate, choices"):
        to_run_config(compose_cfg("eval.scoring=loglik"))
    with pytest.raises(ConfigError, match="data.metrics: calibration read label probabilities"):
        check_before_load(to_run_config(compose_cfg("data=shop_catalog", "data.metrics=[accuracy,calibration]")))


def test_choice_scored_cell_records_probabilities_calibration_and_shots(run_harness, tmp_path, capsys):
    results = tmp_path / "results"
    common = ("model=tiny_random", "data=shop_catalog", "eval.num_examples=10", "tracker=none", "progress=false",
              f"cache_dir={tmp_path / 'cache'}")
    proc = run_harness("-m", "method=base,instruct", "eval.scoring=choices,generate", "eval.fewshot=3",
                       "qlora.max_steps=1", "eval.max_new_tokens=4", *common, results_dir=results)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    for row in rows:
        scoring = row["config"]["eval"]["scoring"]
        assert row["prompt"]["scoring"] == scoring and len(row["prompt"]["fewshot_ids"]) == 3
        train_ids = {json.loads(x)["id"] for x in open(Path(row["config"]["data"]["dir"].replace(
            "samples:", str(Path(__file__).parent.parent / "harness" / "samples") + "/")) / "train.jsonl")}
        assert set(row["prompt"]["fewshot_ids"]) <= train_ids
        predictions = [json.loads(x) for x in open(row["predictions_file"])]
        if scoring == "choices":
            assert {"accuracy", "macro_f1", "accuracy_norm", "brier", "ece"} <= set(row["metrics"])
            assert {"brier", "ece", "accuracy"} <= set(row["metrics_ci"])
            assert row["metrics"]["unparseable_rate"] == 0.0
            for p in predictions:
                assert sum(p["label_probs"].values()) == pytest.approx(1, abs=1e-4)
                assert p["prediction"] == max(p["label_logliks"], key=p["label_logliks"].get)
        else:
            assert "brier" not in row["metrics"] and "label_probs" not in predictions[0]
    assert len({r["stages"]["predictions"]["key"] for r in rows}) == 4
    assert all(r["prompt"]["fewshot_ids"] == rows[0]["prompt"]["fewshot_ids"] for r in rows)  # same seed, same shots

    # One board holds all four (same eval set), each row saying how it was scored; a comparison across scoring
    # modes runs paired per example and says what it compares.
    from harness.leaderboard import main as leaderboard

    assert leaderboard(["--ledger", str(results / "runs.jsonl"), "--data", "shop_catalog", "--no-report",
                        "--out", str(tmp_path / "board.md")]) == 0
    board = (tmp_path / "board.md").read_text()
    assert board.count("## ") == 1 and "| scoring |" in board
    assert board.count("| choices 3-shot |") == 2 and board.count("| generate 3-shot |") == 2
    by_scoring = {(r["method"], r["config"]["eval"]["scoring"]): r["run_key"] for r in rows}
    capsys.readouterr()
    assert leaderboard(["--ledger", str(results / "runs.jsonl"), "--compare", by_scoring["base", "generate"],
                        by_scoring["base", "choices"], "--metric", "accuracy"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "across scoring modes: A is scored by generate 3-shot, B by choices 3-shot" in out
    assert "accuracy" in out and "n" in out


@pytest.mark.parametrize("hardware", ["cpu", "cpu_qlora"])
def test_every_method_scores_choices_few_shot(run_harness, tmp_path, hardware):
    """base, the RAG methods and both trainers, fp32 and through the 4-bit path (hardware=cpu_qlora): an adapter
    is evaluated few-shot and by choice scoring like the base."""
    methods = ("base", "causal", "instruct", "base_rag", "causal_rag", "instruct_rag")
    results = tmp_path / "results"
    proc = run_harness("-m", "model=tiny_random", f"method={','.join(methods)}", f"hardware={hardware}",
                       "data=shop_catalog", "eval.scoring=choices", "eval.fewshot=2", "eval.num_examples=4",
                       "qlora.max_steps=1", "qlora.max_length=320", "data.max_train_examples=24", "tracker=none",
                       "progress=false",
                       f"cache_dir={tmp_path / 'cache'}", results_dir=results, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {r["method"]: r for r in map(json.loads, (results / "runs.jsonl").read_text().splitlines())}
    assert set(rows) == set(methods) and {r["status"] for r in rows.values()} == {"completed"}
    for method, row in rows.items():
        assert row["cost"]["quantized_4bit"] is (hardware == "cpu_qlora")
        assert {"accuracy", "brier", "ece", "accuracy_norm"} <= set(row["metrics"])
        assert row["prompt"]["scoring"] == "choices" and len(row["prompt"]["fewshot_ids"]) == 2
        assert row["prompt"]["first_eval_prompt"].count("<|im_start|>assistant") == 3  # 2 shots + the question
        assert bool(row["train"]) is (method not in ("base", "base_rag"))
