"""Seeding helpers for report tests: departments, doctors, patients, encounters, submissions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from careloop.engine.models import load_all_models
from careloop.reports.tables import table

load_all_models()


@dataclass
class Seeder:
    """Inserts rows with Core; ``submit`` writes a submission and one answer row per leaf."""

    engine: Engine
    next_id: int = 1
    patients: set[str] = field(default_factory=set)
    departments: set[str] = field(default_factory=set)
    doctors: set[int] = field(default_factory=set)

    def _dept(self, conn: Any, dept: str) -> None:
        if dept not in self.departments:
            conn.execute(insert(table("departments")).values(
                id=dept, name={"zh-CN": dept, "en": dept}, kind="department", active=True))
            self.departments.add(dept)

    def _doctor(self, conn: Any, doctor: int) -> None:
        if doctor not in self.doctors:
            conn.execute(insert(table("users")).values(
                id=doctor, username=f"dr{doctor}", display_name=f"Dr {doctor}", locale="zh-CN",
                active=True, created_at=datetime(2026, 1, 1, tzinfo=UTC)))
            self.doctors.add(doctor)

    def submit(self, dept: str, answers: dict[str, Any], *, at: datetime,
               form: str = "inpatient_satisfaction", doctor: int | None = None,
               birth: date | None = None, channel: str = "web",
               category: str | None = None) -> int:
        sid = self.next_id
        self.next_id += 1
        pid, eid = f"p{sid}", f"e{sid}"
        with self.engine.begin() as conn:
            self._dept(conn, dept)
            if doctor is not None:
                self._doctor(conn, doctor)
            conn.execute(insert(table("patients")).values(
                id=pid, mrn=f"m{sid}", name="x", birth_date=birth, locale="zh-CN",
                attributes={}, consents={}, created_at=at, updated_at=at))
            conn.execute(insert(table("encounters")).values(
                id=eid, patient_id=pid, type="inpatient", department_id=dept,
                attending_doctor_id=doctor, status="discharged", diagnoses={}, procedures={},
                created_at=at))
            conn.execute(insert(table("submissions")).values(
                id=sid, form_key=form, form_version=1, content_hash="h", patient_id=pid,
                encounter_id=eid, department_id=dept, channel=channel, locale="zh-CN",
                status="received", answers=answers, scores={}, bands={}, submitted_at=at))
            for key, value in answers.items():
                for row_key, leaf in (value.items() if isinstance(value, dict)
                                      else [(None, value)]):
                    conn.execute(insert(table("submission_answers")).values(
                        submission_id=sid, form_key=form, field_key=key, row_key=row_key,
                        value_number=leaf if isinstance(leaf, int | float) else None,
                        value_text=leaf if isinstance(leaf, str) else None,
                        value_code=leaf if isinstance(leaf, str) and len(leaf) < 60 else None))
            if category is not None:
                conn.execute(insert(table("rule_classifications")).values(
                    dictionary_key="d", dictionary_version=1, source_ref=f"submission:{sid}",
                    patient_id=pid, submission_id=sid, field_key="comment", category=category,
                    negative=True, words=[], created_at=at))
        return sid


@pytest.fixture
def seed(engine: Engine) -> Iterator[Seeder]:
    yield Seeder(engine)


Submit = Callable[..., int]
