"""/admin/delivery (web/routes_outbox.py): the open delivery incident, the dead letters offered
in one go once their channel recovered, a message of unknown outcome confirmed by a person — in
words and hospital time, no codes, every action audited."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.models import AuditRow
from careloop.flows import outbox
from careloop.flows.models import DeliveryIncident, OutboxMessage

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def _enqueue(engine: Engine, key: str, patient: str) -> int:
    with frozen_now(T0), transaction(engine) as session:
        return outbox.enqueue(session, template_key="diet_advice", channel="wechat",
                              patient_id=patient, values={"patient_name": "张三"},
                              idempotency_key=key)


def _status(message_id: int) -> str:
    with transaction() as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row.status


def test_delivery_page_offers_recovered_dead_letters_and_resolves_unknown(
        client: TestClient, engine: Engine, user_factory: UserFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        for n in range(4):
            session.add(Patient(id=f"P{n}", mrn=f"M{n}", name="张三", phone="13800000000",
                                locale="zh-CN", attributes={}, consents={}))
    user_factory("it", "system_admin", None)
    user_factory("nurse", "nurse", None)
    # the wechat gateway is not configured: every send fails until the 6-hour horizon
    monkeypatch.setenv("CARELOOP_CHANNEL_WECHAT", "webhook")
    monkeypatch.setenv("CARELOOP_GATEWAY_URL", "")
    dead = [_enqueue(engine, f"d{n}", f"P{n}") for n in range(2)]
    unknown = _enqueue(engine, "u", "P2")
    with transaction(engine) as session:  # a send interrupted on a channel nobody can ask
        session.execute(update(OutboxMessage).where(OutboxMessage.id == unknown).values(
            status="unknown", reason="outcome_unknown", attempts=1, attempt_started_at=T0))
    for step in range(0, 40):
        outbox.dispatch_due(engine, worker="w", now=T0 + timedelta(minutes=10 * step))
    assert [_status(i) for i in dead] == ["dead", "dead"]
    # the channel recovers (the log channel stands in for the mended gateway)
    monkeypatch.setenv("CARELOOP_CHANNEL_WECHAT", "log")
    back = T0 + timedelta(hours=8)
    _enqueue(engine, "fresh", "P3")
    with transaction(engine) as session:  # a later message went through on the channel
        session.execute(update(OutboxMessage).where(OutboxMessage.idempotency_key == "fresh")
                        .values(status="sent", sent_at=back))

    with frozen_now(back):
        login(client, "nurse")
        assert client.get("/admin/delivery").status_code == 403
        client.post("/logout", data={"csrf_token": client.get("/api/v1/me").json()[
            "csrf_token"]})
        login(client, "it")
        page = client.get("/admin/delivery")
        assert page.status_code == 200
        text = page.text
        assert "未关闭的送达事件" in text and "微信" in text  # the channel in words
        assert "渠道在重试时限内一直无法发送" in text and "全部重新发送（2 条）" in text
        assert "送达结果未知" in text and f"/admin/delivery/messages/{unknown}/confirm" in text
        assert "2026-12-01 1" in text  # times in hospital time
        assert not re.search(r">\s*(wechat|dead|unknown|retry_horizon)\s*<", text)
        assert "13800000000" not in text and "张三" not in text  # no patient details
        csrf = csrf_from(text)
        resent = client.post("/admin/delivery/resend-recovered", data={"csrf_token": csrf},
                             follow_redirects=True)
        assert "2 条死信将重新发送" in resent.text
        confirmed = client.post(f"/admin/delivery/messages/{unknown}/confirm",
                                data={"csrf_token": csrf}, follow_redirects=True)
        assert f"消息 {unknown} 已确认送达" in confirmed.text
        assert client.post(f"/admin/delivery/messages/{unknown}/confirm",
                           data={"csrf_token": csrf}).status_code == 409
        with transaction() as session:
            incident = session.scalars(select(DeliveryIncident)).one()
        done = client.post(f"/admin/delivery/incidents/{incident.id}/resolve",
                           data={"csrf_token": csrf}, follow_redirects=True)
        assert "没有未关闭的送达事件" in done.text
    assert [_status(i) for i in dead] == ["pending", "pending"] and _status(unknown) == "sent"
    with transaction() as session:
        audit = [(a.action, a.outcome) for a in session.scalars(
            select(AuditRow).where(AuditRow.action.like("outbox.%")).order_by(AuditRow.id))]
    assert audit == [("outbox.resend_recovered", "success"), ("outbox.confirm", "success"),
                     ("outbox.confirm", "failure"), ("outbox.incident_resolve", "success")]
