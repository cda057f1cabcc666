"""Provider templates and what comes back (flows/receipts.py): a template's ``providers`` entry
is checked by the channel type at import (path named), rendered with the message and handed to
the channel with its links opened; a provider's receipt is recorded once and never moves a
message backwards; the patient opening the link stamps the message that carried it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.errors import DefinitionInvalid
from careloop.engine.registry import loaded_registry
from careloop.flows import outbox
from careloop.flows.channel import Channel, Outbound, SendResult
from careloop.flows.models import OutboxMessage
from careloop.flows.receipts import record_receipt

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
TOKEN = "AbCdEfGh1234567890xyz"


class TemplatedGateway(Channel):
    """A provider that sends only approved templates (like the Chinese SMS gateways)."""

    name = "templated_test"
    title: ClassVar[dict[str, str]] = {"zh-CN": "模板短信（测试）", "en": "Templated SMS (test)"}
    template_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["template_code", "params"],
        "additionalProperties": False,
        "properties": {"template_code": {"type": "string", "pattern": "^SMS_[0-9]+$"},
                       "params": {"type": "object",
                                  "additionalProperties": {"type": "string"}}}}
    receipts = True

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        self.sent.append(message)
        return SendResult("delivered", f"ref-{len(self.sent)}")


TEMPLATE = """kind: template
key: form_link_sms
title: {zh-CN: 随访问卷短信, en: Follow-up form SMS}
channels: [sms]
variables: [patient_name, form_link]
body:
  zh-CN: "{{ patient_name }}您好，请填写随访问卷：{{ form_link }}"
providers:
  templated_test:
    template_code: %s
    params: {name: "{{ patient_name }}", link: "%s"}
"""


@pytest.fixture
def gateway(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[TemplatedGateway]:
    channel = TemplatedGateway()
    catalogue = loaded_registry().catalogue("channel_adapter")
    catalogue.register(channel.name, channel)
    monkeypatch.setenv("CARELOOP_CHANNEL_SMS", channel.name)
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="张三", phone="13800000000", locale="zh-CN",
                            attributes={}, consents={}))
    try:
        yield channel
    finally:
        catalogue.unregister(channel.name)


def _bundle(tmp_path: Path, code: str, link: str = "{{ form_link }}") -> Path:
    bundle = tmp_path / "common"
    shutil.copytree(APPS / "common", bundle)
    (bundle / "templates" / "form_link_sms.yaml").write_text(TEMPLATE % (code, link),
                                                             encoding="utf-8")
    return bundle


def test_the_channel_type_checks_its_template_entry_with_a_path(
        engine: Engine, gateway: TemplatedGateway, tmp_path: Path) -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        import_bundle(_bundle(tmp_path, "free text", "{{ form_url }}"), engine=engine)
    found = {(p.code, tuple(p.path)) for p in caught.value.problems}
    assert ("template.bad-provider-template",
            ("providers", "templated_test", "template_code")) in found
    assert ("template.undeclared-variable",
            ("providers", "templated_test", "params", "link")) in found
    assert all(p.line for p in caught.value.problems)  # located in the file


def test_an_unknown_provider_is_refused_by_name(engine: Engine, gateway: TemplatedGateway,
                                               tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "SMS_1")
    path = bundle / "templates" / "form_link_sms.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("templated_test:", "templated_tset:"),
                    encoding="utf-8")
    with pytest.raises(DefinitionInvalid) as caught:
        import_bundle(bundle, engine=engine)
    (problem,) = [p for p in caught.value.problems if p.code == "template.unknown-provider"]
    assert "templated_test" in (problem.hint or "")


def _send(engine: Engine, gateway: TemplatedGateway, tmp_path: Path) -> int:
    import_bundle(_bundle(tmp_path, "SMS_123456"), engine=engine)
    with frozen_now(T0), transaction(engine) as session:
        message_id = outbox.enqueue(
            session, template_key="form_link_sms", channel="sms", patient_id="P1",
            values={"patient_name": "张三", "form_link": f"https://fu.example.cn/f/{TOKEN}"},
            idempotency_key="m-1")
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"sent": 1}
    return message_id


def _row(engine: Engine, message_id: int) -> OutboxMessage:
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        session.expunge(row)
        return row


def test_the_channel_receives_its_rendered_entry_with_the_link_open(
        engine: Engine, gateway: TemplatedGateway, tmp_path: Path) -> None:
    message_id = _send(engine, gateway, tmp_path)
    (sent,) = gateway.sent
    assert sent.provider == {"template_code": "SMS_123456",
                             "params": {"name": "张三", "link": f"https://fu.example.cn/f/{TOKEN}"}}
    stored = _row(engine, message_id)
    assert TOKEN not in str(stored.provider_params)  # the token is stored sealed
    assert stored.link_ref is not None


def test_a_receipt_is_recorded_once_and_never_goes_back(
        engine: Engine, gateway: TemplatedGateway, tmp_path: Path) -> None:
    message_id = _send(engine, gateway, tmp_path)
    later = T0 + timedelta(minutes=1)
    with transaction(engine) as session:
        assert record_receipt(session, channel_type="templated_test", provider_ref="ref-1",
                              state="read", at=later + timedelta(minutes=5)) == message_id
        # an older "delivered" report arriving late changes nothing
        record_receipt(session, channel_type="templated_test", provider_ref="ref-1",
                       state="delivered", at=later, detail="DELIVRD")
        # another channel type's reference, or an unknown one: not this message
        assert record_receipt(session, channel_type="smtp", provider_ref="ref-1",
                              state="failed") is None
        assert record_receipt(session, channel_type="templated_test", provider_ref="ref-9",
                              state="failed") is None
    row = _row(engine, message_id)
    assert (row.receipt_state, row.receipt_at) == ("read", later + timedelta(minutes=5))


def test_opening_the_link_stamps_the_message(engine: Engine, gateway: TemplatedGateway,
                                             tmp_path: Path, client: TestClient) -> None:
    message_id = _send(engine, gateway, tmp_path)
    assert _row(engine, message_id).opened_at is None
    client.get(f"/f/{TOKEN}")  # no such form request here: the page says so, the open counts
    opened = _row(engine, message_id).opened_at
    assert opened is not None
    client.get(f"/f/{TOKEN}")
    assert _row(engine, message_id).opened_at == opened  # the first opening is kept
