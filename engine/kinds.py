"""Kinds of definition: what a ``kind:`` value means, its schema, and its compiler.

Each engine registers its kinds into ``registry.catalogue("kind")`` (its ``register_types``
hook)::

    registry.catalogue("kind").register("form", KindSpec(
        name="form", package="<the engine's package>", schema_file="schema/form.json",
        compile=compile_form, folder="forms", title={"zh-CN": "表单", "en": "Form"}))

The compiler receives a structurally valid :class:`~careloop.engine.check.Definition` and a
:class:`~careloop.engine.check.CompileContext`; it appends problems to the context and returns a
frozen spec (or ``None`` when it found errors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from careloop.engine.check import CompileContext, Definition

Compiler = Callable[["Definition", "CompileContext"], Any]


@dataclass(frozen=True, slots=True)
class KindSpec:
    """A registered kind of definition."""

    name: str
    package: str
    schema_file: str
    compile: Compiler
    folder: str
    title: dict[str, str] = field(default_factory=dict)
    # Kinds compiled first can be referenced by later ones (forms before flows that send them).
    order: int = 100
