"""Docstring examples in the engine are real: each one runs here."""

import doctest
import importlib
import pkgutil

import pytest

import careloop.engine

MODULES = sorted(m.name for m in pkgutil.iter_modules(careloop.engine.__path__, "careloop.engine.")
                 if m.name not in ("careloop.engine.migrations",))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
