"""The outbox: consent, quiet hours, idempotency, rate limits, e-mail over SMTP, webhook."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.registry import loaded_registry
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import dispatch_due

from .conftest import APPS  # type: ignore[import-not-found]


@pytest.fixture
def common(engine: Engine) -> Engine:
    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="张三", phone="13800000000", locale="en",
                            attributes={"email": "p1@example.org"}, consents={}))
    return engine


def _enqueue(engine: Engine, key: str, channel: str = "sms", urgent: bool = False,
             at: datetime = datetime(2026, 12, 1, 2, tzinfo=UTC)) -> int:
    service = loaded_registry().catalogue("service")["outbox.enqueue"]
    with frozen_now(at), transaction(engine) as session:
        return int(service(session, template_key="diet_advice", channel=channel,
                           patient_id="P1", values={"patient_name": "张三"},
                           idempotency_key=key, urgent=urgent))


def _row(engine: Engine, message_id: int) -> OutboxMessage:
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row


def test_rendered_in_the_patients_language_and_idempotent(common: Engine) -> None:
    first = _enqueue(common, "k1")
    assert _enqueue(common, "k1") == first
    row = _row(common, first)
    assert row.locale == "en" and row.body.startswith("Dear 张三")


def test_sms_waits_for_quiet_hours_to_end_unless_urgent(common: Engine) -> None:
    night = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    normal = _enqueue(common, "night", at=night)
    urgent = _enqueue(common, "urgent", urgent=True, at=night)
    email = _enqueue(common, "mail", channel="log", at=night)
    counts = dispatch_due(common, worker="w", now=night)
    assert counts == {"logged": 2}
    assert _row(common, normal).status == "pending"
    assert _row(common, normal).next_attempt_at == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
    assert _row(common, urgent).status == _row(common, email).status == "logged"
    dispatch_due(common, worker="w", now=datetime(2026, 12, 2, 0, 1, tzinfo=UTC))
    assert _row(common, normal).status == "logged"


def test_withdrawn_consent_stops_sends(common: Engine) -> None:
    message_id = _enqueue(common, "c1")
    with transaction(common) as session:
        patient = session.get(Patient, "P1")
        assert patient is not None
        patient.consents = {"sms": False}
    dispatch_due(common, worker="w", now=datetime(2026, 12, 1, 3, tzinfo=UTC))
    row = _row(common, message_id)
    assert row.status == "suppressed" and row.reason == "consent_withdrawn"


def test_rate_limit_defers_the_rest(common: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_OUTBOX_RATE_SMS", "2")
    ids = [_enqueue(common, f"r{n}") for n in range(3)]
    dispatch_due(common, worker="w", now=datetime(2026, 12, 1, 3, tzinfo=UTC))
    assert [_row(common, i).status for i in ids] == ["logged", "logged", "pending"]


class _Sink(Message):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Any] = []

    def handle_message(self, message: Any) -> None:
        self.messages.append(message)


@pytest.fixture
def smtp() -> Iterator[tuple[_Sink, int]]:
    with socket.socket() as probe:  # a free port (aiosmtpd cannot start on port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def test_email_over_smtp(common: Engine, smtp: tuple[_Sink, int],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = smtp
    monkeypatch.setenv("CARELOOP_CHANNEL_EMAIL", "email")
    monkeypatch.setenv("CARELOOP_SMTP_PORT", str(port))
    message_id = _enqueue(common, "e1", channel="email")
    dispatch_due(common, worker="w", now=datetime(2026, 12, 1, 3, tzinfo=UTC))
    assert _row(common, message_id).status == "sent"
    (mail,) = sink.messages
    assert mail["To"] == "p1@example.org" and "Dear" in mail.get_payload()


def test_smtp_down_is_retried_later(common: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_CHANNEL_EMAIL", "email")
    monkeypatch.setenv("CARELOOP_SMTP_PORT", "9")
    message_id = _enqueue(common, "e2", channel="email")
    dispatch_due(common, worker="w", now=datetime(2026, 12, 1, 3, tzinfo=UTC))
    row = _row(common, message_id)
    assert row.status == "pending" and row.attempts == 1 and "SMTP failed" in (row.error or "")


def test_webhook_gateway_gets_the_idempotency_key(common: Engine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200 if len(received) > 1 else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("CARELOOP_CHANNEL_SMS", "webhook")
        monkeypatch.setenv("CARELOOP_GATEWAY_URL", f"http://127.0.0.1:{server.server_port}/")
        message_id = _enqueue(common, "w1")
        dispatch_due(common, worker="w", now=datetime(2026, 12, 1, 3, tzinfo=UTC))
        assert _row(common, message_id).status == "pending"  # 503 → retried later
        dispatch_due(common, worker="w", now=datetime(2026, 12, 1, 4, tzinfo=UTC))
        assert _row(common, message_id).status == "sent"
    finally:
        server.shutdown()
        server.server_close()
    assert [r["idempotency_key"] for r in received] == ["w1", "w1"]
    assert received[0]["to"] == "13800000000"
