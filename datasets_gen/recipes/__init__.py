"""Recipes, registered by name: each turns raw material into a dataset, through the teacher backend.

Adding a recipe is one module here (a class decorated with `@register_recipe("name")`, with a `Params`
dataclass and a `build(ctx)` method) and one YAML in datasets_gen/conf/recipe/.
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from datasets_gen.generation import Generator
from datasets_gen.output import DatasetOutput
from datasets_gen.quality import QualityFilter
from harness.core.config import ConfigError
from harness.core.registry import Registry

BUILTIN = ("doc_qa", "product_descriptions", "departments", "catalog_recs")


@dataclass
class RecipeContext:
    cfg: Any  # GenConfig
    params: Any  # the recipe's own Params
    generator: Generator
    quality: QualityFilter
    input: Path
    rng: random.Random
    # Every input file read, path → sha256: provenance for card.json.
    sources: dict[str, str] = field(default_factory=dict)


class Recipe(Protocol):
    name: str
    task: str
    Params: type

    def build(self, ctx: RecipeContext) -> DatasetOutput: ...


RECIPES: Registry[type] = Registry("recipe", option="recipe.name")


def register_recipe(name: str):
    def decorator(cls):
        RECIPES.add(name, cls)
        cls.name = name
        return cls

    return decorator


def get_recipe(name: str) -> Recipe:
    for module in BUILTIN:
        try:
            importlib.import_module(f"datasets_gen.recipes.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"datasets_gen.recipes.{module}":
                raise
    return RECIPES.get(name)()


def read_params(recipe: Recipe, raw: dict) -> Any:
    """Validate the recipe section against the recipe's own dataclass, naming the offending key."""
    values = {k: v for k, v in raw.items() if k != "name"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(recipe.Params), values)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"recipe.{exc.full_key or ''}: {exc.msg}") from None
