"""A search space from overrides in Hydra's grammar, as Hydra's own Optuna sweeper reads them: `choice(a,b)` and
`a,b` are categorical, `range(1,9)` an integer (or float) range, `interval(lo,hi)` a continuous range,
`tag(log, interval(lo,hi))` a log-scaled one; any other override is a fixed setting every trial gets.

The distribution mapping follows hydra-optuna-sweeper 1.3 (facebookresearch/hydra, plugins/hydra_optuna_sweeper,
MIT licence: `create_optuna_distribution_from_override`), rewritten for Optuna's current distributions (that
release pins optuna<3)."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer

from harness.core.config import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

# Optuna is imported where a distribution is made or read: Hydra imports this plugin at every start-up, also where
# the [search] extra is not installed.


@dataclass
class SearchSpace:
    # (No `from __future__ import annotations` here: Hydra's plugin scan imports this module outside sys.modules,
    # where dataclasses cannot resolve string annotations.)
    swept: dict[str, "BaseDistribution"] = field(default_factory=dict)
    # key → the override's value as typed, passed unchanged to every trial.
    fixed: dict[str, str] = field(default_factory=dict)

    def grid(self) -> dict[str, list]:
        """Every value of every swept key, for Optuna's GridSampler; a continuous range has no grid."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for name, dist in self.swept.items():
            if isinstance(dist, CategoricalDistribution):
                out[name] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                out[name] = list(range(dist.low, dist.high + 1, dist.step))
            elif isinstance(dist, FloatDistribution) and dist.step is not None and not dist.log:
                n = round((dist.high - dist.low) / dist.step)
                out[name] = [dist.low + i * dist.step for i in range(n + 1)]
            else:
                raise ConfigError(f"hydra.sweeper.sampler=grid: {name} is a continuous range; a grid needs "
                                  f"choice(...) or range(...) for every swept key (or sampler=tpe)")
        return out


def parse_search_space(overrides: list[str]) -> SearchSpace:
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # Hydra's parse error names the override and the position
        raise ConfigError(f"search space: {str(exc).splitlines()[0]}") from None
    space = SearchSpace()
    for override in parsed:
        key = override.get_key_element()
        dist = distribution(override)
        if dist is None:
            space.fixed[key] = override.get_value_element_as_str()
        else:
            space.swept[key] = dist
    return space


def distribution(override: Override) -> "BaseDistribution | None":
    """The Optuna distribution of a sweep override; None for a fixed setting."""
    if not override.is_sweep_override():
        return None
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, value = override.get_key_element(), override.value()
    if override.is_choice_sweep():
        assert isinstance(value, ChoiceSweep)
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        if value.shuffle:
            return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            # Hydra's range excludes its stop, Optuna's includes its high: the last value is the one before stop.
            last = value.start + value.step * (int((value.stop - value.start) / value.step - 1e-9))
            return FloatDistribution(value.start, last, step=value.step)
        start, stop, step = int(value.start), int(value.stop), int(value.step)
        return IntDistribution(start, start + step * ((stop - start - 1) // step), step=step)
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log = "log" in value.tags
        if log and value.start <= 0:
            raise ConfigError(f"{key}: tag(log, interval({value.start}, {value.end})) needs a lower bound above 0")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{override.input_line}: a glob sweep cannot be searched; list the values with choice(...)")


def override_value(value) -> str:
    """A sampled value as an override's right-hand side."""
    if isinstance(value, float):
        return repr(value)
    return str(value)
