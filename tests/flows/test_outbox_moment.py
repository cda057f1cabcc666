"""Messages that are true: absolute links to real pages, no stale sends after downtime, no burst,
and the log channel recording "logged", never "sent"."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from careloop.engine import links
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.i18n import t
from careloop.engine.registry import loaded_registry
from careloop.flows import outbox
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import dispatch_due

DISCHARGE = {"encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
             "department_id": "cardiology", "discharged_at": "2026-12-01T10:00:00+08:00",
             "summary": "出院诊断：原发性高血压。\n\n出院后低盐饮食，每日监测血压。",
             "medications": [{"name": "氨氯地平片", "dose": "5 mg", "usage": "每日一次，早饭后"}]}
LINK = re.compile(r"(https?://\S+?)(/[df]/[A-Za-z0-9_-]+)")


def _links(body: str) -> list[tuple[str, str]]:
    return LINK.findall(body)


def test_every_link_in_the_discharge_messages_is_absolute(bundles: Engine, send: Any,
                                                          helpers: Any, sweep: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_BASE_URL", "https://fu.example-hospital.cn/")
    helpers.patient(send, birth="1980-03-01")
    send("enc-1", "encounter.discharged", DISCHARGE)
    sweep("2026-12-04T09:31:00+08:00")
    by_template = {m.template_key: helpers.text(bundles, m) for m in helpers.messages(bundles)}
    assert set(by_template) == {"discharge_settlement", "medication_guidance",
                                "discharge_care_day3"}
    for body in by_template.values():
        (found,) = _links(body)
        assert found[0] == "https://fu.example-hospital.cn", body
        assert body.count("https://fu.example-hospital.cn/") == len(re.findall(r"/[df]/", body))
    assert "/d/" in by_template["discharge_settlement"]
    assert "/d/" in by_template["medication_guidance"]
    assert "/f/" in by_template["discharge_care_day3"]
    assert "E1" not in by_template["discharge_settlement"]  # a token, not the encounter id


def test_nothing_to_show_means_no_link(bundles: Engine, send: Any, helpers: Any) -> None:
    helpers.patient(send, birth="1980-03-01")
    bare = {k: v for k, v in DISCHARGE.items() if k not in ("summary", "medications")}
    send("enc-1", "encounter.discharged", bare)
    settlement, guidance = helpers.messages(bundles)
    assert _links(settlement.body) == [] and _links(guidance.body) == []
    assert settlement.body.endswith("出院结算已完成。")
    assert "请按医嘱按时服用出院带药" in guidance.body and "：" not in guidance.body[-2:]
    assert settlement.link_expires_at is None


def test_discharge_documents_stay_out_of_the_event_log(bundles: Engine, send: Any,
                                                       helpers: Any) -> None:
    from sqlalchemy import select

    from careloop.engine.models import DomainEventRow
    from careloop.flows.models import DischargeDocument

    helpers.patient(send)
    send("enc-1", "encounter.discharged", DISCHARGE)
    with transaction(bundles) as session:
        row = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == "enc-1")).one()
        assert "summary" not in row.payload and "medications" not in row.payload
        document = session.get(DischargeDocument, "E1")
        assert document is not None and document.summary == DISCHARGE["summary"]
        assert document.medications == DISCHARGE["medications"]


def test_eighteen_days_of_downtime_then_a_sweep_sends_nothing_stale(
        bundles: Engine, send: Any, helpers: Any, sweep: Any, nurse: int,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "outbox.jsonl"
    monkeypatch.setenv("CARELOOP_OUTBOX_LOG_FILE", str(log))
    helpers.patient(send, birth="1950-03-01")
    send("enc-1", "encounter.discharged", DISCHARGE)
    report = sweep("2026-12-19T10:05:00+08:00")  # the first sweep after 18 days down
    assert report.fired >= 2
    rows = {m.template_key: m for m in helpers.messages(bundles)}
    assert {k: (m.status, m.reason) for k, m in rows.items()} == {
        "discharge_settlement": ("expired", "too_late"),
        "medication_guidance": ("expired", "too_late"),
        "discharge_care_day3": ("expired", "link_expired"),
    }
    assert all(m.sent_at is None for m in rows.values())
    assert not log.exists()  # nothing left the outbox
    assert "过" in t("flows.outbox.reason.too_late", "zh-CN")


def _enqueue(engine: Engine, key: str, at: datetime, **extra: Any) -> int:
    service = loaded_registry().catalogue("service")["outbox.enqueue"]
    with frozen_now(at), transaction(engine) as session:
        return int(service(session, template_key="diet_advice", channel="wechat",
                           patient_id="P1", values={"patient_name": "张三"},
                           idempotency_key=key, **extra))


@pytest.fixture
def common(engine: Engine) -> Engine:
    from careloop.engine.bundles import import_bundle
    from careloop.engine.domain import Patient

    from .conftest import APPS  # type: ignore[import-not-found]

    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="张三", phone="13800000000",
                            attributes={}, consents={}))
    return engine


def _row(engine: Engine, message_id: int) -> OutboxMessage:
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row


AT = datetime(2026, 12, 1, 2, tzinfo=UTC)


def test_a_message_past_its_valid_for_or_its_link_is_expired(common: Engine) -> None:
    short = _enqueue(common, "short", AT, valid_for=timedelta(hours=2))
    default = _enqueue(common, "default", AT)
    linked = _enqueue(common, "linked", AT, valid_for=timedelta(days=5),
                      link_expires_at=AT + timedelta(hours=5))
    assert _row(common, default).expires_at == AT + outbox.DEFAULT_VALID_FOR
    counts = dispatch_due(common, worker="w", now=AT + timedelta(hours=6))
    assert counts == {"expired": 2, "logged": 1}
    assert (_row(common, short).status, _row(common, short).reason) == ("expired", "too_late")
    assert (_row(common, linked).status, _row(common, linked).reason) == ("expired",
                                                                          "link_expired")
    assert _row(common, default).status == "logged"


def test_late_messages_for_one_patient_are_paced_not_burst(common: Engine) -> None:
    ids = [_enqueue(common, f"m{n}", AT) for n in range(3)]
    late = AT + timedelta(hours=3)
    assert dispatch_due(common, worker="w", now=late) == {"logged": 1, "deferred": 2}
    waiting = [_row(common, i) for i in ids[1:]]
    assert {(r.status, r.reason) for r in waiting} == {("pending", "paced")}
    assert {r.next_attempt_at for r in waiting} == {late + outbox.PATIENT_SPACING}
    assert dispatch_due(common, worker="w", now=late + outbox.PATIENT_SPACING) == {
        "logged": 1, "deferred": 1}
    dispatch_due(common, worker="w", now=late + 2 * outbox.PATIENT_SPACING)
    sent_at = sorted(_row(common, i).sent_at or AT for i in ids)
    assert [b - a for a, b in pairwise(sent_at)] == [outbox.PATIENT_SPACING] * 2


def test_punctual_messages_are_not_held_back(common: Engine) -> None:
    ids = [_enqueue(common, f"p{n}", AT) for n in range(2)]
    assert dispatch_due(common, worker="w", now=AT + timedelta(minutes=1)) == {"logged": 2}
    assert {_row(common, i).status for i in ids} == {"logged"}


def test_log_channel_records_logged_not_sent(common: Engine, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "outbox.jsonl"
    monkeypatch.setenv("CARELOOP_OUTBOX_LOG_FILE", str(log))
    message_id = _enqueue(common, "l1", AT)
    assert dispatch_due(common, worker="w", now=AT) == {"logged": 1}
    row = _row(common, message_id)
    assert (row.status, row.reason) == ("logged", "log_channel")
    assert json.loads(log.read_text("utf-8"))["status"] == "logged"
    from careloop.flows.views import outbox_json

    with transaction(common) as session:
        assert [m["status"] for m in outbox_json(session)] == ["logged"]
        assert outbox_json(session, status="sent") == []


def test_resend_and_cancel(common: Engine) -> None:
    pending = _enqueue(common, "c1", AT)
    dead_link = _enqueue(common, "c2", AT, link_expires_at=AT + timedelta(hours=1))
    dispatch_due(common, worker="w", now=AT + timedelta(hours=2))
    with frozen_now(AT + timedelta(hours=2)), transaction(common) as session:
        with pytest.raises(outbox.OutboxError) as refused:
            outbox.resend(session, dead_link)
        assert outbox.resend(session, pending).status == "pending"
    assert "cannot be resent" in str(refused.value)
    row = _row(common, pending)
    assert row.expires_at == AT + timedelta(hours=2) + outbox.DEFAULT_VALID_FOR
    assert row.reason is None and row.sent_at is None and row.attempts == 0
    with transaction(common) as session:
        assert outbox.cancel(session, pending).reason == "cancelled_by_staff"
    with transaction(common) as session, pytest.raises(outbox.OutboxError):
        outbox.cancel(session, pending)
    assert _row(common, pending).status == "cancelled"


def test_every_reason_has_words_in_both_languages() -> None:
    for reason in outbox.REASONS:
        for locale in ("zh-CN", "en"):
            assert t(f"flows.outbox.reason.{reason}", locale) != f"flows.outbox.reason.{reason}"
    assert t("flows.outbox.reason.log_channel", "zh-CN") != t("flows.outbox.reason.log_channel",
                                                             "en")


def test_base_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_BASE_URL", "")  # unset (and restored after the test)
    assert not links.configured()
    assert links.absolute("/f/abc") == "http://127.0.0.1:8000/f/abc"
    assert "CARELOOP_BASE_URL is not set" in (links.startup_warning() or "")
    links.use_for_demo("0.0.0.0", 8080)
    assert links.absolute("/d/x") == "http://127.0.0.1:8080/d/x"
    assert links.startup_warning() is None
    monkeypatch.setenv("CARELOOP_BASE_URL", "https://fu.example.cn/careloop/")
    assert links.absolute("/f/abc") == "https://fu.example.cn/careloop/f/abc"
    assert links.absolute("https://other.example/x") == "https://other.example/x"
    monkeypatch.setenv("CARELOOP_BASE_URL", "fu.example.cn")
    with pytest.raises(links.BaseUrlError) as exc:
        links.startup_warning()
    assert "CARELOOP_BASE_URL has value 'fu.example.cn'" in str(exc.value)
