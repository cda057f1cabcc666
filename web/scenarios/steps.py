"""The built-in step and expectation types, registered like an extension's would be.

Each :class:`~careloop.web.scenarios.spec.StepType` joins its validation check (a method of the
compiler's checker), its behaviour in a journey (a method of :class:`Journey`) and its label::

    travel: {to: "2026-12-04T09:31"}   →  "#4 travel to 2026-12-04T09:31"
"""

from __future__ import annotations

from typing import Any

from careloop.engine.registry import Registry
from careloop.web.scenarios.compiler import Checker
from careloop.web.scenarios.expectations import CHECKS
from careloop.web.scenarios.journey import Journey
from careloop.web.scenarios.spec import ExpectationType, StepType


def _keys(options: Any) -> str:
    return ", ".join(str(k) for k in options)


def _his(events: Any) -> str:
    return ", ".join(str(e.get("type")) for e in events)


def _travel(travel: Any) -> str:
    return f"to {travel.get('to')}" if isinstance(travel, dict) else str(travel)


def _link(options: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def _who(who: Any) -> str:
    if isinstance(who, dict):
        return "/".join(str(who[k]) for k in ("role", "department") if who.get(k))
    return str(who)


def _staff(options: Any) -> str:
    action = options.get("action")
    return _who(options.get("as")) + (f" {action}" if action else "")


STEP_TYPES = (
    StepType("setup", Checker.setup, Journey.do_setup, _keys),
    StepType("his", Checker.his, Journey.do_his, _his),
    StepType("travel", Checker.travel, Journey.travel, _travel, moves_clock=True),
    StepType("patient_opens_link", Checker.patient_opens_link, Journey.do_patient_opens_link,
             _link),
    StepType("scan_touchpoint", Checker.scan_touchpoint, Journey.do_scan_touchpoint, _link),
    StepType("patient_reads_education", Checker.patient_reads_education,
             Journey.do_patient_reads_education, _link),
    StepType("answer", Checker.answer, Journey.do_answer, _keys),
    StepType("staff", Checker.staff, Journey.do_staff, _staff),
)


def register(registry: Registry) -> None:
    """Add the built-in step types and expectation types to their catalogues."""
    steps = registry.catalogue("scenario_step")
    for step in STEP_TYPES:
        steps.register(step.name, step)
    from careloop.web.scenarios.consult_steps import step_types

    for step in step_types():  # Consult / Q&A on the patient's phone
        steps.register(step.name, step)
    expectations = registry.catalogue("scenario_expectation")
    for name, check in CHECKS.items():
        expectations.register(name, ExpectationType(name, check))
