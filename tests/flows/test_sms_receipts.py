"""Delivery receipts of the SMS channels (``POST /channels/<type>/receipts``, web/routes_channels
.py): a status report with the shared token updates the message it names and is answered in the
provider's format; a forged one (no token, a wrong token) is refused and changes nothing; an
unknown reference is answered OK and ignored; a malformed body is refused naming the place. The
delivery page (/admin/delivery) then says in words what became of each message."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.web import admin
from careloop.web.app import create_app

from .sms_fakes import (  # the fixtures, imported for pytest
    ALIYUN_RECEIPT_TOKEN,
    LINK_TOKEN,
    PHONE,
    T0,
    TENCENT_RECEIPT_TOKEN,
    FakeAliyun,
    FakeTencent,
    aliyun,
    dispatch,
    enqueue,
    row,
    tencent,
)

__all__ = ["aliyun", "tencent"]
PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:  # type: ignore[arg-type]
        yield c


def _aliyun_report(biz_id: str, success: bool = True, **extra: object) -> dict[str, object]:
    return {"phone_number": PHONE, "send_time": "2026-12-01 10:00:01",
            "report_time": "2026-12-01 10:00:09", "success": success,
            "err_code": "DELIVERED" if success else "MN:0001",
            "err_msg": "用户接收成功" if success else "用户停机", "sms_size": "1",
            "biz_id": biz_id, "out_id": "fu-1", **extra}


def test_an_aliyun_status_report_updates_the_message_a_forged_one_is_refused(
        engine: Engine, aliyun: FakeAliyun, client: TestClient,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    message_id = enqueue(engine, "fu-1")
    dispatch(engine)
    biz_id = row(engine, message_id).provider_ref
    assert biz_id
    url = "/channels/aliyun_sms/receipts"
    body = json.dumps([_aliyun_report(biz_id)])
    for forged in (url, f"{url}?token=wrong-token-0123456789"):  # no token, a wrong token
        answer = client.post(forged, content=body,
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 403
        assert row(engine, message_id).receipt_state is None
    answer = client.post(f"{url}?token={ALIYUN_RECEIPT_TOKEN}", content=body,
                         headers={"Content-Type": "application/json"})
    assert (answer.status_code, answer.json()) == (200, {"code": 0, "msg": "接收成功"})
    stored = row(engine, message_id)
    assert stored.receipt_state == "delivered"
    assert stored.receipt_at is not None
    assert stored.receipt_at.replace(tzinfo=None) == (T0 + timedelta(seconds=9)).replace(
        tzinfo=None)  # 10:00:09 Beijing time
    # a report for a message of another installation: answered OK, nothing changes
    other = client.post(f"{url}?token={ALIYUN_RECEIPT_TOKEN}",
                        content=json.dumps([_aliyun_report("777777^0", success=False)]))
    assert other.json() == {"code": 0, "msg": "接收成功"}
    assert row(engine, message_id).receipt_state == "delivered"
    # a malformed batch: refused, the place named
    bad = client.post(f"{url}?token={ALIYUN_RECEIPT_TOKEN}",
                      content=json.dumps([_aliyun_report(biz_id), {"success": True}]))
    assert bad.status_code == 400 and bad.json()["msg"] == "[1].biz_id: missing"
    assert PHONE not in caplog.text


def test_a_tencent_failure_report_and_the_delivery_page_in_words(
        engine: Engine, tencent: FakeTencent, client: TestClient) -> None:
    failed, delivered = enqueue(engine, "fu-1"), enqueue(engine, "fu-2")
    dispatch(engine)
    reports = [{"user_receive_time": "2026-12-01 10:01:00", "nationcode": "86",
                "mobile": PHONE, "report_status": "FAIL", "errmsg": "MK:0001",
                "description": "用户关机", "sid": row(engine, failed).provider_ref},
               {"user_receive_time": "2026-12-01 10:02:00", "nationcode": "86",
                "mobile": PHONE, "report_status": "SUCCESS", "errmsg": "DELIVRD",
                "description": "用户短信送达成功", "sid": row(engine, delivered).provider_ref}]
    answer = client.post(f"/channels/tencent_sms/receipts?token={TENCENT_RECEIPT_TOKEN}",
                         content=json.dumps(reports, ensure_ascii=False).encode())
    assert (answer.status_code, answer.json()) == (200, {"result": 0, "errmsg": "OK"})
    assert (row(engine, failed).receipt_state, row(engine, failed).receipt_detail) == (
        "failed", "用户关机（MK:0001）")
    assert row(engine, delivered).receipt_state == "delivered"
    assert client.post("/channels/tencent_sms/receipts?token=x" + TENCENT_RECEIPT_TOKEN,
                       content=b"[]").status_code == 403
    assert client.post(f"/channels/tencent_sms/receipts?token={TENCENT_RECEIPT_TOKEN}",
                       content=b'[{"sid": "1", "report_status": "MAYBE"}]').json() == {
        "result": 1, "errmsg": "[0].report_status: expected SUCCESS or FAIL"}
    assert client.post("/channels/log/receipts", content=b"[]").status_code == 404

    client.get(f"/f/{LINK_TOKEN}")  # the patient opens the link the messages carried
    with transaction() as session:
        user = admin.create_user(session, username="it", display_name="信息科",
                                 password=PASSWORD)
        admin.grant(session, user, "system_admin", None)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    assert client.post("/login", data={"username": "it", "password": PASSWORD,
                                       "csrf_token": token.group(1), "next": "/"},
                       follow_redirects=False).status_code == 303
    with frozen_now(T0 + timedelta(hours=1)):
        text = client.get("/admin/delivery").text
        english = client.get("/admin/delivery", headers={"Accept-Language": "en"}).text
    recent = text[text.index('id="recent"'):]
    assert "送达失败（用户关机（MK:0001），2026-12-01 10:01）" in recent
    assert "已送达手机（2026-12-01 10:02）" in recent
    assert "已打开链接（" in recent and "随访问卷邀请" in recent  # the template by its title
    assert PHONE not in text and LINK_TOKEN not in text
    assert "Delivered to the phone (2026-12-01 10:02)" in english
