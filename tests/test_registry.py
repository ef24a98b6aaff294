"""The one registry type behind metrics, trainers and the dataset builder's recipes."""

import pytest

from datasets_gen.recipes import RECIPES, get_recipe, register_recipe
from harness.cell.train import TRAINERS, get_trainer, register_trainer
from harness.core.config import ConfigError
from harness.core.registry import Registry, UnknownNameError
from harness.metrics import METRICS, get_metric


def test_a_registered_object_comes_back_by_name_and_names_list_sorted():
    things = Registry("thing", option="data.things")

    @things.register("zeta")
    def zeta():
        return "z"

    alpha = things.add("alpha", object())
    assert things.get("zeta") is zeta and zeta() == "z"  # the decorator returns the object itself
    assert things.get("alpha") is alpha
    assert things.names() == ["alpha", "zeta"] == list(things)
    assert "zeta" in things and "beta" not in things and len(things) == 2


def test_an_unknown_name_is_a_one_line_config_error_naming_the_option_and_the_known_names():
    things = Registry("thing", option="data.things")
    things.add("b", 2)
    things.add("a", 1)
    with pytest.raises(UnknownNameError) as caught:
        things.get("c")
    assert str(caught.value) == "data.things: unknown thing 'c'; known: a, b"
    # A user mistake like any other config error (printed without a traceback), and a failed lookup.
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, KeyError)
    assert "\n" not in str(caught.value)
    assert str(UnknownNameError("x")) == "x"  # not KeyError's quoted form
    with pytest.raises(UnknownNameError, match="known: none"):
        Registry("thing", option="t").get("a")


def test_a_taken_name_is_refused_and_the_first_object_stays():
    things = Registry("thing", option="data.things")
    first = things.add("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.add("a", 2)
    with pytest.raises(ValueError, match="already registered"):

        @things.register("a")
        class _Again:
            pass

    assert things.get("a") == first == 1 and len(things) == 1
    with pytest.raises(ValueError, match="needs a name"):
        things.add("", 3)


@pytest.mark.parametrize(("registry", "option", "some"), [
    (METRICS, "data.metrics", ("bleu", "rouge", "accuracy")),
    (TRAINERS, "method.trainer", ("instruct", "causal")),
])
def test_metrics_and_trainers_are_registries_with_their_option(registry, option, some):
    assert isinstance(registry, Registry) and registry.option == option
    assert all(name in registry for name in some)


def test_each_lookup_reports_its_own_option():
    with pytest.raises(UnknownNameError, match=r"^data.metrics: unknown metric 'blue'; known: .*bleu"):
        get_metric("blue")
    with pytest.raises(UnknownNameError, match=r"^method.trainer: unknown trainer 'dpo'; known: causal, instruct$"):
        get_trainer("dpo")
    with pytest.raises(UnknownNameError, match=r"^recipe.name: unknown recipe 'poems'; known: catalog_recs, "
                                               r"departments, doc_qa, product_descriptions$"):
        get_recipe("poems")
    assert isinstance(RECIPES, Registry) and RECIPES.option == "recipe.name"


def test_the_kind_specific_decorators_refuse_a_taken_name():
    get_recipe("doc_qa")  # imports the built-in recipes
    with pytest.raises(ValueError, match="recipe 'doc_qa' is already registered"):

        @register_recipe("doc_qa")
        class _Poems:
            pass

    with pytest.raises(ValueError, match="trainer 'instruct' is already registered"):

        @register_trainer("instruct")
        def _train(ctx):
            return None

    # The first registrations stand.
    assert RECIPES.get("doc_qa").__module__ == "datasets_gen.recipes.doc_qa"
    assert get_trainer("instruct").__name__ == "train_instruct"
