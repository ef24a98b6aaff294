"""hydra/sweeper=tunebench: search spaces in Hydra's grammar, the validation slice, values told from the ledger,
failed trials as NaN, continued studies, pruning inside cells through the storage (joblib workers), two objectives."""

from __future__ import annotations

import json
from collections import Counter

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from harness.board.ranking import pick_cheapest
from harness.core.config import ConfigError, DataConfig, load_option
from harness.core.data import load_dataset
from harness.core.ledger import Ledger, semantic_config
from harness.core.validation import hold_out_validation
from hydra_plugins.tunebench_sweeper.search_space import parse_search_space
from hydra_plugins.tunebench_sweeper.sweeper import Objectives

TINY = ("model=tiny_random", "method=instruct", "data=shop_catalog", "qlora.max_steps=2", "eval.num_examples=4",
        "eval.max_new_tokens=4", "progress=false", "tracker=none")


def test_search_space_reads_hydra_grammar_and_keeps_fixed_settings():
    space = parse_search_space(["qlora.r=choice(4,16,64)", "qlora.lr=tag(log, interval(1e-4, 1e-2))",
                                "qlora.dropout=interval(0.0, 0.2)", "qlora.max_steps=range(10,40,10)",
                                "method=base,instruct", "model=smollm2_135m", "sweep_id=s-1"])
    assert space.swept["qlora.r"] == CategoricalDistribution([4, 16, 64])
    assert space.swept["qlora.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space.swept["qlora.dropout"] == FloatDistribution(0.0, 0.2)
    # Hydra's range leaves out its stop, as the basic sweeper does.
    assert space.swept["qlora.max_steps"] == IntDistribution(10, 30, step=10)
    assert space.swept["method"] == CategoricalDistribution(["base", "instruct"])
    assert space.fixed == {"model": "smollm2_135m", "sweep_id": "s-1"}
    grid = parse_search_space(["qlora.r=choice(4,16)", "qlora.max_steps=range(1,4)"]).grid()
    assert grid == {"qlora.r": [4, 16], "qlora.max_steps": [1, 2, 3]}
    with pytest.raises(ConfigError, match="qlora.lr is a continuous range"):
        space.grid()
    with pytest.raises(ConfigError, match="lower bound above 0"):
        parse_search_space(["qlora.lr=tag(log, interval(0, 1e-2))"])


def test_objective_directions_come_from_declarations():
    assert Objectives.parse("accuracy").directions == ["maximize"]
    both = Objectives.parse(["accuracy", "usd_per_1k_generations"])
    assert both.directions == ["maximize", "minimize"]
    assert both.values({"metrics": {"accuracy": 0.5}, "cost": {"usd_per_1k_generations": 0.02}}) == [0.5, 0.02]
    assert both.values({"metrics": {"accuracy": 0.5}, "cost": {}}) is None
    with pytest.raises(ConfigError, match="not a declared metric"):
        Objectives.parse("acuracy")
    with pytest.raises(ConfigError, match="first objective must be a quality metric"):
        Objectives.parse(["usd_per_1k_generations", "accuracy"])


def test_validation_slice_is_seeded_stratified_and_removed_from_training():
    dataset = load_dataset(load_option("data", "shop_catalog", DataConfig))
    held = hold_out_validation(dataset, 24, seed=7)
    assert len(held.validation) == 24 and len(held.train) == len(dataset.train) - 24
    ids = {r.id for r in held.validation}
    assert not ids & {r.id for r in held.train} and not ids & {r.id for r in dataset.eval}
    # Stratified: each label's share of the slice within one example of its share of train.
    train_counts, slice_counts = Counter(r.answer for r in dataset.train), Counter(r.answer for r in held.validation)
    for label, n in train_counts.items():
        assert abs(slice_counts[label] - 24 * n / len(dataset.train)) < 1.0 + 1e-9, label
    assert [r.id for r in hold_out_validation(dataset, 24, seed=7).validation] == [r.id for r in held.validation]
    assert {r.id for r in hold_out_validation(dataset, 24, seed=8).validation} != ids
    with pytest.raises(ConfigError, match="qlora.validation_examples=.*would leave no training examples"):
        hold_out_validation(dataset, len(dataset.train), seed=7)


def test_run_key_ignores_watching_but_not_the_held_out_slice(compose_cfg):
    from omegaconf import OmegaConf

    def key(*overrides):
        return semantic_config(OmegaConf.to_container(compose_cfg(*overrides), resolve=True))

    plain = key()
    assert "validation_examples" not in plain["qlora"] and "eval_steps" not in plain["qlora"] and "trial" not in plain
    assert key("qlora.eval_steps=5", "qlora.validation_examples=0") == plain
    assert key("trial.study=s", "trial.storage=sqlite:///x.db", "trial.number=3") == plain
    assert key("qlora.validation_examples=8")["qlora"]["validation_examples"] == 8


def test_a_pruned_run_is_never_picked():
    done = {"run_key": "a", "status": "completed", "metrics": {"accuracy": 0.4}, "cost": {"usd_total": 2.0}}
    pruned = {"run_key": "b", "status": "pruned", "metrics": {}, "cost": {"usd_total": 0.1},
              "train": {"pruned_at_step": 10, "intermediate": {"curve": [[10, 0.9]]}}}
    verdict = pick_cheapest([pruned, done], {"accuracy": 0.3}, "usd_total")
    assert verdict.pick is done
    assert verdict.rejected == [(pruned, "pruned by its search at training step 10")]


def _study(storage: str, name: str):
    from harness.core.study import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


@pytest.mark.slow
def test_failed_trial_is_nan_and_the_study_goes_on_then_values_come_from_the_ledger(run_harness, tmp_path):
    results = tmp_path / "results"
    # One value of the searched key fails its cell; the grid runs both.
    first = run_harness("-m", "hydra/sweeper=tunebench", *TINY, "fail_at=train,null", "sweep_id=grid-a",
                        "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=5", results_dir=results)
    assert first.returncode == 1, first.stderr[-3000:]  # a failed cell fails the sweep's exit status, as any sweep
    assert "Traceback" not in first.stderr
    assert "objective NaN, the study goes on" in first.stdout  # Hydra's log (the summary is on stderr)
    assert "tunebench: 1 completed, 0 skipped, 1 failed" in first.stderr
    storage = f"sqlite:///{results.resolve()}/optuna.db"
    trials = {t.params["fail_at"]: t for t in _study(storage, "grid-a").trials}
    assert trials["train"].state == optuna.trial.TrialState.FAIL and trials["train"].user_attrs["objective"] == "nan"
    done = trials["null"]
    record = Ledger(results / "runs.jsonl").completed(done.user_attrs["run_key"])
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == record["metrics"]["accuracy"]
    lines = len(Ledger(results / "runs.jsonl").records())

    # Another study over the cell the first completed: told its values from the ledger (quality and cost), no run.
    second = run_harness("-m", "hydra/sweeper=tunebench", *TINY, "fail_at=null", "qlora.r=choice(16)",
                         "sweep_id=two-obj",
                         "hydra.sweeper.objective=[accuracy,usd_per_1k_generations]", "hydra.sweeper.n_trials=1",
                         results_dir=results)
    assert second.returncode == 0, second.stderr[-3000:]
    (told,) = _study(storage, "two-obj").trials
    assert told.values == [record["metrics"]["accuracy"], record["cost"]["usd_per_1k_generations"]]
    assert told.user_attrs["from_ledger"] == record["run_id"]
    assert len(Ledger(results / "runs.jsonl").records()) == lines
    front = json.loads((results / "studies" / "two-obj.json").read_text())
    assert front["directions"] == ["maximize", "minimize"] and [t["run_key"] for t in front["front"]] == [
        record["run_key"]]

    # The first command again: its study already holds its trials, so nothing more runs; job folders are kept.
    again = run_harness("-m", "hydra/sweeper=tunebench", *TINY, "fail_at=train,null", "sweep_id=grid-a",
                        "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=5", results_dir=results)
    assert "2 trial(s) already, 2 to reach" in again.stdout, again.stdout[-3000:]
    assert len(_study(storage, "grid-a").trials) == 2
    assert len(Ledger(results / "runs.jsonl").records()) == lines


@pytest.mark.slow
def test_cells_are_pruned_through_the_storage_on_joblib_workers(run_harness, tmp_path):
    results = tmp_path / "results"
    journal = tmp_path / "shared" / "study.journal"
    # A threshold no random model reaches: each trial is stopped at its first report, in its own worker process,
    # by the pruner it rebuilt from the study's storage (a journal file, as on a Slurm cluster's shared disk).
    proc = run_harness("-m", "hydra/sweeper=tunebench", *TINY, "qlora.max_steps=4", "qlora.eval_steps=2",
                       "qlora.validation_examples=8", "qlora.r=choice(4,8)", "sweep_id=pruned",
                       "hydra.sweeper.sampler=grid", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
                       "hydra.launcher.n_jobs=2", f"hydra.sweeper.storage=journal:{journal}",
                       "hydra.sweeper.pruner.name=threshold", "hydra.sweeper.pruner.lower=0.5", results_dir=results)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 pruned by the search" in proc.stderr
    records = Ledger(results / "runs.jsonl").records()
    assert sorted(r["status"] for r in records) == ["pruned", "pruned"]
    pids = set()
    for record in records:
        assert record["train"]["pruned_at_step"] == 2
        assert record["train"]["intermediate"]["metric"] == "accuracy"
        (step, value), = record["train"]["intermediate"]["curve"]
        assert step == 2 and value < 0.5
        validation = record["train"]["validation"]
        assert validation["examples"] == 8 and validation["stratified"] and len(validation["ids"]) == 8
        assert record["cost"]["total_s"] > 0
    for job in (results / "hydra" / "multirun" / "pruned").iterdir():
        if job.name.isdigit():
            pids.add(json.loads((job / "outcome.json").read_text())["pid"])
    assert len(pids) == 2  # two worker processes
    trials = _study(f"journal:{journal}", "pruned").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(t.intermediate_values == {2: pytest.approx(0.0, abs=0.5)} for t in trials)


def test_a_bad_search_is_one_line_before_anything_runs(run_harness, tmp_path):
    proc = run_harness("-m", "hydra/sweeper=tunebench", *TINY, "qlora.r=choice(4,8)",
                       "hydra.sweeper.objective=usd_per_1k_generations", results_dir=tmp_path / "r")
    assert proc.returncode == 2
    assert "first objective must be a quality metric" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "runs.jsonl").exists()


def test_study_fronts_are_read_beside_the_ledger(tmp_path, caplog):
    from harness.board.studies import study_fronts

    ledger = tmp_path / "runs.jsonl"
    assert study_fronts(ledger) == {} and study_fronts(None) == {}
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "s1.json").write_text(json.dumps(
        {"study": "s1", "front": [{"trial": 3, "run_key": "k3", "values": [0.5, 0.01], "params": {}}]}))
    (tmp_path / "studies" / "broken.json").write_text("{not json")
    assert study_fronts(ledger) == {"k3": "s1"}
    assert "broken.json: not a study file" in caplog.text


def test_a_search_config_sets_the_sweeper_and_its_space():
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+search=lora", "sweep_id=x"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.tunebench_sweeper.sweeper.TunebenchSweeper"
    space = parse_search_space([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    assert space.grid() == {"qlora.r": [4, 16, 64], "qlora.lr": [1e-4, 3e-4, 1e-3, 3e-3]}
    assert cfg.qlora.eval_steps == 5 and cfg.qlora.validation_examples == 24


def test_trials_an_interrupted_run_left_running_are_asked_again():
    from hydra_plugins.tunebench_sweeper.sweeper import _counted, _requeue_interrupted

    study = optuna.create_study(direction="maximize")
    done = study.ask()
    done.suggest_categorical("qlora.r", [4, 16])
    study.tell(done, 0.5)
    left = study.ask()
    r = left.suggest_categorical("qlora.r", [4, 16])
    assert _requeue_interrupted(study) == 1
    assert _counted(study) == 1  # the interrupted trial does not count toward n_trials
    assert study.trials[left.number].state == optuna.trial.TrialState.FAIL
    assert study.trials[left.number].user_attrs["interrupted"] is True
    again = study.ask()
    assert again.suggest_categorical("qlora.r", [4, 16]) == r


@pytest.mark.parametrize("scoring", ["choices", "generate"])
def test_pruning_watch_scores_its_validation_slice_as_evaluation_scores(compose_cfg, scoring):
    """A search must optimise the figure the board shows: under eval.scoring=choices the watch's accuracy is the
    accuracy of the most likely label, not of a free-text answer a tiny random model never gets right."""
    from harness.cell.choices import score_choices
    from harness.cell.models import load_model
    from harness.cell.predict import generate
    from harness.cell.pruning import TrainingWatch
    from harness.core.config import to_run_config
    from harness.core.data import prompt_messages

    cfg = to_run_config(compose_cfg(*TINY, "qlora.eval_steps=1", "qlora.validation_examples=12",
                                    f"eval.scoring={scoring}"))
    dataset = hold_out_validation(load_dataset(cfg.data), 12, seed=cfg.qlora.seed)
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, None)
    watch = TrainingWatch(cfg, loaded.tokenizer, dataset)
    conversations = [prompt_messages(r, cfg.data, cfg.model, None, dataset.labels) for r in dataset.validation]
    references = [r.answer for r in dataset.validation]
    chosen = score_choices(loaded.model, loaded.tokenizer, conversations, dataset.labels, cfg.eval, progress=False)
    generated = generate(loaded.model, loaded.tokenizer, conversations, cfg.eval, progress=False)
    expected = chosen if scoring == "choices" else generated
    accuracy = sum(p.strip() == a for p, a in zip(expected.predictions, references, strict=True)) / len(references)
    assert watch.evaluate(loaded.model) == pytest.approx(accuracy)
    assert set(chosen.predictions) <= set(dataset.labels)
