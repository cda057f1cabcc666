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


# How often one trigger starts a run (``trigger.once``); see :func:`default_once`.
ONCE = ("per_event", "per_encounter", "per_patient", "per_patient_while_active")


def default_once(event: str | None) -> str:
    """The uniqueness of a trigger that does not declare ``once``: an encounter event starts one
    run per encounter, a patient event one run per patient at a time, any other event one per event.

    >>> default_once("encounter.discharged"), default_once("patient.upserted"), default_once(None)
    ('per_encounter', 'per_patient_while_active', 'per_event')
    """
    if event is not None and event.startswith("encounter."):
        return "per_encounter"
    if event is not None and event.startswith("patient."):
        return "per_patient_while_active"
    return "per_event"


def releases_on_end(once_key: str) -> bool:
    """Whether a run holding ``once_key`` frees it when it completes (``…_while_active``); the
    key keeps the rule the run started under, as the run keeps its flow version.

    >>> releases_on_end("monthly_chronic:per_patient_while_active:P1")
    True
    """
    return "_while_active:" in once_key


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """``once`` is resolved at compile time (declared, or :func:`default_once` of ``event``)."""

    event: str | None
    when: Expression | None
    manual: bool
    cron: str | None
    once: str = "per_event"

    def once_key(self, flow_key: str, patient_id: str | None,
                 encounter_id: str | None) -> str | None:
        """The key that at most one counted run of this flow may hold (``flow_runs.once_key``,
        unique), or ``None`` when every event may start a run (``per_event``, or the event names
        no patient/encounter to be unique for).

        >>> TriggerSpec("patient.upserted", None, False, None, "per_patient").once_key(
        ...     "monthly_chronic", "P1", None)
        'monthly_chronic:per_patient:P1'
        """
        subject = encounter_id if self.once == "per_encounter" else patient_id
        if self.once == "per_event" or not subject:
            return None
        return f"{flow_key}:{self.once}:{subject}"



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
