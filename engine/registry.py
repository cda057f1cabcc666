"""The registry: one place where every named built-in lives, and where extensions add theirs.

Kinds of definition, field types, step types, actions, expression functions and message channels
are all *catalogues* of the one :data:`registry`. Built-ins register through the same hook
(``register_types``, ``engine/hookspecs.py``) and entry-point group (``careloop.plugins``) that a
hospital's extension package would use, so there is no second, private path for built-ins
(Datasette's rule).

    >>> from careloop.engine.registry import Catalogue
    >>> c: Catalogue[int] = Catalogue("demo")
    >>> c.register("number", 1)
    1
    >>> c.suggest("numbr")
    "did you mean 'number'?"
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from careloop.engine.errors import did_you_mean

if TYPE_CHECKING:
    import pluggy

T = TypeVar("T")

PLUGIN_GROUP = "careloop.plugins"


class DuplicateRegistration(ValueError):
    """Raised when a name is registered twice in one catalogue (two plugins disagree)."""


class Catalogue(Generic[T]):
    """Named things of one sort, in registration order."""

    def __init__(self, sort: str) -> None:
        self.sort = sort
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        if name in self._items and not replace:
            raise DuplicateRegistration(f"{self.sort} {name!r} is already registered")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> T:
        """Take a name out again (a test that registered an extension's type for its own run);
        what is derived from the catalogue (kind schemas' enums) must be refreshed by the caller."""
        return self._items.pop(name)

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def suggest(self, name: object) -> str | None:
        return did_you_mean(name, self._items)


class Registry:
    """All catalogues. Engines add their own catalogue with :meth:`catalogue`."""

    def __init__(self) -> None:
        self._catalogues: dict[str, Catalogue[Any]] = {}
        self._loaded = False
        self._lock = threading.Lock()

    def catalogue(self, sort: str) -> Catalogue[Any]:
        if sort not in self._catalogues:
            self._catalogues[sort] = Catalogue(sort)
        return self._catalogues[sort]

    def sorts(self) -> list[str]:
        return list(self._catalogues)

    def load_plugins(self, manager: pluggy.PluginManager | None = None) -> None:
        """Run every plugin's ``register_types`` hook once: built-ins, then installed extensions
        (``manager``: another plugin manager, e.g. a test's with one more plugin)."""
        from careloop.engine.plugins import register_types

        with self._lock:
            if self._loaded:
                return
            register_types(self, manager)
            self._loaded = True


registry = Registry()


def loaded_registry() -> Registry:
    """The registry with every plugin loaded (idempotent, thread-safe)."""
    registry.load_plugins()
    return registry
