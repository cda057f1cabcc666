"""Through the web app: the patient opens the summary / guidance link a message actually carried;
the administrator sees each failure's and expiry's reason in words and resends or cancels."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.engine.models import AuditRow
from careloop.flows.ingest import ingest
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import dispatch_due, message_text

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
DISCHARGED = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
PAYLOAD = {"encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
           "department_id": "cardiology", "discharged_at": DISCHARGED.isoformat(),
           "summary": "出院诊断：原发性高血压。\n\n出院后低盐饮食，每日早晚各测一次血压。",
           "medications": [{"name": "氨氯地平片", "dose": "5 mg", "usage": "每日一次，早饭后",
                            "days": 30, "note": "<b>不要</b>自行停药"}]}


@pytest.fixture
def discharged(engine: Engine) -> dict[str, str]:
    """The discharge flow ran for P1; returns the path of each link by template."""
    for name in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(APPS / name, engine=engine)
    with transaction(engine) as session:  # reference data the HIS names by code
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
    with frozen_now(DISCHARGED), transaction(engine) as session:
        for event_id, kind, payload in (
                ("p1", "patient.upserted", {"patient_id": "P1", "mrn": "M1", "name": "张三",
                                            "birth_date": "1980-01-01", "locale": "zh-CN"}),
                ("e1", "encounter.discharged", PAYLOAD)):
            status, body = ingest(session, {"event_id": event_id, "type": kind,
                                            "payload": payload})
            assert status == 200, body
    with transaction(engine) as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        found = {}
        for row in rows:
            text = message_text(session, row)[1]
            match = re.search(r"http://127\.0\.0\.1:8000(/d/[A-Za-z0-9_-]+)", text)
            assert match, text
            found[row.template_key] = match.group(1)
    return found


def test_the_summary_and_guidance_links_open_real_pages(client: TestClient,
                                                        discharged: dict[str, str]) -> None:
    with frozen_now(DISCHARGED + timedelta(hours=1)):
        summary = client.get(discharged["discharge_settlement"])
        guidance = client.get(discharged["medication_guidance"] + "?lang=en")
    assert summary.status_code == 200 and guidance.status_code == 200
    assert summary.headers["cache-control"] == "no-store"
    assert 'name="viewport" content="width=device-width' in summary.text
    assert "<h1>出院小结</h1>" in summary.text and "出院后低盐饮食" in summary.text
    assert "出院日期：2026-12-01" in summary.text and "氨氯地平" not in summary.text
    assert "<h1>Your take-home medicines</h1>" in guidance.text
    assert "氨氯地平片" in guidance.text and "5 mg" in guidance.text and "30 days" in guidance.text
    assert "&lt;b&gt;不要&lt;/b&gt;" in guidance.text  # HIS text is escaped, never HTML


def test_a_tampered_guessed_or_expired_link_opens_nothing(client: TestClient,
                                                          discharged: dict[str, str]) -> None:
    path = discharged["discharge_settlement"]
    tampered = path[:-1] + ("A" if path[-1] != "A" else "B")
    with frozen_now(DISCHARGED + timedelta(hours=1)):
        assert client.get(tampered).status_code == 404
        assert client.get("/d/E1").status_code == 404
        assert client.get("/discharge-summary/E1").status_code == 404
    with frozen_now(DISCHARGED + timedelta(days=31)):
        expired = client.get(path)
    assert expired.status_code == 410 and "链接已过期" in expired.text
    assert "出院后低盐饮食" not in expired.text


def _message(engine: Engine, key: str, **extra: object) -> int:
    from careloop.flows.outbox import enqueue

    with frozen_now(DISCHARGED), transaction(engine) as session:
        return enqueue(session, template_key="diet_advice", channel="wechat", patient_id="P1",
                       values={"patient_name": "张三"}, idempotency_key=key,
                       **extra)  # type: ignore[arg-type]


def _status(message_id: int) -> tuple[str, str | None]:
    with transaction() as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row.status, row.reason


def test_admin_sees_reasons_and_resends_or_cancels(client: TestClient, engine: Engine,
                                                   discharged: dict[str, str],
                                                   user_factory: UserFactory) -> None:
    user_factory("it", "system_admin", None)
    user_factory("nurse", "nurse", None)
    late = _message(engine, "late")
    dead = _message(engine, "dead", link_expires_at=DISCHARGED + timedelta(hours=2))
    dispatch_due(engine, worker="t", now=DISCHARGED + timedelta(days=2))
    waiting = _message(engine, "waiting")
    assert _status(late) == ("expired", "too_late")
    assert _status(dead) == ("expired", "link_expired")

    with frozen_now(DISCHARGED + timedelta(days=2)):  # every request at one travelled time
        _admin_pages(client, late, dead, waiting)
    assert dispatch_due(engine, worker="t", now=DISCHARGED + timedelta(days=2, minutes=1)) == {
        "logged": 1}
    with frozen_now(DISCHARGED + timedelta(days=2, minutes=2)):
        logged_page = client.get("/admin/flows?outbox=logged")
    assert "已记录，未实际发送" in logged_page.text and "未实际送达患者" in logged_page.text
    from careloop.web.patient360 import panel_messages

    with transaction() as session:
        panel = str(panel_messages(session, "P1", None, "zh-CN"))  # type: ignore[arg-type]
    assert "已记录，未实际发送" in panel and ">logged<" not in panel
    assert "2026-12-03 10:01" in panel  # sent/logged time in hospital time (02:01 UTC)
    with transaction() as session:
        audit = [(a.action, a.object_id, a.outcome, a.actor) for a in session.scalars(
            select(AuditRow).where(AuditRow.action.like("outbox.%")).order_by(AuditRow.id))]
    assert audit == [("outbox.resend", str(late), "success", "it"),
                     ("outbox.resend", str(dead), "failure", "it"),
                     ("outbox.cancel", str(waiting), "success", "it")]


def _admin_pages(client: TestClient, late: int, dead: int, waiting: int) -> None:
    login(client, "nurse")
    assert client.get("/admin/flows").status_code == 403
    refused = client.post(f"/admin/flows/outbox/{late}/resend",
                          data={"csrf_token": client.get("/api/v1/me").json()["csrf_token"]})
    assert refused.status_code == 403 and _status(late)[0] == "expired"
    client.post("/logout", data={"csrf_token": client.get("/api/v1/me").json()["csrf_token"]})

    login(client, "it")
    page = client.get("/admin/flows?outbox=expired")
    assert page.status_code == 200
    row = re.search(rf'<tr data-message="{late}">.*?</tr>', page.text, re.S)
    assert row is not None
    assert "已过期，未发送" in row.group(0) and "已过发送时机" in row.group(0)
    assert "2026-12-02 10:00" in row.group(0)  # valid until, in Shanghai time (02:00 UTC)
    assert f"/admin/flows/outbox/{late}/resend" in row.group(0)
    dead_row = re.search(rf'<tr data-message="{dead}">.*?</tr>', page.text, re.S)
    assert dead_row is not None and "链接已过期" in dead_row.group(0)
    assert "/resend" not in dead_row.group(0)  # a dead link is never sent again

    csrf = csrf_from(page.text)
    no_token = client.post(f"/admin/flows/outbox/{late}/resend", data={},
                           follow_redirects=False)
    assert no_token.status_code == 403 and _status(late)[0] == "expired"
    done = client.post(f"/admin/flows/outbox/{late}/resend", data={"csrf_token": csrf},
                       follow_redirects=False)
    assert done.status_code == 303 and _status(late) == ("pending", None)
    assert client.post(f"/admin/flows/outbox/{dead}/resend",
                       data={"csrf_token": csrf}).status_code == 409
    cancelled = client.post(f"/admin/flows/outbox/{waiting}/cancel",
                            data={"csrf_token": csrf}, follow_redirects=True)
    assert _status(waiting) == ("cancelled", "cancelled_by_staff")
    assert f"消息 {waiting} 已取消" in cancelled.text


def test_up_says_when_the_base_url_is_missing(engine: Engine,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from careloop.web.cli import up

    monkeypatch.setenv("CARELOOP_BASE_URL", "")
    bare = CliRunner().invoke(up, ["--no-serve", "--bundles", str(APPS / "common")])
    assert bare.exit_code == 0, bare.output
    assert "warning: CARELOOP_BASE_URL is not set" in bare.output
    monkeypatch.setenv("CARELOOP_BASE_URL", "https://fu.example-hospital.cn")
    configured = CliRunner().invoke(up, ["--no-serve", "--bundles", str(APPS / "common")])
    assert configured.exit_code == 0 and "CARELOOP_BASE_URL" not in configured.output
    monkeypatch.setenv("CARELOOP_BASE_URL", "followup.example-hospital.cn")
    malformed = CliRunner().invoke(up, ["--no-serve", "--bundles", str(APPS / "common")])
    assert malformed.exit_code == 1
    assert "CARELOOP_BASE_URL has value 'followup.example-hospital.cn'" in malformed.output
