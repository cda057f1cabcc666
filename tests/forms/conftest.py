"""Fixtures of the form engine tests: a patient with an encounter, and published forms."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.models import DefinitionRow
from careloop.forms.publish import publish_form

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "app_definitions"

Publisher = Callable[[str], DefinitionRow]


@pytest.fixture
def patient(engine: Engine) -> str:
    with transaction(engine) as session:
        session.add(Department(id="cardio", name={"zh-CN": "心内科", "en": "Cardiology"}))
        session.add(Patient(id="p1", mrn="MRN001", name="测试患者", gender="female",
                            birth_date=date(1950, 5, 1), phone="13800138000", locale="zh-CN"))
        session.flush()
        session.add(Encounter(id="e1", patient_id="p1", type="inpatient",
                              department_id="cardio", status="discharged",
                              discharged_at=now_utc()))
    return "p1"


@pytest.fixture
def publish(engine: Engine) -> Publisher:
    """Publish a form from a path under app_definitions/ (or YAML text)."""
    def run(source: str) -> DefinitionRow:
        is_text = "\n" in source
        text = source if is_text else (APPS / source).read_text("utf-8")
        with transaction(engine) as session:
            return publish_form(session, text, source_path="t.yaml" if is_text else source,
                                actor="tester")
    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    """One line over the whole instrument corpus (FHIR + REDCap) the corpus tests checked."""
    from tests.forms.corpus_tally import summary

    line = summary()
    if line:
        terminalreporter.write_line(line, bold=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.forms.corpus_tally import silent_losses

    if silent_losses() and exitstatus == 0:
        session.exitstatus = 1
