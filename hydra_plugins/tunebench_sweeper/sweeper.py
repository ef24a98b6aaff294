"""hydra/sweeper=tunebench: an Optuna study whose trials are cells, launched through the configured launcher.

    python -m harness -m hydra/sweeper=tunebench sweep_id=lora-search model=smollm2_135m method=instruct \
      data=shop_catalog 'qlora.r=choice(4,16,64)' 'qlora.lr=tag(log, interval(1e-4, 3e-3))' \
      qlora.eval_steps=5 qlora.validation_examples=24 hydra.sweeper.n_trials=12

Each trial is one job of the launcher (basic, joblib, Slurm), so claims, stages, the ledger and the sweep summary
work as in any sweep. The trial's cell learns which trial it is from three overrides (trial.study, trial.storage,
trial.number) and reaches the study through its storage: it reports its validation curve there and stops when the
study's pruner says so (harness/cell/pruning.py), whichever process or node it runs on. The value a trial is told
comes from the ledger: a cell that an earlier sweep completed is told its recorded value and not run again.

Unlike Hydra's own Optuna sweeper (hydra-optuna-sweeper 1.3 pins optuna<3), this one runs on the current Optuna,
lets trials prune inside their cells, and continues a study: the same command with the same sweep_id runs the
trials still missing from n_trials (a trial an interrupted run left running is asked again).
"""

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

import harness.metrics  # noqa: F401  (declares every metric key: which way is better)
from harness.core.config import ConfigError
from harness.core.ledger import COMPLETED, PRUNED, Ledger
from harness.core.outcome import DONE_BEFORE, read_outcome
from harness.core.study import STUDY_ATTRS, build_pruner, open_storage
from harness.metrics.keys import spec_of
from hydra_plugins.tunebench_sweeper.search_space import SearchSpace, override_value, parse_search_space

try:
    import optuna
except ImportError:  # the [search] extra is absent; Hydra imports every plugin at start-up all the same
    optuna = None

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid", "nsga2")
# Where a search's study sits unless hydra.sweeper.storage names another: one SQLite file per results folder.
DEFAULT_STORAGE = "sqlite:///{results_dir}/optuna.db"
# What a study's front is written to, for the leaderboard (harness/board/): results_dir/studies/<study>.json.
STUDIES_DIR = "studies"


@dataclass
class PrunerConf:
    # successive_halving (default), hyperband, median, threshold, none. Successive halving (asynchronous:
    # ASHA) because a trial is judged the moment it reaches a rung, never waiting for a batch (parallel joblib
    # or Slurm trials), and because with the tens of trials a GPU budget allows, Hyperband's brackets would
    # split them into groups too small to compare; the median rule lets its startup trials run to the end.
    name: str = "successive_halving"
    # Settings of the chosen Optuna pruner (null: Optuna's default), passed as they are.
    min_resource: Any = None
    max_resource: Any = None
    reduction_factor: int | None = None
    min_early_stopping_rate: int | None = None
    bootstrap_count: int | None = None
    n_startup_trials: int | None = None
    n_warmup_steps: int | None = None
    interval_steps: int | None = None
    n_min_trials: int | None = None
    lower: float | None = None
    upper: float | None = None


@dataclass
class TunebenchSweeperConf:
    _target_: str = "hydra_plugins.tunebench_sweeper.sweeper.TunebenchSweeper"
    # The metric to optimise (its direction comes from its declaration in harness/metrics/keys.py), or two: a
    # quality metric and a cost figure, e.g. [accuracy, usd_per_1k_generations] (NSGA-II; not pruned: Optuna
    # prunes single-objective trials only).
    objective: Any = "accuracy"
    # Trials the study should hold when the command ends (a continued study counts the ones it has).
    n_trials: int = 20
    # Trials in flight at once: launched together as one batch (the launcher decides how many run in parallel:
    # hydra.launcher.n_jobs for joblib, array_parallelism for Slurm).
    n_jobs: int = 1
    # tpe (default), random, grid (every combination of choice/range values once), nsga2 (two objectives' default).
    sampler: str | None = None
    seed: int = 42
    # null: sqlite:///<results_dir>/optuna.db. Any SQLAlchemy URL, or journal:PATH (Optuna's journal file, for a
    # filesystem Slurm nodes share).
    storage: str | None = None
    # null: the sweep id (name one with sweep_id=NAME to continue the study later).
    study_name: str | None = None
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # The search space in Hydra's override grammar, as hydra-optuna-sweeper takes it: {key: "choice(4,16)"}.
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="tunebench", node=TunebenchSweeperConf, provider="tunebench")


@dataclass
class Objectives:
    names: list[str]
    directions: list[str]  # "maximize" / "minimize", from each key's declared direction

    @staticmethod
    def parse(objective) -> "Objectives":
        names = [str(x) for x in objective] if isinstance(objective, list | tuple | ListConfig) else [str(objective)]
        if not 1 <= len(names) <= 2:
            raise ConfigError(f"hydra.sweeper.objective={names}: give one metric, or two (a quality metric and a cost "
                              "figure, e.g. [accuracy,usd_per_1k_generations])")
        directions = []
        for name in names:
            spec = spec_of(name)
            if spec is None:
                raise ConfigError(f"hydra.sweeper.objective: {name!r} is not a declared metric or cost key (see "
                                  "harness/metrics/keys.py), so which way is better is unknown")
            directions.append("maximize" if spec.higher_is_better else "minimize")
        if spec_of(names[0]).section == "cost":
            raise ConfigError(f"hydra.sweeper.objective: the first objective must be a quality metric (it is what a "
                              f"cell watches during training), got the cost figure {names[0]!r}")
        return Objectives(names, directions)

    def values(self, record: dict) -> list[float] | None:
        """The record's value of each objective (None when one is missing)."""
        out = []
        for name in self.names:
            section = record.get(spec_of(name).section) or {}
            value = section.get(name)
            if value is None or not math.isfinite(float(value)):
                return None
            out.append(float(value))
        return out


class TunebenchSweeper(Sweeper):
    def __init__(self, **conf: Any) -> None:
        if optuna is None:
            raise ConfigError("hydra/sweeper=tunebench: Optuna is not installed; pip install -e '.[search]'")
        self.conf: TunebenchSweeperConf = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(TunebenchSweeperConf), conf))
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._search(arguments)
        except ConfigError as exc:
            # One line, no traceback: nothing of the search has run.
            print(f"tunebench: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    def _search(self, arguments: list[str]) -> None:
        conf, config = self.conf, self.config
        objectives = Objectives.parse(conf.objective)
        space = parse_search_space([f"{k}={v}" for k, v in (conf.params or {}).items()] + list(arguments))
        for set_here in ("objective", "trial.study", "trial.storage", "trial.number"):  # the sweeper sets these
            space.fixed.pop(set_here, None)
        if not space.swept:
            raise ConfigError("hydra/sweeper=tunebench: nothing to search; sweep at least one key, e.g. "
                              "'qlora.r=choice(4,16,64)' or 'qlora.lr=tag(log, interval(1e-4, 1e-2))'")
        _check_n(conf)
        results_dir = Path(str(config.results_dir)).expanduser()
        storage_url = conf.storage or DEFAULT_STORAGE.format(results_dir=results_dir.resolve())
        study_name = conf.study_name or str(config.sweep_id)
        pruner_spec = {k: v for k, v in vars(conf.pruner).items() if v is not None}
        multi = len(objectives.names) > 1
        study = optuna.create_study(study_name=study_name, storage=open_storage(storage_url),
                                    sampler=_sampler(conf, space, multi), pruner=build_pruner(pruner_spec),
                                    directions=objectives.directions, load_if_exists=True)
        _check_same_question(study, objectives)
        study.set_user_attr(STUDY_ATTRS, {"objectives": objectives.names, "pruner": pruner_spec,
                                          "space": {k: repr(v) for k, v in space.swept.items()}})
        if multi and pruner_spec.get("name") != "none":
            log.info("two objectives: Optuna prunes single-objective trials only, so every trial trains to the end")
        requeued = _requeue_interrupted(study)
        n_trials = _trial_budget(conf, space)
        self.job_idx = _next_job_number(self.sweep_dir)
        log.info("study %s in %s: %d trial(s) already, %d to reach; objective %s%s", study_name, storage_url,
                 _counted(study), n_trials, ", ".join(f"{n} ({d})" for n, d in zip(objectives.names,
                                                                                   objectives.directions)),
                 f"; {requeued} interrupted trial(s) asked again" if requeued else "")
        ledger = Ledger(results_dir / "runs.jsonl")
        while (left := n_trials - _counted(study)) > 0:
            trials = [study.ask() for _ in range(min(conf.n_jobs, left))]
            batch = [self._overrides(trial, space, objectives, study_name, storage_url) for trial in trials]
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            for trial, ret, offset in zip(trials, returns, range(len(trials))):
                self._tell(study, trial, ret, self.job_idx + offset, objectives, ledger)
            self.job_idx += len(returns)
        _write_front(results_dir, study, objectives, storage_url)

    def _overrides(self, trial, space: SearchSpace, objectives: Objectives, study_name: str, storage: str
                   ) -> list[str]:
        sampled = {name: trial._suggest(name, dist) for name, dist in space.swept.items()}
        return [*(f"{k}={v}" for k, v in space.fixed.items()),
                *(f"{k}={override_value(v)}" for k, v in sampled.items()),
                f"objective={objectives.names[0]}", f"trial.study={study_name}", f"trial.storage='{storage}'",
                f"trial.number={trial.number}"]

    def _tell(self, study, trial, ret, job_number: int, objectives: Objectives, ledger: Ledger) -> None:
        """What the trial's cell ended with, read from its job's outcome and the ledger (never from the job's return
        value alone: a launcher in another process cannot be trusted to carry it)."""
        job_dir = Path(str(OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default="") or "")) \
            if getattr(ret, "hydra_cfg", None) is not None else self.sweep_dir / str(job_number)
        outcome = read_outcome(job_dir) or read_outcome(self.sweep_dir / str(job_number))
        status = outcome.status if outcome is not None else "no outcome (the job's process died?)"
        record = ledger.completed(outcome.run_key) if outcome is not None and outcome.run_key else None
        if outcome is not None and outcome.run_key:
            trial.set_user_attr("run_key", outcome.run_key)
        trial.set_user_attr("outcome", status)
        trial.set_user_attr("job", str(job_dir))
        params = " ".join(f"{k}={override_value(v)}" for k, v in trial.params.items())
        values = objectives.values(record) if record is not None and status in (COMPLETED, DONE_BEFORE) else None
        if values is not None:
            if status == DONE_BEFORE:
                trial.set_user_attr("from_ledger", record["run_id"])
            study.tell(trial, values=values if len(values) > 1 else values[0])
            shown = ", ".join(f"{n} {v:.4g}" for n, v in zip(objectives.names, values))
            log.info("trial %d (%s): %s%s", trial.number, params, shown,
                     " (from the ledger: completed before)" if status == DONE_BEFORE else "")
        elif status == PRUNED:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info("trial %d (%s): pruned", trial.number, params)
        else:
            # The study goes on without it: a failed cell is a failed trial (objective NaN), never a value.
            trial.set_user_attr("objective", "nan")
            if outcome is not None and outcome.detail:
                trial.set_user_attr("detail", outcome.detail[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d (%s): failed (%s): objective NaN, the study goes on", trial.number, params, status)


def _check_n(conf: TunebenchSweeperConf) -> None:
    if conf.n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={conf.n_trials}: must be at least 1")
    if conf.n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs={conf.n_jobs}: must be at least 1 (trials in flight at once)")


def _sampler(conf: TunebenchSweeperConf, space: SearchSpace, multi: bool):
    name = conf.sampler or ("nsga2" if multi else "tpe")
    if name not in SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler={name}: unknown; known: {', '.join(SAMPLERS)}")
    if name == "grid":
        return _grid_sampler(space.grid(), seed=conf.seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=conf.seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=conf.seed)
    return optuna.samplers.TPESampler(seed=conf.seed, multivariate=True)


def _grid_sampler(*args, **kwargs):
    """Optuna's grid sampler, except that it does not stop the study once every point is asked: it does that with
    `Study.stop()`, which raises outside `study.optimize`; the sweeper counts trials itself (and caps n_trials at
    the grid's size)."""

    class _NonStoppingGrid(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return _NonStoppingGrid(*args, **kwargs)


def _trial_budget(conf: TunebenchSweeperConf, space: SearchSpace) -> int:
    if (conf.sampler or "") != "grid":
        return conf.n_trials
    size = math.prod(len(values) for values in space.grid().values())
    if conf.n_trials > size:
        log.info("sampler=grid: the grid has %d combinations; n_trials=%d is capped there", size, conf.n_trials)
    return min(conf.n_trials, size)


def _check_same_question(study, objectives: Objectives) -> None:
    """A continued study must optimise what it optimised before: other objectives would mix incomparable values."""
    before = study.user_attrs.get(STUDY_ATTRS, {}).get("objectives")
    if before is not None and before != objectives.names:
        raise ConfigError(f"hydra.sweeper.objective={objectives.names}: study {study.study_name} optimises {before}; "
                          "give the same objective, or another sweep_id for a new study")


def _counted(study) -> int:
    """Trials that count toward n_trials: finished ones, but not those an interrupted run left behind."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get("interrupted"))


def _requeue_interrupted(study) -> int:
    """Trials still `running` when this command starts were left by a run that was stopped: they fail (marked
    interrupted, not counted) and their parameters are asked again, so the cell resumes (or is found done)."""
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
    return len(stale)


def _next_job_number(sweep_dir: Path) -> int:
    """Job folders of a continued study follow the ones its earlier runs wrote, never overwrite them."""
    numbers = [int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()] if sweep_dir.is_dir() else []
    return max(numbers, default=-1) + 1


def _write_front(results_dir: Path, study, objectives: Objectives, storage_url: str) -> None:
    """The study's best trials (its Pareto front with two objectives) by run key, for the leaderboard, and a line
    saying where to look."""
    front = [t for t in study.best_trials if t.user_attrs.get("run_key")] if _any_complete(study) else []
    folder = results_dir / STUDIES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    (folder / f"{study.study_name}.json").write_text(json.dumps({
        "study": study.study_name, "storage": storage_url, "objectives": objectives.names,
        "directions": objectives.directions,
        "front": [{"trial": t.number, "run_key": t.user_attrs["run_key"], "values": t.values, "params": t.params}
                  for t in front],
        "trials": {s: states.count(s) for s in sorted(set(states))},
    }, indent=1), encoding="utf-8")
    for t in front:
        log.info("%s trial %d: %s (%s)", "front" if len(objectives.names) > 1 else "best", t.number,
                 ", ".join(f"{n} {v:.4g}" for n, v in zip(objectives.names, t.values)),
                 " ".join(f"{k}={override_value(v)}" for k, v in t.params.items()))
    log.info("study %s: optuna-dashboard %s", study.study_name, storage_url if not storage_url.startswith(
        "journal:") else storage_url.removeprefix("journal:"))


def _any_complete(study) -> bool:
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
