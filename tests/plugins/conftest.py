"""The example extension package's tests: its source tree comes first on the path, so the
modules tested are the ones in this checkout even where an older copy is installed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from careloop.engine.registry import loaded_registry
from careloop.engine.schema import _validator, kind_schema

_PACKAGE = str(Path(__file__).parent / "careloop_example")
if _PACKAGE not in sys.path:
    sys.path.insert(0, _PACKAGE)


@contextmanager
def registered(module: Any, sort: str, name: str) -> Iterator[None]:
    """The example module registered on the loaded registry for the test (it may be installed
    already: then it is left alone); an entry the test added is removed afterwards, so later
    tests see the registry as it was. The kind schemas' enums of names follow."""
    registry = loaded_registry()
    added = name not in registry.catalogue(sort)
    if added:
        module.register(registry)
    kind_schema.cache_clear()
    _validator.cache_clear()
    try:
        yield
    finally:
        if added:
            registry.catalogue(sort).unregister(name)
            kind_schema.cache_clear()
            _validator.cache_clear()
