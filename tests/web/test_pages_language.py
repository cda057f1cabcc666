"""The staff console speaks the hospital's language, in its time (issue 13): the demo-like
journey through the public paths — the HIS discharges a cardiology patient, the day-3 form is
answered dissatisfied, rules make the head nurse's urgent task and the pharmacy's copy — and the
pages people read show labels from the definitions, never codes, and hospital time (+08:00)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.flows.models import OutboxMessage
from careloop.web.app import create_app

from .test_closed_loop import START, _his, _signed_in, _travel, hospital  # noqa: F401

ANSWERED = datetime.fromisoformat("2026-12-04T11:31:00+08:00")


def journey(engine: Engine, key: str) -> TestClient:
    """王建国 is discharged from cardiology, answers the day-3 form with 2 of 5 and unclear
    medication guidance; he had a PCI (tag after_pci)."""
    client = TestClient(create_app())
    _his(client, key, START - timedelta(days=6), "p1", "patient.upserted", {
        "patient_id": "P1", "mrn": "M1", "name": "王建国", "gender": "male",
        "birth_date": "1958-04-02", "phone": "138 0000 0001", "id_number": "11010119580402123x"})
    _his(client, key, START - timedelta(days=5), "a1", "encounter.admitted", {
        "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
        "department_id": "cardiology", "ward_id": "cardio_w1",
        "admitted_at": (START - timedelta(days=5)).isoformat(), "diagnoses": ["I10"],
        "procedures": ["PCI"]})
    _his(client, key, START, "d1", "encounter.discharged", {
        "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
        "department_id": "cardiology", "ward_id": "cardio_w1",
        "discharged_at": START.isoformat(), "diagnoses": ["I10"], "procedures": ["PCI"]})
    day3 = datetime.fromisoformat("2026-12-04T09:31:00+08:00")
    _travel(engine, day3)
    with transaction(engine) as session:
        sent = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "discharge_care_day3")).one()
        link = re.search(r"/f/[A-Za-z0-9_\-]+", sent.body)
    assert link is not None
    with frozen_now(ANSWERED):
        answered = client.post(link.group(0), data={
            "_page": "0", "_action": "submit", "recovery": "poor", "symptoms": "头晕",
            "medication_clear": "no", "overall": "2", "comment": "用药指导不清楚"})
    assert answered.status_code == 200, answered.text
    return client


def test_dump(engine: Engine, hospital: dict[str, str]) -> None:  # noqa: F811
    client = journey(engine, hospital["key"])
    with frozen_now(ANSWERED + timedelta(minutes=5)):
        hn, _ = _signed_in(client, "hn")
        inbox = hn.get("/inbox")
        print(inbox.text[inbox.text.index("<h1"):])
        task_id = re.search(r'data-task="(\d+)"', inbox.text).group(1)
        page = hn.get(f"/tasks/{task_id}")
        print(page.text[page.text.index("<h1"):])
        patient = hn.get("/patients/P1")
        print(patient.text[patient.text.index("<h1"):])
    assert False
