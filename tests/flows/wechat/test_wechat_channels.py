"""The ``wechat_mp`` and ``wecom_app`` channel types against the local emulation of the WeChat
and WeCom APIs (conftest.py): what they send, how each errcode ends, the access token fetched
once, refreshed once on 40001 and shared by two processes through the database."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from wechat_fake import AGENT_ID, FakeWeChat

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient, User
from careloop.flows import outbox
from careloop.flows.models import OutboxMessage
from careloop.flows.wechat.models import ChannelToken, StaffAddress

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
LINK_TOKEN = "AbCdEfGh1234567890xyz"
TEMPLATE_SEND = "/cgi-bin/message/template/send"


def _patient(engine: Engine, openid: str | None = OPENID) -> None:
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="张三", phone="13800000000", locale="zh-CN",
                            attributes={"wechat_openid": openid} if openid else {},
                            consents={}))


def _enqueue(engine: Engine, key: str = "m-1") -> int:
    with frozen_now(T0), transaction(engine) as session:
        return outbox.enqueue(
            session, template_key="followup_form_wechat", channel="wechat", patient_id="P1",
            values={"patient_name": "张三",
                    "form_link": f"https://fu.example.cn/f/{LINK_TOKEN}"},
            idempotency_key=key)


def _row(engine: Engine, message_id: int) -> OutboxMessage:
    with transaction(engine) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        session.expunge(row)
        return row


@pytest.fixture
def ready(engine: Engine, fake_wechat: FakeWeChat, wechat_bundle: Path) -> FakeWeChat:
    import_bundle(wechat_bundle, engine=engine)
    _patient(engine)
    return fake_wechat


def test_a_template_message_carries_the_form_link_to_the_openid(
        engine: Engine, ready: FakeWeChat) -> None:
    message_id = _enqueue(engine)
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"sent": 1}
    ((token, body),) = ready.sends(TEMPLATE_SEND)
    assert token == ready.tokens_issued[0]
    assert body == {
        "touser": OPENID, "template_id": "tmpl-FOLLOWUP-01",
        "url": f"https://fu.example.cn/f/{LINK_TOKEN}",
        "data": {"first": {"value": "张三您好，您的出院随访问卷已准备好"},
                 "keyword1": {"value": "出院随访问卷", "color": "#173177"},
                 "remark": {"value": "请点击填写"}}}
    row = _row(engine, message_id)
    assert (row.status, row.provider_ref) == ("sent", "1001")
    with transaction(engine) as session:  # the token is kept for every process, once
        (cached,) = session.scalars(select(ChannelToken)).all()
        assert (cached.channel_type, cached.app_id, cached.token) == (
            "wechat_mp", "wx0123456789abcdef", ready.tokens_issued[0])


def test_a_permanent_refusal_is_a_dead_letter_and_never_retried(
        engine: Engine, ready: FakeWeChat) -> None:
    ready.errcodes = [43004]  # the patient no longer follows the account
    message_id = _enqueue(engine)
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"dead": 1}
    row = _row(engine, message_id)
    assert (row.status, row.reason, row.attempts) == ("dead", "wechat_not_subscribed", 1)
    assert outbox.dispatch_due(engine, worker="w", now=T0 + timedelta(hours=1)) == {}
    assert len(ready.sends(TEMPLATE_SEND)) == 1


@pytest.mark.parametrize(("errcode", "reason"), [(40003, "wechat_bad_address"),
                                                 (40037, "wechat_bad_template")])
def test_other_permanent_errcodes(engine: Engine, ready: FakeWeChat, errcode: int,
                                  reason: str) -> None:
    ready.errcodes = [errcode]
    message_id = _enqueue(engine)
    outbox.dispatch_due(engine, worker="w", now=T0)
    assert (_row(engine, message_id).status, _row(engine, message_id).reason) == ("dead", reason)


def test_a_busy_provider_is_retried_later(engine: Engine, ready: FakeWeChat) -> None:
    ready.errcodes = [-1, 45009]
    message_id = _enqueue(engine)
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"retry": 1}
    row = _row(engine, message_id)
    assert (row.status, row.reason) == ("pending", "wechat_busy")
    assert outbox.dispatch_due(engine, worker="w", now=T0 + timedelta(hours=1)) == {"retry": 1}
    assert outbox.dispatch_due(engine, worker="w", now=T0 + timedelta(hours=2)) == {"sent": 1}
    assert len(ready.sends(TEMPLATE_SEND)) == 3


def test_an_invalid_token_is_refreshed_once_and_the_send_retried(
        engine: Engine, ready: FakeWeChat) -> None:
    first = _enqueue(engine, "m-1")
    outbox.dispatch_due(engine, worker="w", now=T0)
    ready.revoke_tokens()  # another system fetched a token: ours answers 40001 now
    second = _enqueue(engine, "m-2")
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"sent": 1}
    assert len(ready.tokens_issued) == 2
    tokens = [token for token, _ in ready.sends(TEMPLATE_SEND)]
    assert tokens == [ready.tokens_issued[0], ready.tokens_issued[0], ready.tokens_issued[1]]
    assert _row(engine, first).status == _row(engine, second).status == "sent"


def test_a_token_refused_twice_is_not_refreshed_in_a_loop(
        engine: Engine, ready: FakeWeChat) -> None:
    _enqueue(engine)
    outbox.dispatch_due(engine, worker="w", now=T0 + timedelta(seconds=1))  # token 1 cached
    ready.refuse_tokens = True  # the cached token and the fresh one both answer 40001
    message_id = _enqueue(engine, "m-2")
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"retry": 1}
    assert (_row(engine, message_id).reason) == "wechat_token"
    assert len(ready.tokens_issued) == 2  # one refresh, no more
    assert len(ready.sends(TEMPLATE_SEND)) == 3


def test_a_wrong_secret_waits_for_it_to_be_fixed_and_is_named(
        engine: Engine, ready: FakeWeChat, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_WECHAT_APP_SECRET", "wrong-secret-0123456789")
    message_id = _enqueue(engine)
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"retry": 1}
    row = _row(engine, message_id)
    assert (row.status, row.reason) == ("pending", "wechat_config")
    assert "errcode 40125" in (row.error or "")
    assert ready.sends(TEMPLATE_SEND) == []


def test_a_patient_without_a_bound_openid_is_not_sent_the_phone_number(
        engine: Engine, fake_wechat: FakeWeChat, wechat_bundle: Path) -> None:
    import_bundle(wechat_bundle, engine=engine)
    _patient(engine, openid=None)  # the outbox would offer the phone number
    message_id = _enqueue(engine)
    outbox.dispatch_due(engine, worker="w", now=T0)
    assert (_row(engine, message_id).status, _row(engine, message_id).reason) == (
        "dead", "no_address")
    assert fake_wechat.calls == []


def test_the_access_token_and_secret_never_reach_a_log_line(
        engine: Engine, ready: FakeWeChat, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _enqueue(engine)
    outbox.dispatch_due(engine, worker="w", now=T0)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert ready.tokens_issued and ready.tokens_issued[0] not in logged
    assert "0123456789abcdef0123456789abcdef" not in logged
    assert "access_token=[hidden]" in logged  # httpx's request line, with the token hidden


def test_a_subscribe_message_goes_to_bizsend(engine: Engine, ready: FakeWeChat,
                                             wechat_bundle: Path) -> None:
    path = wechat_bundle / "templates" / "followup_form_wechat.yaml"
    path.write_text(path.read_text("utf-8").replace(
        '    url: "{{ form_link }}"', '    kind: subscribe\n    page: "pages/followup/index"'),
        "utf-8")
    import_bundle(wechat_bundle, engine=engine)
    _enqueue(engine)
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"sent": 1}
    ((_, body),) = ready.sends("/cgi-bin/message/subscribe/bizsend")
    assert body["page"] == "pages/followup/index" and body["touser"] == OPENID


# --- WeCom: staff --------------------------------------------------------------------------


def _staff(engine: Engine, userid: str) -> int:
    with transaction(engine) as session:
        user = User(username="zhang", display_name="张护士", locale="zh-CN")
        session.add(user)
        session.flush()
        session.add(StaffAddress(user_id=user.id, channel="wecom", address=userid))
        return user.id


def _staff_message(engine: Engine, user_id: int) -> int:
    with frozen_now(T0), transaction(engine) as session:
        return outbox.enqueue(session, template_key="staff_task_wecom", channel="wecom",
                              user_id=user_id, values={
                                  "task_title": "随访张三：血压偏高",
                                  "task_link": "https://fu.example.cn/tasks/7"},
                              idempotency_key="s-1")


def test_a_staff_notification_goes_to_the_wecom_userid(engine: Engine, ready: FakeWeChat) -> None:
    message_id = _staff_message(engine, _staff(engine, "zhang.nurse"))
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"sent": 1}
    ((token, body),) = ready.sends("/cgi-bin/message/send")
    assert token.startswith("WECOM-")
    assert body["touser"] == "zhang.nurse" and body["agentid"] == AGENT_ID
    assert body["msgtype"] == "textcard"
    assert body["textcard"] == {"title": "新的待办", "description": "随访张三：血压偏高",
                                "url": "https://fu.example.cn/tasks/7", "btntxt": "详情"}
    assert _row(engine, message_id).provider_ref == "wecom-1001"


def test_an_unknown_wecom_user_is_a_dead_letter(engine: Engine, ready: FakeWeChat) -> None:
    message_id = _staff_message(engine, _staff(engine, "left.hospital"))
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"dead": 1}
    assert _row(engine, message_id).reason == "wechat_bad_address"


# --- two processes ----------------------------------------------------------------------------

CHILD = """
import sys
from careloop.engine.db import make_engine, use_engine
from careloop.flows.channel import Outbound
from careloop.flows.wechat.channels import WECHAT_MP
url, schema, n = sys.argv[1:4]
kwargs = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema else {}
with use_engine(make_engine(url, **kwargs)):
    result = WECHAT_MP.send(Outbound(int(n), f"k{n}", "wechat", "P1", sys.argv[4], None, "text",
                                     False, {"template_id": "t", "data": {"first": "x"}}), f"k{n}")
print(result.status)
"""


def _where(engine: Engine) -> tuple[str, str]:
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name != "postgresql":
        return url, ""
    with engine.connect() as conn:
        return url, str(conn.execute(text("SHOW search_path")).scalar())


def test_two_processes_share_one_token(engine: Engine, ready: FakeWeChat) -> None:
    ready.token_delay = 0.5  # the first fetch is slow: the other process must wait for it
    url, schema = _where(engine)
    children = [subprocess.Popen([sys.executable, "-c", CHILD, url, schema, str(n), OPENID],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for n in (1, 2)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [c.returncode for c in children] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == ["delivered", "delivered"]
    assert len(ready.tokens_issued) == 1  # fetched once, by one of them
    assert {token for token, _ in ready.sends(TEMPLATE_SEND)} == {ready.tokens_issued[0]}


def test_it_links_a_staff_members_wecom_account_from_the_cli(
        engine: Engine, ready: FakeWeChat) -> None:
    from click.testing import CliRunner

    from careloop.engine.audit import AuditRow
    from careloop.flows.wechat.cli import wecom

    with transaction(engine) as session:
        user = User(username="li", display_name="李护士", locale="zh-CN")
        session.add(user)
        session.flush()
        user_id = user.id
    refused = CliRunner().invoke(wecom, ["link", "li", "not a userid!"])
    assert refused.exit_code == 2 and "USERID" in refused.output
    assert CliRunner().invoke(wecom, ["link", "nobody", "x"]).exit_code == 2
    assert CliRunner().invoke(wecom, ["link", "li", "zhang.nurse"]).exit_code == 0
    assert CliRunner().invoke(wecom, ["list"]).output == "li\tzhang.nurse\n"
    message_id = _staff_message(engine, user_id)
    assert outbox.dispatch_due(engine, worker="w", now=T0) == {"sent": 1}
    ((_, body),) = ready.sends("/cgi-bin/message/send")
    assert body["touser"] == "zhang.nurse"
    assert _row(engine, message_id).status == "sent"
    with transaction(engine) as session:
        (row,) = session.scalars(select(AuditRow).where(
            AuditRow.action == "user.wecom_linked")).all()
        assert row.details["zh-CN"] == "李护士的企业微信账号已设置"
    assert CliRunner().invoke(wecom, ["unlink", "li"]).exit_code == 0
    assert CliRunner().invoke(wecom, ["list"]).output == ""
