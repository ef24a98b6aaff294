"""`python -m datasets_gen recipe=doc_qa input=docs/ output=data/handbook backend.model=llama3:8b`"""

import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from datasets_gen import config  # noqa: E402, F401  (registers the schema)
from datasets_gen.backends import GenError  # noqa: E402
from harness.core.config import ConfigError  # noqa: E402

EXIT = {"code": 0}


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from datasets_gen.pipeline import build_dataset

    recipe_section = OmegaConf.to_container(cfg.recipe, resolve=True)
    try:
        gen_cfg = OmegaConf.to_object(cfg)
        card = build_dataset(gen_cfg, recipe_section)
    except (ConfigError, GenError) as exc:
        # A user mistake or a backend that cannot serve: one line saying what to do. Checkpoints are kept.
        print(f"datasets_gen: {exc}", file=sys.stderr)
        EXIT["code"] = 2
        return
    counts, leak = card["counts"], card["leakage"]
    print(
        f"datasets_gen: wrote {gen_cfg.output}: {counts['train']} train, {counts['eval']} eval, "
        f"{counts['corpus']} corpus; dropped {counts['dropped']} {card['dropped'] or ''}; "
        f"leakage: {leak['flagged']} eval questions >= {leak['threshold']} overlap with train",
        file=sys.stderr,
    )


def guard_argv() -> None:
    """Before Hydra creates `<output>/.work/hydra/`: compose the config, check the name and the input, and
    stop with one line on a mistake (no backend is contacted for that)."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    from datasets_gen.pipeline import check_input
    from harness.argv_guard import UsageError, compose_config, refuse_secrets

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
        check_input(gen_cfg)
        if str(gen_cfg.output).startswith("~"):  # Hydra's run folder lives under it: no literal "~" folder
            sys.argv.append(f"output={os.path.expanduser(gen_cfg.output)}")
    except (UsageError, ConfigError, GenError) as exc:
        print(f"datasets_gen: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    guard_argv()
    main()
    sys.exit(EXIT["code"])
