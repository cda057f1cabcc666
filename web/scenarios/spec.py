"""The compiled, frozen form of a ``scenario`` definition.

    ScenarioSpec(key="discharge_day3_answered", start=2026-12-01T01:00Z, steps=(
        StepSpec(type="his", options=({"type": "patient.upserted", …},), expects=(…)),
        StepSpec(type="travel", options="3d", …), …))

Every step and every expectation keeps where it was written (:class:`Where`), so a failure reads
``app_definitions/discharge/scenarios/x.yaml:23:9: expected 1 task …``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class StepType:
    """A kind of step (``registry.catalogue("scenario_step")``): its meaning checks when
    validating, what it does in a journey, and how it reads in the run's output.

    ``check(checker, path, options)`` adds problems through the compiler's checker;
    ``run(journey, options)`` returns what was done (raising ``StepFailed`` when it cannot be);
    ``describe(options)`` is the step's one-line label. The journey freezes the clock around
    ``run`` unless ``moves_clock`` (``travel`` moves it itself).
    """

    name: str
    check: Callable[[Any, tuple[str | int, ...], Any], None]
    run: Callable[[Any, Any], str]
    describe: Callable[[Any], str]
    moves_clock: bool = False


@dataclass(frozen=True, slots=True)
class ExpectationType:
    """A kind of expectation (``registry.catalogue("scenario_expectation")``):
    ``check(journey, options)`` returns ``None`` when it holds, else what was seen instead."""

    name: str
    check: Callable[[Any, Any], str | None]


@dataclass(frozen=True, slots=True)
class Where:
    """A place in a scenario file: shown as ``file:line:col``."""

    file: str
    line: int
    column: int
    path: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class ExpectSpec:
    """One expectation: its type (``tasks``, ``inbox`` …) and its options as written."""

    expectation: ExpectationType
    options: Any
    where: Where

    @property
    def kind(self) -> str:
        return self.expectation.name

    def check(self, journey: Any) -> str | None:
        """``None`` when it holds in the journey now, else what was seen instead."""
        return self.expectation.check(journey, self.options)


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: its type, its options as written, its expectations."""

    index: int
    step_type: StepType
    options: Any
    note: str | None
    expects: tuple[ExpectSpec, ...]
    where: Where

    @property
    def type(self) -> str:
        return self.step_type.name

    def run(self, journey: Any) -> str:
        """Do the step in ``journey``; returns what was done."""
        return self.step_type.run(journey, self.options)

    def label(self) -> str:
        """A one-line description for the run's output: ``#3 travel 3d``."""
        text = f"#{self.index + 1} {self.type} {self.step_type.describe(self.options)}"
        return text + (f" — {self.note}" if self.note else "")


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """A compiled scenario: when it starts (aware UTC) and its steps, in order."""

    key: str
    title: dict[str, str]
    start: datetime
    steps: tuple[StepSpec, ...]
    file: str
    apps: tuple[str, ...] = ()
