"""Check a `python -m harness` command line before Hydra sees it.

Hydra writes the overrides into `.hydra/*.yaml` and, under `-m`, into a job folder's name before the task
function runs: a secret typed on the command line, or a value with `../` in it, would reach the disk before any
schema check could refuse it. And a mistake found inside the task function costs a folder per job and, under
-m, one failure per cell. So the entry point calls `guard_argv` first: it refuses secrets and escaping paths
from the raw text, then composes the config the way Hydra will (each swept value once) and runs every check
that needs no model (`harness.cell.checks.check_before_load`). A mistake ends here with one line and exit status 2,
before anything is written.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from itertools import islice
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from harness.cell.checks import check_before_load, check_truncation_if_cheap
from harness.cell.tracking import check_tracker_login, probe_wandb_server
from harness.core.config import CONF_DIR, ENV_VAR_NAME, ConfigError, JudgeBackend, RunConfig, schema_keys, to_run_config
from harness.core.data import DataError
from harness.core.redact import is_secret_key, looks_like_secret
from harness.metrics.judge import probe_judge

# Hydra's own flags that print something and exit, or compose from another config tree: Hydra handles them
# as it sees fit; only the secrets check applies.
_HANDED_OVER_FLAGS = {"-h", "--help", "--hydra-help", "--version", "--info", "-i", "--cfg", "-c",
                      "--shell-completion", "-sc", "--experimental-rerun", "--config-path", "-cp", "--config-name",
                      "-cn", "--config-dir", "-cd", "--package", "-p", "--resolve"}
_MULTIRUN_FLAGS = {"-m", "--multirun"}
# Settings that name a folder: "~" means the home folder, as in a shell.
_HOME_EXPANDED = ("results_dir", "cache_dir")
# Compose at most this many variants of a sweep up front (each swept value once); the task function checks all.
MAX_VARIANTS = 64


# Options served by an optional extra: without it Hydra answers with a many-line "could not load" error.
_OPTIONAL_EXTRAS = {
    ("hydra/sweeper", "tunebench"): ("optuna", "search"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("hydra/launcher", "slurm_cpu"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("hydra/launcher", "local_gpus"): ("hydra_plugins.hydra_joblib_launcher", "cluster"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "cluster"),
}


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


def guard_argv(argv: list[str] | None = None) -> None:
    """Check `sys.argv` (rewriting `results_dir=~/x` in place); on a mistake print one line and exit 2."""
    args = sys.argv if argv is None else argv
    try:
        args[1:] = check_command_line(args[1:])
    except UsageError as exc:
        print(f"tunebench: error: {exc}", file=sys.stderr)
        sys.exit(2)


def check_command_line(args: list[str]) -> list[str]:
    """The arguments to hand to Hydra (with `~` expanded), or UsageError naming the first mistake."""
    flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    if flags & _HANDED_OVER_FLAGS:
        refuse_secrets([a for a in args if "=" in a and not a.startswith("-")])
        return args
    overrides = [a for a in args if not a.startswith("-")]
    refuse_secrets(overrides)
    refuse_missing_extras(overrides)
    args = [a if a.startswith("-") else _expand_home(a) for a in args]
    overrides = [a for a in args if not a.startswith("-")]
    parsed = _parse(overrides)
    if flags & _MULTIRUN_FLAGS:
        _refuse_escaping_job_folder(parsed)
    else:
        _refuse_sweeps_without_multirun(parsed)
    _check_hydra_folders(parsed)
    warnings: dict[str, None] = {}
    probed: set[tuple] = set()
    results_dirs = {_check_variant(variant, warnings, probed) for variant in islice(_variants(parsed), MAX_VARIANTS)}
    for warning in warnings:
        print(f"tunebench: warning: {warning}", file=sys.stderr)
    # results_dir="~/x" set in a YAML file: Hydra would interpolate the literal "~" into its run folder.
    if len(results_dirs) == 1 and not any(_key_and_value(o)[0] == "results_dir" for o in overrides):
        (raw,) = results_dirs
        if raw.startswith("~"):
            args = [*args, f"results_dir={os.path.expanduser(raw)}"]
    return args


def _key_and_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~").split("@", 1)[0], value


def refuse_secrets(overrides: list[str]) -> None:
    for override in overrides:
        key, value = _key_and_value(override)
        name = key.rpartition(".")[2]
        # Never echo the value: the line goes to a console, maybe a CI log.
        if name.endswith("_env") and value not in ("", "null") and not ENV_VAR_NAME.fullmatch(value):
            raise UsageError(f"{key}: must be the NAME of an environment variable (upper-case letters, digits, '_'; "
                             f"e.g. {key}=OPENAI_API_KEY), not a key; nothing was written")
        if is_secret_key(name) or looks_like_secret(value):
            raise UsageError(f"{key}: the value looks like a secret (API key or token); secrets are never taken on "
                             "the command line: put it in an environment variable (OPENAI_API_KEY, HF_TOKEN, "
                             "WANDB_API_KEY) and, for the judge, name it with judge.api_key_env; nothing was written")


def refuse_missing_extras(overrides: list[str]) -> None:
    for override in overrides:
        needed = _OPTIONAL_EXTRAS.get(_key_and_value(override))
        if needed and not _importable(needed[0]):
            raise UsageError(f"{override}: needs the '{needed[1]}' extra, which is not installed: "
                             f"pip install -e '.[{needed[1]}]'")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _expand_home(override: str) -> str:
    key, value = _key_and_value(override)
    if key in _HOME_EXPANDED and value.startswith("~"):
        return override.partition("=")[0] + "=" + os.path.expanduser(value)
    return override


def _parse(overrides: list[str]):
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise _unreadable(exc) from None


def _unreadable(exc: OverrideParseException) -> UsageError:
    return UsageError(f"cannot read an override: {str(exc).splitlines()[0]}; write key=value, quoting values "
                      "with spaces, braces or commas ('key=\"a, b\"')")


def _refuse_escaping_job_folder(parsed) -> None:
    """Under -m each job's folder is named after its overrides (hydra.sweep.subdir): `..` in a value could put
    the folder, its log and .hydra/ outside results_dir."""
    root = Path("/sweep")
    lines = []
    for override in parsed:
        if override.is_hydra_override():
            continue
        if override.is_sweep_override():
            values = _sweep_values(override) or []
        else:
            values = [override.get_value_element_as_str()]
        for value in values:
            _job_folder_under(root, f"{override.get_key_element()}={value}", f"{override.get_key_element()}={value}")
        lines += [f"{override.get_key_element()}={v}" for v in values[:1]]
    _job_folder_under(root, ",".join(sorted(lines)), "these overrides together")


def _refuse_sweeps_without_multirun(parsed) -> None:
    """Hydra would stop with a multi-line message (and exit status 1) on a swept value without -m."""
    for override in parsed:
        if override.is_sweep_override():
            line = override.input_line
            key = override.get_key_element()
            raise UsageError(f"{line}: more than one value runs only as a sweep: add -m (python -m harness -m "
                             f"{line} ...), or write a list as {key}=[...] and a string with a comma as "
                             f"{key}='\"a,b\"'")


def _check_hydra_folders(parsed) -> None:
    """hydra.run.dir / hydra.sweep.dir set on the command line: Hydra creates them before any check of ours."""
    for override in parsed:
        if override.get_key_element() in ("hydra.run.dir", "hydra.sweep.dir") and not override.is_sweep_override():
            value = override.get_value_element_as_str()
            if "${" not in value:
                try:
                    check_folder_writable(Path(os.path.expanduser(value)), override.get_key_element())
                except ConfigError as exc:
                    raise UsageError(str(exc)) from None


def _job_folder_under(root: Path, dirname: str, culprit: str) -> None:
    folder = Path(os.path.normpath(root / f"0_{dirname}"))
    if root not in folder.parents:
        raise UsageError(f"{culprit}: under -m the overrides become the job folder's name, and the '..' in it would "
                         "put the folder outside results_dir; give a plain name, or a path without '..'")


def _sweep_values(override) -> list[str] | None:
    """A sweep's values, or None where only Hydra can list them (glob over a group, a sweeper's interval)."""
    if not override.is_discrete_sweep():
        return None
    try:
        return list(override.sweep_string_iterator())
    except HydraException:
        return None


def _variants(parsed):
    """The override lists to compose: the first value of every sweep, then each other swept value once."""
    sweeps = [(i, _sweep_values(o)) for i, o in enumerate(parsed) if o.is_sweep_override()]
    if any(values is None for _, values in sweeps):
        return  # glob and interval sweeps are expanded by Hydra's sweeper: the task function checks each job
    base = [o.input_line if not o.is_sweep_override() else None for o in parsed]
    firsts = {i: values[0] for i, values in sweeps}

    def build(choice: dict[int, str]) -> list[str]:
        return [line if line is not None else f"{parsed[i].get_key_element()}={choice[i]}"
                for i, line in enumerate(base)]

    yield build(firsts)
    for i, values in sweeps:
        for value in values[1:]:
            yield build({**firsts, i: value})


def _check_variant(overrides: list[str], warnings: dict[str, None], probed: set[tuple]) -> str:
    """Compose one variant and run every check that needs no model weights, the services it will call included;
    returns results_dir as written. Warnings are collected (in order, once each) into `warnings`."""
    cfg = compose_config(overrides)
    try:
        run_cfg = to_run_config(cfg)
        check_folder_writable(Path(run_cfg.results_dir), "results_dir")
        check_folder_writable(Path(run_cfg.cache_dir).expanduser(), "cache_dir")
        dataset = check_before_load(run_cfg)
        check_truncation_if_cheap(run_cfg, dataset)
        check_services(run_cfg, probed)
    except (ConfigError, DataError) as exc:
        raise UsageError(str(exc)) from None
    warnings.update(dict.fromkeys(dataset.warnings))
    return str(cfg.results_dir)


def check_services(cfg: RunConfig, probed: set[tuple]) -> None:
    """The W&B login and the judge's server, asked here rather than by the cell: a refusal after Hydra started
    would leave a run folder (and a claim) behind. Each judge is asked once per command line; a plan asks none."""
    if cfg.plan != "false":
        return
    check_tracker_login(cfg.tracker)
    if ("wandb", cfg.tracker.mode.value) not in probed:
        probe_wandb_server(cfg.tracker)
        probed.add(("wandb", cfg.tracker.mode.value))
    judge = cfg.judge
    if "ragas" in cfg.data.metrics and judge.backend != JudgeBackend.none and judge.check_on_start:
        identity = (judge.backend, judge.model, judge.base_url, judge.api_key_env)
        if identity not in probed:
            probe_judge(judge)
            probed.add(identity)


def compose_config(overrides: list[str], conf_dir: Path | None = None):
    """Compose `conf_dir`/config.yaml (the harness's by default) with `overrides` as Hydra would; a mistake is
    a UsageError of one line."""

    conf_dir = conf_dir or CONF_DIR
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(config_name="config", overrides=[o for o in overrides if not o.startswith("hydra")])
    except OverrideParseException as exc:  # e.g. braces the shell unquoted: one line, from every entry point
        raise _unreadable(exc) from None
    except MissingConfigException as exc:
        raise UsageError(_missing_option(exc, conf_dir)) from None
    except (ConfigCompositionException, OmegaConfBaseException) as exc:
        raise UsageError(_composition_error(exc, conf_dir == CONF_DIR)) from None


def _missing_option(exc, conf_dir: Path) -> str:
    missing = getattr(exc, "missing_cfg_file", "") or ""
    group, _, name = str(missing).rpartition("/")
    if group and (conf_dir / group).is_dir():
        known = ", ".join(sorted(p.stem for p in (conf_dir / group).glob("*.yaml")))
        return f"{group}={name}: no such option; known: {known}"
    return str(exc).splitlines()[0]


def _composition_error(exc, harness_schema: bool = True) -> str:

    cause = exc.__cause__ if exc.__cause__ is not None else exc
    key = getattr(cause, "full_key", None)
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and key:
        section = key.rpartition(".")[0]
        where = f"a setting of {section}" if section else "a top-level setting"
        known = f"; known: {', '.join(schema_keys(section))}" if harness_schema else ""
        return f"{key}: not {where}{known}"
    first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    if key:
        return f"{key}: {first}; give {key} a value of its type"
    return f"{first} ({str(exc).splitlines()[0]})"


def check_folder_writable(folder: Path, key: str) -> None:
    """`key` names a folder this user can create files in, found by creating (and removing) one: os.access says
    yes to root everywhere, /proc included, and knows nothing of read-only mounts. The folder itself may not
    exist yet: its nearest existing parent is tried, and nothing is left behind."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}={folder}: is a file, not a folder; give a folder ({key}=PATH)")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={folder}: {existing} is a file, not a folder; give another {key}")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".tunebench-write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{key}={folder}: {existing} is not writable by this user ({reason}); give a folder you "
                          f"can write ({key}=PATH)") from None


def check_results_dir(results: Path) -> None:
    """results_dir must be a folder this user can write (Hydra creates its run folder there first)."""
    check_folder_writable(results, "results_dir")
