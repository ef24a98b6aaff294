"""Name -> object tables that a config picks from: metrics (`data.metrics`), trainers (`method.trainer`) and the
dataset builder's recipes (`recipe.name`).

In the spirit of lm-evaluation-harness's api/registry.py: an object registers itself where it is defined, with a
decorator (`@METRICS.register("bleu")`); a name no object has is the user's mistake, reported in one line that
names the option and lists the known names; a second object under a taken name is a bug, refused at import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.core.errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError):
    """A name nothing is registered under. A configuration mistake (printed as one line, like every ConfigError),
    and a failed lookup (KeyError) for callers that treat it as one."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError's own str() would wrap the message in quotes


class Registry(Generic[T]):
    """Objects of one kind by name. `kind` names them in messages ("metric"), `option` is the config key a user
    names them with ("data.metrics"), so an unknown name reads `data.metrics: unknown metric 'blue'; known: ...`."""

    def __init__(self, kind: str, option: str) -> None:
        self.kind = kind
        self.option = option
        self._entries: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        if not name:
            raise ValueError(f"a {self.kind} needs a name to be registered under")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r}); pick another name")
        self._entries[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@registry.register("name")` on a class or function adds it under `name` and returns it."""

        def decorator(obj: T) -> T:
            return self.add(name, obj)

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"{self.option}: unknown {self.kind} {name!r}; known: "
                                   f"{', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, option={self.option!r}, names={self.names()})"
