"""The two write requests under load cost few round trips (issue 18): counted, not timed.

``POST /api/v1/events`` (a ``patient.upserted`` from the HIS) and a patient answering a form link
(``POST /f/{token}``, the last page submitted) are sent through the app; every SQL statement sent
while the request runs is counted with SQLAlchemy's ``before_cursor_execute`` event. The handlers
(rules, flows) run later from the event queue and are not counted here (``drain`` after).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine import audit
from careloop.engine.bundles import import_bundles, list_bundles
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Patient
from careloop.engine.models import AuditRow, DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.flows.ingest import create_api_key
from careloop.forms.models import FormRequest, Submission
from careloop.web.app import create_app

from ..statements import counted

# Before docs/performance-2026-12-07.md: 17 statements in two transactions for an event (the key's,
# with its audit row, then the event's) and 15 for a submitted page (the request row written
# three times, the patient's encounter read twice). On PostgreSQL the audit row's chain lock is
# a statement (``pg_advisory_xact_lock``); on SQLite the event's own writes hold the write lock
# already. What remains: docs/performance-web.md. An event then sent 12 (13 on PostgreSQL);
# since the second round of docs/performance-2026-12-07.md 9 (10): ingest's read of the event
# id not repeated, no savepoint. A submitted page then sent 12; now 10: the request, its patient
# and encounter read in one statement, and no patient tags for a form whose expressions never
# name ``patient``.
EVENT_LIMIT = {"sqlite": 9, "postgresql": 10}
SUBMIT_LIMIT = 10

APP_YAML = ("id: stmt_lab\nname: {zh-CN: 计数, en: Count lab}\nversion: 0.1.0\nformat: 1\n"
            "default_locale: zh-CN\n")
FORM_YAML = """kind: form
key: stmt_check
title: {zh-CN: 出院回访, en: Discharge check}
default_locale: zh-CN
fields:
  - {key: ok, type: yes_no, label: {zh-CN: 还好吗？, en: "All well?"}}
  - {key: note, type: long_text, label: {zh-CN: 想说的话, en: Anything to add}}
"""


def _event(n: int) -> dict[str, Any]:
    return {"event_id": f"his-{n}", "type": "patient.upserted",
            "payload": {"patient_id": f"P{n}", "mrn": f"M{n}", "name": "测试"}}


def test_an_event_costs_few_statements(engine: Engine, dialect: str) -> None:
    with transaction(engine) as session:
        key = create_api_key(session, "his")
    client = TestClient(create_app())
    headers = {"X-API-Key": key}
    assert client.post("/api/v1/events", json=_event(0), headers=headers).status_code == 200
    with counted(engine) as counter:
        counter.on = True
        answer = client.post("/api/v1/events", json=_event(1), headers=headers)
        counter.on = False
    assert answer.status_code == 200, answer.text
    listing = "\n".join(counter.statements)
    assert len(counter.statements) <= EVENT_LIMIT[dialect], listing
    assert counter.transactions == 1, listing  # the key, the event and its audit row together
    drain()
    with transaction(engine) as session:  # stored once, the patient written, the chain whole
        assert session.scalars(select(DomainEventRow.event_id).where(
            DomainEventRow.event_id == "his-1")).one() == "his-1"
        assert session.get(Patient, "P1") is not None
    assert client.post("/api/v1/events", json=_event(1), headers=headers).json() == answer.json()
    with transaction(engine) as session:
        assert list(audit.verify(session)) == []
        calls = session.scalars(select(AuditRow).where(AuditRow.action == "api.event")).all()
        assert [row.outcome for row in calls] == ["success"] * 3  # every call audited


def test_a_submitted_page_costs_few_statements(engine: Engine, tmp_path: Path) -> None:
    bundle = tmp_path / "stmt_lab"
    (bundle / "forms").mkdir(parents=True)
    (bundle / "app.yaml").write_text(APP_YAML, "utf-8")
    (bundle / "forms" / "stmt_check.yaml").write_text(FORM_YAML, "utf-8")
    import_bundles(list_bundles([tmp_path]), actor="test", engine=engine)
    create = loaded_registry().catalogue("service")["forms.create_request"]
    with transaction(engine) as session:
        for n in range(2):
            session.add(Patient(id=f"p{n}", mrn=f"MRN{n}", name="患者", attributes={},
                                consents={}, created_at=now_utc()))
        session.flush()
        urls = [create(session, form_key="stmt_check", patient_id=f"p{n}", channel="sms",
                       expires_at=now_utc() + timedelta(days=7))["url"] for n in range(2)]
    client = TestClient(create_app())
    form = {"_page": "0", "_lang": "zh-CN", "_action": "submit", "ok": "yes", "note": "都好"}
    assert client.post(urls[0], data=form).status_code == 200
    with counted(engine) as counter:
        counter.on = True
        answer = client.post(urls[1], data=form)
        counter.on = False
    assert answer.status_code == 200, answer.text
    listing = "\n".join(counter.statements)
    assert len(counter.statements) <= SUBMIT_LIMIT, listing
    assert counter.transactions == 1, listing
    drain()
    with transaction(engine) as session:
        sub = session.scalars(select(Submission).where(Submission.patient_id == "p1")).one()
        assert sub.answers["ok"] == "yes"
        request = session.scalars(select(FormRequest).where(
            FormRequest.patient_id == "p1")).one()
        assert request.status == "answered"
    assert client.post(urls[1], data=form).status_code == 410  # a link answers once
