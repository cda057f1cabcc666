"""Alibaba Cloud SMS (flows/sms/aliyun.py) through the official SDK against a local provider
that recomputes the ACS3-HMAC-SHA256 signature (tests/flows/sms_fakes.py): the shipped template's
approved code and parameters (link open) are sent under the approved signature with the
idempotency key as OutId; a permanent refusal is a dead letter at once, throttling is retried,
refused credentials are retried; no template entry, no allow-listed host: said in words."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.i18n import t
from careloop.engine.registry import loaded_registry
from careloop.flows import egress, outbox
from careloop.flows.sms.common import REASONS

from .sms_fakes import (  # the fixtures, imported for pytest
    LINK,
    PHONE,
    T0,
    FakeAliyun,
    aliyun,
    dispatch,
    enqueue,
    row,
)

__all__ = ["aliyun"]


def test_sends_the_shipped_template_signed_with_the_approved_code(
        engine: Engine, aliyun: FakeAliyun, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    message_id = enqueue(engine, "fu-1")
    assert dispatch(engine) == {"sent": 1}
    (sent,) = aliyun.sent
    assert sent == {"phone": PHONE, "sign": "岭南医院", "template": "SMS_480215002",
                    "params": {"name": "张三", "dept": "心内科", "link": LINK},
                    "out_id": "fu-1", "biz_id": "900000^0"}
    stored = row(engine, message_id)
    assert (stored.status, stored.provider_ref) == ("sent", "900000^0")
    assert PHONE not in caplog.text and "张三" not in caplog.text  # no personal data logged


def test_a_wrong_secret_is_refused_by_the_provider_and_retried(
        engine: Engine, aliyun: FakeAliyun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_ALIYUN_SMS_ACCESS_KEY_SECRET", "not-the-secret-at-all")
    message_id = enqueue(engine, "fu-2")
    assert dispatch(engine) == {"retry": 1}
    assert aliyun.refused == ["SignatureDoesNotMatch"] and aliyun.sent == []
    assert (row(engine, message_id).status, row(engine, message_id).reason) == (
        "pending", "sms_credentials_refused")
    monkeypatch.setenv("CARELOOP_ALIYUN_SMS_ACCESS_KEY_SECRET", aliyun.secret)  # mended
    assert dispatch(engine, minutes=30) == {"sent": 1}


def test_throttling_is_retried_a_wrong_number_is_a_dead_letter(
        engine: Engine, aliyun: FakeAliyun) -> None:
    throttled = enqueue(engine, "fu-3")
    aliyun.code = "isv.BUSINESS_LIMIT_CONTROL"
    assert dispatch(engine) == {"retry": 1}
    first = row(engine, throttled)
    assert (first.status, first.reason) == ("pending", "sms_throttled")
    aliyun.code = "isv.MOBILE_NUMBER_ILLEGAL"
    assert dispatch(engine, minutes=30) == {"dead": 1}
    dead = row(engine, throttled)
    assert (dead.status, dead.reason, dead.attempts) == ("dead", "sms_number_invalid", 2)
    assert aliyun.refused == ["isv.BUSINESS_LIMIT_CONTROL", "isv.MOBILE_NUMBER_ILLEGAL"]
    assert dispatch(engine, minutes=600) == {}  # never tried again


def test_a_template_without_an_approved_code_is_a_dead_letter_in_words(
        engine: Engine, aliyun: FakeAliyun) -> None:
    with frozen_now(T0), transaction(engine) as session:
        message_id = outbox.enqueue(
            session, template_key="diet_advice", channel="sms", patient_id="P1",
            values={"patient_name": "张三"}, idempotency_key="diet-1")
    assert dispatch(engine) == {"dead": 1}
    stored = row(engine, message_id)
    assert (stored.status, stored.reason) == ("dead", "no_provider_template")
    assert aliyun.sent == [] and aliyun.refused == []  # nothing reached the provider
    assert "短信模板" in t("flows.outbox.reason.no_provider_template", "zh-CN")


def test_the_endpoint_must_be_on_the_allow_list(engine: Engine, aliyun: FakeAliyun) -> None:
    with transaction(engine) as session:
        egress.disallow(session, "127.0.0.1")
    message_id = enqueue(engine, "fu-4")
    assert dispatch(engine) == {"retry": 1}
    assert row(engine, message_id).reason == "egress_refused"
    assert aliyun.sent == [] and aliyun.refused == []


def test_options_and_template_entries_are_checked_by_path() -> None:
    channel = loaded_registry().catalogue("channel_adapter")["aliyun_sms"]
    problems = channel.check_options({"access_key_id": "x", "access_key_secret": "y" * 10,
                                      "sign_name": "岭南医院", "endpoint": "ftp://x"},
                                     ("channels", "sms"))
    assert sorted(p.path for p in problems) == [("channels", "sms", "access_key_id"),
                                                ("channels", "sms", "endpoint")]
    short = channel.check_options({"access_key_id": "LTAI5tExample", "access_key_secret": "pw",
                                   "sign_name": "岭南医院", "endpoint": "https://x.cn",
                                   "receipt_token": "tok"})
    assert sorted(p.path for p in short) == [("access_key_secret",), ("receipt_token",)]
    assert all("'pw'" not in p.message and "'tok'" not in p.message
               for p in short)  # a secret's value is never quoted
    bad = channel.check_template({"template_code": "free text", "params": {"name": 3}},
                                 ("providers", "aliyun_sms"))
    assert sorted(p.path for p in bad) == [("providers", "aliyun_sms", "params", "name"),
                                           ("providers", "aliyun_sms", "template_code")]


def test_every_sms_reason_is_in_words() -> None:
    for reason in REASONS:
        for locale in ("zh-CN", "en"):
            words = t(f"flows.outbox.reason.{reason}", locale)
            assert words and "flows.outbox" not in words and "_" not in words, (reason, locale)
