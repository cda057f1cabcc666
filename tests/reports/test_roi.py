"""Issue 19, the ROI dashboard of ``followup_ops`` through ``GET /api/v1/reports/dashboards``:
answered links count as automatic follow-ups and save the hospital's minutes per manual call
(``CARELOOP_MINUTES_PER_CALL``); phone tasks count when the patient was reached, with the minutes
of their logged calls; a department's head nurse sees her department only."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundles
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.tasks import Assignee, complete_task, create_task
from careloop.flows.call_models import CallRecord
from careloop.forms.models import FormRequest
from careloop.web.app import create_app

from ..web.conftest import login, make_user

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime.fromisoformat("2026-12-10T10:00:00+08:00")


def _tiles(client: TestClient) -> dict[str, list[dict[str, Any]]]:
    answer = client.get("/api/v1/reports/dashboards/followup_roi")
    assert answer.status_code == 200, answer.text
    return {t["chart"]: (t["data"] or {"rows": []})["rows"] for t in answer.json()["tiles"]}


@pytest.fixture
def hospital(engine: Engine) -> None:
    with frozen_now(NOW):
        import_bundles([APPS / "common", APPS / "discharge", APPS / "followup_ops"],
                       actor="test")
        with transaction(engine) as session:
            for dept in ("cardiology", "orthopedics"):
                session.add(Department(id=dept, name={"zh-CN": dept, "en": dept}))
            session.flush()
            sent = NOW - timedelta(days=6)
            for n, (dept, status) in enumerate((
                    ("cardiology", "answered"), ("cardiology", "answered"),
                    ("cardiology", "answered"), ("cardiology", "expired"),
                    ("orthopedics", "answered"))):
                pid = f"R{n}"
                session.add(Patient(id=pid, mrn=f"MRN-{pid}", name="x"))
                session.flush()
                session.add(Encounter(id=f"E{pid}", patient_id=pid, type="inpatient",
                                      department_id=dept, status="discharged",
                                      admitted_at=sent, discharged_at=sent))
                session.add(FormRequest(
                    id=f"req-{n}", token_hash=f"{n:064d}", form_key="discharge_day3",
                    patient_id=pid, encounter_id=f"E{pid}", channel="sms", status=status,
                    sent_at=sent, answered_at=sent + timedelta(hours=2 + n)
                    if status == "answered" else None, expires_at=sent + timedelta(days=3)))
                session.flush()
                if status != "answered":  # the nurse phones: not reached, then reached
                    for outcome, seconds in (("not_reached", 30), ("reached_ok", 270)):
                        task, _ = create_task(
                            session, title="电话随访", kind="phone_followup", actor="test",
                            assignee=Assignee(None, "nurse", dept), patient_id=pid,
                            encounter_id=f"E{pid}", idempotency_key=f"t{n}{outcome}")
                        session.add(CallRecord(task_id=task.id, patient_id=pid,
                                               started_at=NOW, duration_seconds=seconds,
                                               outcome=outcome, caller="nurse",
                                               source="console"))
                        complete_task(session, task, actor="nurse", outcome=outcome)
    make_user("hn", "head_nurse", "cardiology")
    make_user("px", "px_office", None)


def test_the_roi_dashboard_counts_and_the_minutes_are_the_hospitals_setting(
        hospital: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with frozen_now(NOW), TestClient(create_app()) as client:  # type: ignore[arg-type]
        login(client, "hn")
        tiles = _tiles(client)
        # three answered in cardiology (orthopaedics' is not hers), 5 minutes each by default
        assert tiles["roi_auto"][0]["auto_followups"] == 3
        assert tiles["roi_hours_saved"][0]["hours_saved"] == 0.25
        assert tiles["roi_auto"][0]["answer_hours"] == 3.0  # 2, 3 and 4 hours
        # one reached by phone (the unanswered call is not a follow-up done): its 4.5 minutes
        assert tiles["roi_phone"][0]["phone_followups"] == 1
        assert tiles["roi_phone"][0]["call_minutes"] == 4.5
        trend = tiles["roi_response_trend"]
        assert [r["response_rate"] for r in trend] == [75.0]

        monkeypatch.setenv("CARELOOP_MINUTES_PER_CALL", "12")
        assert _tiles(client)["roi_hours_saved"][0]["hours_saved"] == 0.6
        monkeypatch.setenv("CARELOOP_MINUTES_PER_CALL", "lots")  # a mistake: the default
        assert _tiles(client)["roi_hours_saved"][0]["hours_saved"] == 0.25

        client.cookies.clear()
        login(client, "px")  # hospital-wide
        assert _tiles(client)["roi_auto"][0]["auto_followups"] == 4
        zh = client.get("/reports/dashboards/followup_roi").text
        assert "随访成效与节省工时" in zh and "节省人工工时(小时)" in zh
