"""Patient-link tokens never in clear (issue 14, part 4): the outbox stores a sealed placeholder,
the channel gets the real link at send time, the patient opens it; rows written before are
sealed by migration 0017."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text

from careloop.engine import db as dbmod
from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.engine.links import LINK_IN_TEXT, seal_links
from careloop.engine.migrate import upgrade
from careloop.engine.registry import loaded_registry
from careloop.flows.channel import Channel, SendResult
from careloop.flows.ingest import ingest
from careloop.flows.models import DocumentLink, OutboxMessage
from careloop.flows.outbox import Outbound, dispatch_due, message_text
from careloop.flows.scheduler import run_due
from careloop.forms.models import FormRequest
from careloop.web.app import create_app

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
DISCHARGED = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
DAY3 = datetime.fromisoformat("2026-12-04T09:31:00+08:00")
PAYLOAD = {"encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
           "department_id": "cardiology", "discharged_at": DISCHARGED.isoformat(),
           "summary": "出院诊断：原发性高血压。",
           "medications": [{"name": "氨氯地平片", "dose": "5 mg", "usage": "每日一次"}]}
TOKEN_LINK = re.compile(r"https?://[^/\s]+(/[fd]/[A-Za-z0-9_-]{16,})")


class Recording(Channel):
    """A channel type (the registry's extension point) that keeps what it was given."""

    name = "recording"
    idempotent = True

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        self.sent.append(message)
        return SendResult("delivered")


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Recording:
    adapter = Recording()
    loaded_registry().catalogue("channel_adapter").register("recording", adapter, replace=True)
    for channel in ("sms", "wechat", "email", "wecom"):
        monkeypatch.setenv(f"CARELOOP_CHANNEL_{channel.upper()}", "recording")
    return adapter


def _discharge_and_day3(engine: Engine) -> None:
    for name in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(APPS / name, engine=engine)
    with transaction(engine) as session:
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
    with frozen_now(DISCHARGED), transaction(engine) as session:
        for event_id, kind, payload in (
                ("p1", "patient.upserted", {"patient_id": "P1", "mrn": "M1", "name": "张三",
                                            "phone": "13812345678",
                                            "birth_date": "1980-01-01", "locale": "zh-CN"}),
                ("e1", "encounter.discharged", PAYLOAD)):
            status, body = ingest(session, {"event_id": event_id, "type": kind,
                                            "payload": payload})
            assert status == 200, body
    with frozen_now(DISCHARGED):
        run_due(engine, now=DISCHARGED)
    with frozen_now(DAY3):
        run_due(engine, now=DAY3)


def test_stored_messages_hold_no_token_and_the_sent_links_open_the_pages(
        engine: Engine, recording: Recording) -> None:
    _discharge_and_day3(engine)
    with transaction(engine) as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        stored = [(r.subject or "") + r.body for r in rows]
        requests = session.scalars(select(FormRequest)).all()
        links = session.scalars(select(DocumentLink)).all()
        hashes = {r.token_hash for r in requests} | {link.token_hash for link in links}
    assert len(rows) == 3 and len(requests) == 1 and len(links) == 2
    for body in stored:  # nothing in the table opens a patient's page
        assert LINK_IN_TEXT.search(body) is None, body
        assert "{{link:" in body
    sent = [m.body for m in recording.sent]
    assert len(sent) == 3
    paths = [TOKEN_LINK.search(body) for body in sent]
    assert all(paths), sent
    tokens = [p.group(1)[3:] for p in paths if p]
    assert {hashlib.sha256(t.encode()).hexdigest() for t in tokens} == hashes  # lookup by hash
    client = TestClient(create_app())
    with frozen_now(DAY3 + timedelta(minutes=5)):
        for path in (p.group(1) for p in paths if p):
            page = client.get(path)
            assert page.status_code == 200, path
    with transaction(engine) as session:  # staff and trial read-backs: the link shown, shortened
        row = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).first()
        assert row is not None
        _, shown = message_text(session, row, shown=False)
    assert "…" in shown and LINK_IN_TEXT.search(shown) is None


def test_a_changed_link_secret_fails_the_message_with_a_reason(
        engine: Engine, recording: Recording, monkeypatch: pytest.MonkeyPatch) -> None:
    from careloop.flows.outbox import enqueue

    for name in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(APPS / name, engine=engine)
    with transaction(engine) as session:
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
    with frozen_now(DISCHARGED), transaction(engine) as session:
        assert ingest(session, {"event_id": "p1", "type": "patient.upserted", "payload": {
            "patient_id": "P1", "mrn": "M1", "name": "张三"}})[0] == 200
    monkeypatch.setenv("CARELOOP_LINK_SECRET", "first secret")
    with frozen_now(DISCHARGED), transaction(engine) as session:
        message_id = enqueue(session, template_key="diet_advice", channel="wechat",
                             patient_id="P1", values={"patient_name": "张三"},
                             idempotency_key="k1")
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        row.body += " https://h.example/f/Zx9yW8vU7tS6rQ5pAbCdEfGh"
        row.body = seal_links(session, row.body) or ""
        assert "Zx9yW8vU7tS6rQ5p" not in row.body
    monkeypatch.setenv("CARELOOP_LINK_SECRET", "another secret")
    with frozen_now(DISCHARGED):
        dispatch_due(engine, worker="w", now=DISCHARGED)
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None and (row.status, row.reason) == ("dead", "link_unavailable")
    assert recording.sent == []


def test_migration_seals_the_tokens_of_messages_written_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARELOOP_LINK_SECRET", raising=False)
    engine = dbmod.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0012")
        upgrade(engine, "0010")
        token = "Zx9yW8vU7tS6rQ5pAbCdEfGhIjKlMnOp"
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO outbox_messages (idempotency_key, template_key, channel, locale, "
                "subject, body, urgent, status, attempts, next_attempt_at, created_at) VALUES "
                "('k', 't', 'sms', 'zh-CN', NULL, :body, 0, 'pending', 0, :at, :at)"),
                {"body": f"请填写 https://h.example/f/{token} 谢谢", "at": DISCHARGED})
        upgrade(engine)
        with transaction(engine) as session:
            row = session.scalars(select(OutboxMessage)).one()
            assert token not in row.body and "{{link:f:" in row.body
            assert message_text(session, row)[1] == f"请填写 https://h.example/f/{token} 谢谢"
    finally:
        engine.dispose()
