"""Helpers for tests, docs and the CLI: compile a form from text without a database."""

from __future__ import annotations

from careloop.engine.check import check_documents
from careloop.engine.errors import DefinitionInvalid
from careloop.engine.sources import load_text
from careloop.forms.spec import FormSpec


def form_from_yaml(text: str, file: str = "<form>") -> FormSpec:
    """Compile one form definition (YAML or JSON text); raises :class:`DefinitionInvalid`."""
    result = check_documents([load_text(text, file)],
                             external=lambda _kind, _key: {"stored": True})
    specs = [s for s in result.specs.values() if isinstance(s, FormSpec)]
    if not result.ok or not specs:
        raise DefinitionInvalid(result.errors, f"{file}: form does not compile")
    return specs[0]
