"""From a composed config to a dataset folder: backend check, recipe, quality filters, card."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path

import harness
from datasets_gen.backends import GenError, make_backend
from datasets_gen.generation import Generator, prompt_hashes
from datasets_gen.output import leakage_report, write_dataset
from datasets_gen.quality import QualityFilter
from datasets_gen.recipes import RecipeContext, get_recipe, read_params
from datasets_gen.sources import CATALOG_SUFFIXES, CatalogColumns

CARD_SCHEMA_VERSION = 1


def check_input(cfg, recipe=None) -> None:
    """The input exists and is what the recipe reads (a catalog recipe a .csv/.jsonl file, doc_qa a folder):
    found before any backend is contacted."""
    path = Path(cfg.input).expanduser()
    if not path.exists():
        raise GenError(f"input: {cfg.input} does not exist; give input= a documents folder (recipe=doc_qa) or a "
                       ".csv/.jsonl catalog (the catalog recipes)")
    if recipe is None:
        return
    if issubclass(recipe.Params, CatalogColumns):
        if path.is_dir():
            found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in CATALOG_SUFFIXES)
            hint = f", e.g. input={path / found[0]}" if found else ""
            raise GenError(f"input: {cfg.input} is a folder; recipe={recipe.name} reads one .csv or .jsonl catalog "
                           f"file: give its path{hint}")
        if path.suffix.lower() not in CATALOG_SUFFIXES:
            raise GenError(f"input: {cfg.input} is not a .csv or .jsonl file; recipe={recipe.name} reads a catalog "
                           "(export it as CSV with a header row, or JSON lines)")
    elif not path.is_dir():
        raise GenError(f"input: {cfg.input} is a file; recipe={recipe.name} reads a folder of documents (.md, .txt, "
                       f".pdf): give input={path.parent}, or recipe=departments / product_descriptions / "
                       "catalog_recs for a catalog")


def build_dataset(cfg, recipe_section: dict) -> dict:
    """Write the dataset to `cfg.output` and return its card. Checkpoints stay in `<output>/.work/`."""
    started = time.perf_counter()
    recipe = get_recipe(recipe_section.get("name", ""))
    params = read_params(recipe, recipe_section)
    output_dir = Path(cfg.output).expanduser().resolve()
    check_input(cfg, recipe)
    # The backend is checked (a server asked, a local model loaded) only when a request has to be sent:
    # a recipe that finds everything in its input, or a re-run served from checkpoints, needs none.
    backend = make_backend(cfg.backend, cfg.seed)
    generator = Generator(backend, output_dir / ".work", progress=cfg.progress)
    quality = QualityFilter(cfg.quality)
    ctx = RecipeContext(cfg, params, generator, quality, Path(cfg.input).expanduser().resolve(),
                        random.Random(cfg.seed))
    try:
        result = recipe.build(ctx)
    except GenError as exc:
        if not any(s.generated for s in generator.stats.values()):  # nothing generated: the message says it all
            raise
        dropped = f"; dropped so far: {dict(quality.dropped)}" if quality.dropped else ""
        raise GenError(f"{exc}{dropped}; generated replies are kept in {output_dir / '.work'}") from exc
    card = {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": cfg.name,
        "task": result.task,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by": f"tunebench datasets_gen {harness.__version__}",
        "recipe": {"name": recipe.name, "params": dict(params.__dict__)},
        "backend": backend.describe(),
        "seed": cfg.seed,
        "eval_fraction": cfg.eval_fraction,
        "limit": cfg.limit,
        "prompts": prompt_hashes(generator.prompts),
        "sources": ctx.sources,
        "counts": {"train": len(result.train), "eval": len(result.eval), "corpus": len(result.corpus),
                   "dropped": sum(quality.dropped.values())},
        "dropped": dict(sorted(quality.dropped.items())),
        "filters": {k: v for k, v in cfg.quality.__dict__.items()},
        "generation": {step: stats.to_dict() for step, stats in generator.stats.items()},
        "leakage": leakage_report([r["question"] for r in result.train], [r["question"] for r in result.eval],
                                  cfg.quality.leakage_threshold),
        "report": result.report,
        "warnings": result.warnings,
        "timings": {"total_s": round(time.perf_counter() - started, 3)},
    }
    write_dataset(output_dir, result, card)
    return card
