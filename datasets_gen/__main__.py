"""`python -m datasets_gen recipe=doc_qa input=docs/ output=data/handbook backend.model=llama3:8b`

A refused command writes nothing: `guard_argv` checks what it can before Hydra creates `<output>/.work/hydra/`
(the config, the recipe's parameters, the input, the output folder's writability), and a refusal found later,
inside the recipe, removes the run folder Hydra made and every folder it had to create for it. Teacher replies
already paid for stay in `<output>/.work/` (the next run re-uses them), and so does the folder holding them.
"""

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException  # noqa: E402

from datasets_gen import config  # noqa: E402, F401  (registers the schema)
from datasets_gen.backends import GenError  # noqa: E402
from datasets_gen.pipeline import build_dataset, check_input  # noqa: E402
from datasets_gen.recipes import get_recipe, read_params  # noqa: E402
from harness.argv_guard import UsageError, check_folder_writable, compose_config, refuse_secrets  # noqa: E402
from harness.core.config import ConfigError  # noqa: E402

EXIT = {"code": 0}
# The nearest folder above Hydra's run folder that existed before this command (set by guard_argv): a refusal
# removes what was created below it, and nothing above.
EXISTED = {"folder": None}


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    recipe_section = OmegaConf.to_container(cfg.recipe, resolve=True)
    try:
        gen_cfg = OmegaConf.to_object(cfg)
        card = build_dataset(gen_cfg, recipe_section)
    except (ConfigError, GenError) as exc:
        # A user mistake or a backend that cannot serve: one line saying what to do. Checkpoints are kept.
        remove_run_folder(Path(HydraConfig.get().runtime.output_dir).resolve(), EXISTED["folder"])
        print(f"datasets_gen: error: {exc}", file=sys.stderr)
        EXIT["code"] = 2
        return
    for warning in card.get("warnings", []):
        print(f"datasets_gen: warning: {warning}", file=sys.stderr)
    counts, leak = card["counts"], card["leakage"]
    print(
        f"datasets_gen: wrote {gen_cfg.output}: {counts['train']} train, {counts['eval']} eval, "
        f"{counts['corpus']} corpus; dropped {counts['dropped']} {card['dropped'] or ''}; "
        f"leakage: {leak['flagged']} eval questions >= {leak['threshold']} overlap with train",
        file=sys.stderr,
    )


def remove_run_folder(run_dir: Path, existed: Path | None) -> None:
    """Hydra's run folder, then each folder above it that is left empty, up to (not including) `existed`.
    Without `existed` (the guard did not run: Hydra's own flags) only the run folder goes."""
    shutil.rmtree(run_dir, ignore_errors=True)
    if existed is None:
        return
    folder = run_dir.parent
    while folder != existed and existed in folder.parents:
        try:
            folder.rmdir()  # only an empty folder: checkpoints already paid for keep theirs
        except OSError:
            return
        folder = folder.parent


def nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def guard_argv() -> None:
    """Before Hydra creates `<output>/.work/hydra/`: compose the config, check the name, the recipe's parameters,
    the input and the output folder, and stop with one line on a mistake (no backend is contacted for that)."""
    args = sys.argv[1:]
    if any(a.startswith("-") for a in args):
        return  # Hydra's own flags (--help, --cfg, -m ...): Hydra handles them
    try:
        refuse_secrets(args)
        cfg = compose_config(args, config.CONF_DIR)
        try:
            gen_cfg = OmegaConf.to_object(cfg)
        except MissingMandatoryValue as exc:
            raise UsageError(f"{exc.full_key}: required; give {exc.full_key}=PATH (a documents folder for "
                             "recipe=doc_qa, a .csv/.jsonl catalog for the catalog recipes)") from None
        except OmegaConfBaseException as exc:
            raise UsageError(f"{exc.full_key}: {str(exc).splitlines()[0]}") from None
        recipe_section = OmegaConf.to_container(cfg.recipe, resolve=True)
        read_params(get_recipe(recipe_section.get("name", "")), recipe_section)
        check_input(gen_cfg, get_recipe(recipe_section.get("name", "")))
        output = Path(os.path.expanduser(str(gen_cfg.output))).resolve()
        check_folder_writable(output, "output")
        if str(gen_cfg.output).startswith("~"):  # Hydra's run folder lives under it: no literal "~" folder
            sys.argv.append(f"output={output}")
        EXISTED["folder"] = nearest_existing(output)
    except (UsageError, ConfigError, GenError) as exc:
        print(f"datasets_gen: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    guard_argv()
    main()
    sys.exit(EXIT["code"])
