"""The example SMS gateway channel (``careloop_example/sms_gateway.py``): registered like a
built-in, its options checked by path, messages delivered through a loopback gateway with the
idempotency key, and a crash resolved by asking the gateway instead of sending again."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import careloop_example.sms_gateway as sms_gateway  # tests/plugins/conftest.py: on sys.path
import pytest
from sqlalchemy import Engine, select, update

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.registry import Registry, loaded_registry
from careloop.flows import outbox
from careloop.flows.models import OutboxMessage

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
TOKEN = "s3cret-token"


class Lingnan:
    """The gateway: remembers each key's message id, answers a repeated key with it."""

    def __init__(self) -> None:
        self.messages: dict[str, str] = {}
        self.posts: list[dict[str, Any]] = []
        self.answer: int | None = None  # force a status (a 503 outage, a 400 refusal)
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers["X-Idempotency-Key"]
                gateway.posts.append({"key": key, "auth": self.headers["Authorization"],
                                      **body})
                if gateway.answer is not None:
                    return self._reply(gateway.answer)
                if key in gateway.messages:
                    return self._reply(200, {"message_id": gateway.messages[key]})
                gateway.messages[key] = f"LN{len(gateway.messages) + 1:06d}"
                return self._reply(201, {"message_id": gateway.messages[key]})

            def do_GET(self) -> None:
                key = parse_qs(urlsplit(self.path).query)["key"][0]
                if key not in gateway.messages:
                    return self._reply(404)
                return self._reply(200, {"message_id": gateway.messages[key],
                                         "status": "accepted"})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def lingnan(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lingnan]:
    catalogue = loaded_registry().catalogue("channel_adapter")
    if catalogue.get("sms_gateway") is None:  # installed in CI: its entry point did it
        scratch = Registry()
        sms_gateway.register(scratch)  # what the entry point runs, for this test only
        monkeypatch.setitem(catalogue._items, "sms_gateway",
                            scratch.catalogue("channel_adapter")["sms_gateway"])
    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="张三", phone="13800000000", locale="zh-CN",
                            attributes={}, consents={}))
    gateway = Lingnan()
    monkeypatch.setenv("CARELOOP_CHANNEL_SMS", "sms_gateway")
    monkeypatch.setenv("CARELOOP_SMS_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("CARELOOP_SMS_GATEWAY_TOKEN", TOKEN)
    try:
        yield gateway
    finally:
        gateway.server.shutdown()
        gateway.server.server_close()


def _enqueue(engine: Engine, key: str) -> int:
    with frozen_now(T0), transaction(engine) as session:
        return outbox.enqueue(session, template_key="diet_advice", channel="sms",
                              patient_id="P1", values={"patient_name": "张三"},
                              idempotency_key=key)


def _row(engine: Engine, message_id: int) -> OutboxMessage:
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row


def test_registers_like_a_builtin_and_checks_its_options() -> None:
    registry = Registry()
    sms_gateway.register(registry)
    channel = registry.catalogue("channel_adapter")["sms_gateway"]
    assert channel.title == {"zh-CN": "岭南短信平台", "en": "Lingnan SMS gateway"}
    problems = channel.check_options({"url": "ftp://x", "token": "short",
                                      "sender": "TOO-LONG-SENDER"}, ("channels", "sms"))
    assert sorted((p.code, p.path) for p in problems) == [
        ("flow.bad-channel-option", ("channels", "sms", "sender")),
        ("flow.bad-channel-option", ("channels", "sms", "token")),
        ("flow.bad-channel-option", ("channels", "sms", "url"))]
    assert channel.check_options({"url": "https://sms.example.cn", "token": TOKEN}) == []


def test_delivers_through_the_gateway_with_the_idempotency_key(engine: Engine,
                                                                lingnan: Lingnan) -> None:
    message_id = _enqueue(engine, "sms-1")
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"sent": 1}
    row = _row(engine, message_id)
    assert (row.status, row.provider_ref) == ("sent", "LN000001")
    (post,) = lingnan.posts
    assert (post["key"], post["auth"], post["to"], post["sender"]) == (
        "sms-1", f"Bearer {TOKEN}", "13800000000", "CARELOOP")
    assert "张三" in post["text"]


def test_after_a_crash_the_gateway_is_asked_not_sent_to_again(engine: Engine,
                                                              lingnan: Lingnan) -> None:
    accepted, lost = _enqueue(engine, "sms-2"), _enqueue(engine, "sms-3")
    lingnan.messages["sms-2"] = "LN000099"  # accepted; the dispatcher died before its commit
    with transaction(engine) as session:
        session.execute(update(OutboxMessage).values(
            status="sending", attempts=1, attempt_started_at=T0, claimed_by="dead",
            claim_token="t", claimed_until=T0 + timedelta(minutes=2)))
    outbox.dispatch_due(engine, worker="w", now=T0 + timedelta(minutes=5))
    assert (_row(engine, accepted).status, _row(engine, accepted).provider_ref) == (
        "sent", "LN000099")
    assert _row(engine, lost).status == "sent"
    assert [p["key"] for p in lingnan.posts] == ["sms-3"]  # only the lost one was posted


def test_an_outage_is_retried_a_refusal_is_a_dead_letter(engine: Engine,
                                                        lingnan: Lingnan) -> None:
    message_id = _enqueue(engine, "sms-4")
    lingnan.answer = 503
    outbox.dispatch_due(engine, worker="w", now=T0)
    row = _row(engine, message_id)
    assert (row.status, row.reason) == ("pending", "gateway_refused")
    assert row.next_attempt_at > T0
    lingnan.answer = 400
    outbox.dispatch_due(engine, worker="w", now=T0 + timedelta(minutes=5))
    assert (_row(engine, message_id).status, _row(engine, message_id).reason) == (
        "dead", "gateway_refused")
    with transaction(engine) as session:
        assert session.scalars(select(OutboxMessage.incident_id)).one() is not None
