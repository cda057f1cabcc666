"""Compiled flows: :class:`FlowSpec` and its :class:`StepSpec` list (frozen, built once).

A step keeps its raw definition (read-only) plus every expression compiled once; its behaviour
lives in the step type registered in ``registry.catalogue("step_type")`` (see :mod:`.steps`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from careloop.engine.expressions import Expression

# Names an expression in a flow may use (contract 5).
EXPRESSION_NAMES = ("answers", "scores", "bands", "patient", "encounter", "event", "reading",
                    "task", "context")

_DURATION = re.compile(r"^([0-9]+)(m|h|d|w)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``"48h"`` → 2 days.

    >>> parse_duration("48h"), parse_duration("3d"), parse_duration("30m")
    (datetime.timedelta(days=2), datetime.timedelta(days=3), datetime.timedelta(seconds=1800))
    """
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One compiled step. ``raw`` is the definition; ``expressions`` maps a field path (``"if"``,
    ``"values.name"``, ``"cases.0.when"``…) to its compiled expression."""

    key: str
    type: str
    index: int
    next: str | None
    raw: Mapping[str, Any]
    expressions: Mapping[str, Expression] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str, default: Any = None) -> Any:
        return self.raw.get(name, default)

    def expression(self, path: str) -> Expression | None:
        return self.expressions.get(path)


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    event: str | None
    when: Expression | None
    manual: bool
    cron: str | None


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """A compiled flow; runs point back to it by (key, version)."""

    key: str
    title: Mapping[str, str]
    trigger: TriggerSpec
    cancel_on: tuple[str, ...]
    steps: tuple[StepSpec, ...]

    @property
    def first(self) -> str:
        return self.steps[0].key

    def step(self, key: str) -> StepSpec:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(f"flow {self.key} has no step {key!r}")
