"""The compiled, frozen form of a ``scenario`` definition.

    ScenarioSpec(key="discharge_day3_answered", start=2026-12-01T01:00Z, steps=(
        StepSpec(type="his", options=({"type": "patient.upserted", …},), expects=(…)),
        StepSpec(type="travel", options="3d", …), …))

Every step and every expectation keeps where it was written (:class:`Where`), so a failure reads
``app_definitions/discharge/scenarios/x.yaml:23:9: expected 1 task …``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

STEP_TYPES = ("setup", "his", "travel", "patient_opens_link", "answer", "staff")
EXPECTATIONS = ("tasks", "inbox", "messages", "submissions", "patient", "flow_runs",
                "escalations", "alerts", "dashboard", "page")


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
    """One expectation: its kind (``tasks``, ``inbox`` …) and its options as written."""

    kind: str
    options: Any
    where: Where


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: its type (one of :data:`STEP_TYPES`), its options as written, its checks."""

    index: int
    type: str
    options: Any
    note: str | None
    expects: tuple[ExpectSpec, ...]
    where: Where

    def label(self) -> str:
        """A one-line description for the run's output: ``#3 travel 3d``."""
        shown = self.options
        if self.type == "his":
            shown = ", ".join(str(e.get("type")) for e in self.options)
        elif self.type == "travel" and isinstance(shown, dict):
            shown = f"to {shown.get('to')}"
        elif self.type == "staff":
            shown = _who(self.options.get("as")) + (
                f" {self.options['action']}" if self.options.get("action") else "")
        elif self.type == "patient_opens_link":
            shown = " ".join(f"{k}={v}" for k, v in self.options.items())
        elif self.type in ("setup", "answer"):
            shown = ", ".join(str(k) for k in self.options)
        text = f"#{self.index + 1} {self.type} {shown}"
        return text + (f" — {self.note}" if self.note else "")


def _who(who: Any) -> str:
    if isinstance(who, dict):
        return "/".join(str(who[k]) for k in ("role", "department") if who.get(k))
    return str(who)


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """A compiled scenario: when it starts (aware UTC) and its steps, in order."""

    key: str
    title: dict[str, str]
    start: datetime
    steps: tuple[StepSpec, ...]
    file: str
    apps: tuple[str, ...] = ()
