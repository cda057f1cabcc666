"""Binding a patient's openid by the QR code, and the official account's pushes: a nurse prints
the binding sheet from patient 360 (the account's QR_STR_SCENE), the patient scans it, WeChat
pushes the signed event, the openid is stored and audited, and the next form link goes by
WeChat to that openid; its send report becomes the message's receipt. Forged pushes change
nothing; the server check echoes only for the account's token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from wechat_fake import ACCOUNT_TOKEN, FakeWeChat, event_xml, signed_query

from careloop.engine.audit import AuditRow
from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.flows import outbox
from careloop.flows.models import OutboxMessage
from careloop.flows.wechat import binding
from careloop.web import admin
from careloop.web.app import create_app

PASSWORD = "Correct-Horse-Battery-9"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
EVENTS = "/channels/wechat_mp/events"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


@pytest.fixture
def ward(engine: Engine) -> None:
    with transaction(engine) as session:
        session.add(Department(id="cardio", name={"zh-CN": "心内科", "en": "Cardiology"}))
        session.add(Department(id="ortho", name={"zh-CN": "骨科", "en": "Orthopedics"}))
        session.add(Patient(id="P1", mrn="M1", name="张三", phone="13800000000",
                            locale="zh-CN", attributes={}, consents={}))
        session.flush()
        session.add(Encounter(id="E1", patient_id="P1", type="inpatient",
                              department_id="cardio", status="discharged",
                              admitted_at=T0 - timedelta(days=5), discharged_at=T0))
        for name, department in (("nurse_li", "cardio"), ("nurse_wu", "ortho")):
            user = admin.create_user(session, username=name, display_name=name,
                                     password=PASSWORD)
            admin.grant(session, user, "nurse", department)


def _login(client: TestClient, username: str) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    response = client.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": csrf.group(1), "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303


def _print_sheet(client: TestClient, fake: FakeWeChat) -> str:
    """The nurse opens patient 360, follows the WeChat action and prints the sheet; returns the
    scene the QR code opens (as the account's API was asked to make it)."""
    page = client.get("/patients/P1")
    assert 'href="/patients/P1/wechat"' in page.text and "尚未绑定微信" in page.text
    form = client.get("/patients/P1/wechat")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert form.status_code == 200 and csrf
    sheet = client.post("/patients/P1/wechat/sheet", data={"csrf_token": csrf.group(1)})
    assert sheet.status_code == 200
    assert 'id="wechat-qr"' in sheet.text and "<svg" in sheet.text
    assert "扫一扫" in sheet.text
    ((_, body),) = fake.sends("/cgi-bin/qrcode/create")
    scene: str = body["action_info"]["scene"]["scene_str"]
    assert scene.startswith("bind:") and body["action_name"] == "QR_STR_SCENE"
    return scene


def _push(client: TestClient, xml: str, token: str = ACCOUNT_TOKEN) -> tuple[int, str]:
    response = client.post(EVENTS, params=signed_query(token), content=xml.encode(),
                           headers={"Content-Type": "text/xml"})
    return response.status_code, response.text


def test_scan_binds_the_openid_and_the_next_form_link_goes_by_wechat(
        engine: Engine, client: TestClient, fake_wechat: FakeWeChat, ward: None,
        wechat_bundle: Path) -> None:
    _login(client, "nurse_li")
    scene = _print_sheet(client, fake_wechat)
    status, reply = _push(client, event_xml(OPENID, "subscribe", EventKey=f"qrscene_{scene}",
                                            Ticket="ticket-1"))
    assert status == 200 and "绑定成功" in reply and f"<![CDATA[{OPENID}]]>" in reply
    with transaction(engine) as session:
        patient = session.get(Patient, "P1")
        assert patient is not None
        assert patient.attributes["wechat_openid"] == OPENID
        assert patient.consents["wechat"] is True
        (audit,) = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.wechat_bound")).all()
        assert audit.patient_id == "P1" and "绑定了微信" in audit.details["zh-CN"]
        assert OPENID not in str(audit.details)
    assert "已绑定微信" in client.get("/patients/P1").text
    # WeChat pushes the same scan again when it did not hear back in time: answered the same,
    # bound and audited once
    status, reply = _push(client, event_xml(OPENID, "subscribe", EventKey=f"qrscene_{scene}"))
    assert "绑定成功" in reply
    with transaction(engine) as session:
        assert len(session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.wechat_bound")).all()) == 1
    # the QR code works once: a second scan (SCAN, already following) binds nothing
    status, reply = _push(client, event_xml("oOther_openid_0000000000000", "SCAN",
                                            EventKey=scene))
    assert "已经用过" in reply
    with transaction(engine) as session:
        patient = session.get(Patient, "P1")
        assert patient is not None and patient.attributes["wechat_openid"] == OPENID

    # the next form link goes by WeChat, to that openid; its send report is the receipt
    import_bundle(wechat_bundle, engine=engine)
    with frozen_now(T0), transaction(engine) as session:
        message_id = outbox.enqueue(
            session, template_key="followup_form_wechat", channel="wechat", patient_id="P1",
            values={"patient_name": "张三", "form_link": "https://fu.example.cn/f/AbCdEf12345678"},
            idempotency_key="form-1")
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"sent": 1}
    ((_, body),) = fake_wechat.sends("/cgi-bin/message/template/send")
    assert body["touser"] == OPENID and body["url"] == "https://fu.example.cn/f/AbCdEf12345678"
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None and row.provider_ref is not None
        msgid = row.provider_ref
    status, reply = _push(client, event_xml(OPENID, "TEMPLATESENDJOBFINISH", MsgID=msgid,
                                            Status="success"))
    assert (status, reply) == (200, "success")
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None and row.receipt_state == "delivered"


def test_a_blocked_template_message_is_recorded_failed(
        engine: Engine, client: TestClient, fake_wechat: FakeWeChat, wechat_bundle: Path) -> None:
    import_bundle(wechat_bundle, engine=engine)
    with transaction(engine) as session:
        session.add(Patient(id="P2", mrn="M2", name="李四", attributes={"wechat_openid": OPENID},
                            consents={}))
    with frozen_now(T0), transaction(engine) as session:
        message_id = outbox.enqueue(
            session, template_key="followup_form_wechat", channel="wechat", patient_id="P2",
            values={"patient_name": "李四", "form_link": "https://fu.example.cn/f/XyZ123456789"},
            idempotency_key="form-2")
    outbox.dispatch_due(engine, worker="w", now=T0)
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        msgid = str(row.provider_ref)
    _push(client, event_xml(OPENID, "TEMPLATESENDJOBFINISH", MsgID=msgid,
                            Status="failed:user block"))
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        assert (row.receipt_state, row.receipt_detail) == ("failed", "failed:user block")


def test_a_forged_push_is_refused_and_binds_nothing(
        engine: Engine, client: TestClient, fake_wechat: FakeWeChat, ward: None) -> None:
    with transaction(engine) as session:
        sheet = binding.new_binding(session, "P1", "nurse_li")
    ((_, body),) = fake_wechat.sends("/cgi-bin/qrcode/create")
    scene = body["action_info"]["scene"]["scene_str"]
    assert sheet.via_account and sheet.qr_content.startswith("http://weixin.qq.com/q/")
    forged = event_xml("oAttacker_000000000000000000", "SCAN", EventKey=scene)
    assert _push(client, forged, token="not-the-account-token")[0] == 403
    unsigned = client.post(EVENTS, content=forged.encode())
    assert unsigned.status_code == 403
    with transaction(engine) as session:
        patient = session.get(Patient, "P1")
        assert patient is not None and "wechat_openid" not in patient.attributes
    # and a push with a document type (entity expansion) is refused before it is read
    status, _ = _push(client, '<!DOCTYPE x [<!ENTITY a "aaaa">]><xml><a>&a;</a></xml>')
    assert status == 400


def test_the_server_check_echoes_only_for_the_accounts_token(
        client: TestClient, fake_wechat: FakeWeChat) -> None:
    good = client.get(EVENTS, params={**signed_query(), "echostr": "8734521"})
    assert (good.status_code, good.text) == (200, "8734521")
    bad = client.get(EVENTS, params={**signed_query("wrong"), "echostr": "8734521"})
    assert bad.status_code == 403 and "8734521" not in bad.text


def test_another_departments_nurse_cannot_print_the_sheet(
        client: TestClient, fake_wechat: FakeWeChat, ward: None) -> None:
    _login(client, "nurse_wu")
    assert client.get("/patients/P1/wechat").status_code == 403
    csrf = client.get("/api/v1/me").json()["csrf_token"]
    assert client.post("/patients/P1/wechat/sheet",
                       data={"csrf_token": csrf}).status_code == 403
    assert fake_wechat.sends("/cgi-bin/qrcode/create") == []


def test_without_an_account_the_qr_opens_a_page_that_explains(
        engine: Engine, client: TestClient, ward: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARELOOP_WECHAT_APP_ID", raising=False)
    monkeypatch.setenv("CARELOOP_BASE_URL", "https://fu.example.cn")
    with transaction(engine) as session:
        sheet = binding.new_binding(session, "P1", "nurse_li")
    assert not sheet.via_account
    path = sheet.qr_content.removeprefix("https://fu.example.cn")
    assert path.startswith("/wechat/bind/")
    page = client.get(path)
    assert page.status_code == 200 and "扫一扫" in page.text and "短信" in page.text
    english = client.get(path, params={"lang": "en"})
    assert "text message" in english.text
    assert client.get("/wechat/bind/no-such-token").status_code == 404


def _qr_payload(html: str) -> str:
    """Decode the QR code the page draws (segno's inline SVG: one path of horizontal runs)
    with zxing-cpp, as a phone's camera would read the printed paper."""
    import numpy
    import zxingcpp

    found = re.search(r'id="wechat-qr"[^>]*>\s*<svg[^>]*>.*?class="qrline"[^>]*d="([^"]+)"', html,
                      re.S)
    assert found is not None, "no QR code on the page"
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?:\s(-?[\d.]+))?", found.group(1)):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            dark |= {(int(x) + i, int(y)) for i in range(int(float(a)))}
            x += float(a)
    size = max(max(c for c, _ in dark), max(r for _, r in dark)) + 3
    image = numpy.full((size * 8, size * 8), 255, dtype=numpy.uint8)
    for col, row in dark:
        image[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] = 0
    (code,) = zxingcpp.read_barcodes(image)
    return str(code.text)


def test_the_discharge_paper_carries_the_binding_qr_and_scanning_it_binds(
        engine: Engine, client: TestClient, fake_wechat: FakeWeChat, ward: None) -> None:
    from careloop.engine.clock import now_utc
    from careloop.flows.documents import create_link
    from careloop.flows.models import DischargeDocument

    # today (the scan below runs at the real clock: the paper's token lasts 30 days from now)
    t0 = now_utc().replace(microsecond=0)
    with frozen_now(t0), transaction(engine) as session:
        session.add(DischargeDocument(encounter_id="E1", patient_id="P1",
                                      summary="出院诊断：高血压。", medications=[]))
        session.flush()
        link = create_link(session, kind="discharge_summary", encounter_id="E1",
                           patient_id="P1", expires_at=t0 + timedelta(days=30))
    assert link is not None
    with frozen_now(t0):
        paper = client.get(link["url"])
        again = client.get(link["url"])
    assert paper.status_code == 200 and "出院诊断" in paper.text and "扫一扫" in paper.text
    url = _qr_payload(paper.text)
    assert re.fullmatch(r"http://weixin\.qq\.com/q/scene\d+", url)  # the account's QR URL
    # the patient's id is nowhere on the paper (the link's random token may contain "P1")
    token = link["url"].rstrip("/").rsplit("/", 1)[1]
    assert "P1" not in url and "P1" not in paper.text.replace(token, "")
    scenes = {body["action_info"]["scene"]["scene_str"]
              for _, body in fake_wechat.sends("/cgi-bin/qrcode/create")}
    assert len(scenes) == 1 and _qr_payload(again.text).startswith("http://weixin.qq.com/q/")
    (scene,) = scenes  # the same signed token each time the paper is shown
    assert scene.startswith("bind:") and "P1" not in scene

    # the patient scans it with WeChat: the account pushes the scene, the openid is bound
    status, reply = _push(client, event_xml(OPENID, "subscribe", EventKey=f"qrscene_{scene}"))
    assert status == 200 and "绑定成功" in reply
    with transaction(engine) as session:
        patient = session.get(Patient, "P1")
        assert patient is not None and patient.attributes["wechat_openid"] == OPENID
        assert session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.wechat_bound")).one().patient_id == "P1"
    with frozen_now(t0):
        bound = client.get(link["url"])
    assert 'id="wechat-qr"' not in bound.text and "出院诊断" in bound.text
