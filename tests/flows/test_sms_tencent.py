"""Tencent Cloud SMS (flows/sms/tencent.py) through the official SDK against a local provider
that recomputes the TC3-HMAC-SHA256 signature (tests/flows/sms_fakes.py): the shipped
template's approved id and its ordered parameters go to the E.164 number with the idempotency
key as SessionContext; LimitExceeded is retried, a refused template is a dead letter at once,
a wrong key is refused by the provider and retried."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine

from careloop.engine.registry import loaded_registry

from .sms_fakes import (  # the fixtures, imported for pytest
    LINK,
    PHONE,
    FakeTencent,
    dispatch,
    enqueue,
    row,
    tencent,
)

__all__ = ["tencent"]


def test_sends_the_shipped_template_to_the_e164_number(
        engine: Engine, tencent: FakeTencent, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    message_id = enqueue(engine, "rem-1", template="form_reminder")
    assert dispatch(engine) == {"sent": 1}
    (sent,) = tencent.sent
    assert sent == {"phone": f"+86{PHONE}", "sign": "岭南医院", "template": "2081003",
                    "params": ["张三", LINK], "session": "rem-1", "serial": "2640:4000"}
    stored = row(engine, message_id)
    assert (stored.status, stored.provider_ref) == ("sent", "2640:4000")
    assert PHONE not in caplog.text and "AbCdEfGh1234567890xyzSMS" not in caplog.text


def test_a_wrong_key_is_refused_by_the_provider_and_retried(
        engine: Engine, tencent: FakeTencent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_TENCENT_SMS_SECRET_KEY", "not-the-secret-key-at-all")
    message_id = enqueue(engine, "fu-1")
    assert dispatch(engine) == {"retry": 1}
    assert tencent.refused == ["AuthFailure.SignatureFailure"] and tencent.sent == []
    assert row(engine, message_id).reason == "sms_credentials_refused"


def test_throttling_is_retried_a_refused_template_is_a_dead_letter(
        engine: Engine, tencent: FakeTencent) -> None:
    message_id = enqueue(engine, "fu-2")
    tencent.code = "LimitExceeded.PhoneNumberThirtySecondLimit"
    assert dispatch(engine) == {"retry": 1}
    assert (row(engine, message_id).status, row(engine, message_id).reason) == (
        "pending", "sms_throttled")
    tencent.code = "FailedOperation.TemplateIncorrectOrUnapproved"
    assert dispatch(engine, minutes=30) == {"dead": 1}
    dead = row(engine, message_id)
    assert (dead.status, dead.reason) == ("dead", "sms_template_refused")
    assert dispatch(engine, minutes=600) == {}
    assert len(tencent.refused) == 2


def test_a_number_that_is_no_number_never_reaches_the_provider(
        engine: Engine, tencent: FakeTencent) -> None:
    from careloop.engine.db import transaction
    from careloop.engine.domain import Patient

    with transaction(engine) as session:
        patient = session.get(Patient, "P1")
        assert patient is not None
        patient.phone = "0755-8888"  # a landline without its country code
    message_id = enqueue(engine, "fu-3")
    assert dispatch(engine) == {"dead": 1}
    assert row(engine, message_id).reason == "sms_number_invalid"
    assert tencent.sent == [] and tencent.refused == []


def test_template_entries_are_checked_by_path() -> None:
    channel = loaded_registry().catalogue("channel_adapter")["tencent_sms"]
    bad = channel.check_template({"template_id": "SMS_1", "params": {"name": "x"}},
                                 ("providers", "tencent_sms"))
    assert sorted(p.path for p in bad) == [("providers", "tencent_sms", "params"),
                                           ("providers", "tencent_sms", "template_id")]
