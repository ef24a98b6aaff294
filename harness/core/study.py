"""An Optuna study as both sides of a search reach it: the sweeper (hydra_plugins/tunebench_sweeper) creates it and
asks for trials; a cell (harness/cell/pruning.py) finds its own trial in it through the storage, reports
intermediate values and asks whether to stop. Nothing passes through process memory, so a trial on a joblib worker
or a Slurm node is pruned exactly as one in the launching process.

What the cell cannot get from the storage alone, the pruner, the sweeper writes into the study's user attributes
(`tunebench`), and the cell builds the same pruner from them."""

from __future__ import annotations

from pathlib import Path

from harness.core.config import ConfigError

JOURNAL_PREFIX = "journal:"
STUDY_ATTRS = "tunebench"
# Optuna pruners by the name a config gives them, and the settings each takes.
PRUNERS = {
    "successive_halving": ("SuccessiveHalvingPruner", ("min_resource", "reduction_factor",
                                                       "min_early_stopping_rate", "bootstrap_count")),
    "hyperband": ("HyperbandPruner", ("min_resource", "max_resource", "reduction_factor", "bootstrap_count")),
    "median": ("MedianPruner", ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials")),
    # Stop a trial whose value is outside [lower, upper] at a report: a floor any run must clear early on.
    "threshold": ("ThresholdPruner", ("lower", "upper", "n_warmup_steps", "interval_steps")),
    "none": ("NopPruner", ()),
}


def open_storage(url: str):
    """An Optuna storage from `url`: `journal:PATH` (Optuna's journal file: appends under a file lock, for a
    filesystem several nodes share) or any SQLAlchemy URL (an SQLite file, PostgreSQL, MySQL)."""
    import optuna  # deferred: only a search (and a cell that is one of its trials) needs it

    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend  # deferred with optuna

        path = Path(url.removeprefix(JOURNAL_PREFIX)).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(f"hydra.sweeper.storage={url!r}: give an SQLAlchemy URL (sqlite:///results/optuna.db, "
                          "postgresql://...) or journal:PATH for Optuna's journal file")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Parallel trials write the same file: wait for its lock instead of failing at once.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.storages.RDBStorage(url)


def build_pruner(spec: dict):
    """The Optuna pruner a `{name: ..., setting: value}` spec describes; an unknown name or setting is a
    ConfigError naming the known ones."""
    import optuna  # deferred: only a search needs it

    settings = dict(spec)
    name = str(settings.pop("name", "successive_halving"))
    if name not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner.name={name}: unknown pruner; known: {', '.join(PRUNERS)}")
    class_name, known = PRUNERS[name]
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"hydra.sweeper.pruner.{unknown[0]}: not a setting of the {name} pruner; its settings: "
                          f"{', '.join(known) or 'none'}")
    return getattr(optuna.pruners, class_name)(**given)


def cell_trial(study_name: str, storage_url: str, number: int):
    """The running trial `number` of a study, as the cell that is that trial sees it: with the study's pruner, so
    `trial.should_prune()` decides as the sweeper would. None when the study is not single-objective (Optuna
    prunes only single-objective trials)."""
    import optuna  # deferred: only a search trial needs it

    storage = open_storage(storage_url)
    attrs = optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(STUDY_ATTRS, {})
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=build_pruner(attrs.get("pruner", {})))
    if len(study.directions) != 1:
        return None
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
    return optuna.trial.Trial(study, trial_id)
