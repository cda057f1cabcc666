"""A local server emulating the WeChat official-account and WeCom APIs as their
documentation describes them (imported by conftest.py and the tests): tokens only for the
right app id and secret (corp id and secret), sends only with a token it issued and a
well-formed body, errcodes on demand; and signed event pushes."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

APPS = Path(__file__).resolve().parents[3] / "app_definitions"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "0123456789abcdef0123456789abcdef"
ACCOUNT_TOKEN = "careloopPushToken"
CORP_ID = "ww0123456789abcd"
CORP_SECRET = "corp-secret-0123456789abcdef"
AGENT_ID = 1000002


@dataclass
class FakeWeChat:
    """State of the emulated providers (read and steered by the tests)."""

    port: int = 0
    tokens_issued: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # path,token,body
    errcodes: list[int] = field(default_factory=list)  # answered, in order, to the next sends
    wecom_users: set[str] = field(default_factory=lambda: {"zhang.nurse"})
    token_delay: float = 0.0
    refuse_tokens: bool = False  # every token answers 40001, even a fresh one
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 1000

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sends(self, path: str) -> list[tuple[str, dict[str, Any]]]:
        return [(token, body) for p, token, body in self.calls if p == path]

    def revoke_tokens(self) -> None:
        """Every token issued so far becomes invalid (another system fetched a new one)."""
        with self.lock:
            self.valid.clear()


def _issue(fake: FakeWeChat, prefix: str) -> dict[str, Any]:
    if fake.token_delay:
        time.sleep(fake.token_delay)  # makes two processes' requests overlap
    with fake.lock:
        token = f"{prefix}-{len(fake.tokens_issued) + 1}-{secrets.token_hex(8)}"
        fake.tokens_issued.append(token)
        fake.valid.add(token)
    return {"access_token": token, "expires_in": 7200}


def _data_ok(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and isinstance(v.get("value"), str) for v in data.values())


def _answer(fake: FakeWeChat, path: str, query: dict[str, str],
            body: dict[str, Any]) -> dict[str, Any]:
    token = query.get("access_token", "")
    with fake.lock:
        fake.calls.append((path, token, body))
        if token not in fake.valid or fake.refuse_tokens:
            return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
        if fake.errcodes:
            return {"errcode": fake.errcodes.pop(0), "errmsg": "on demand"}
        fake.next_id += 1
        msgid = fake.next_id
    if path == "/cgi-bin/message/template/send":
        if not (isinstance(body.get("touser"), str) and isinstance(body.get("template_id"), str)
                and _data_ok(body.get("data"))
                and str(body.get("url", "http://")).startswith(("http://", "https://"))):
            return {"errcode": 47001, "errmsg": "data format error"}
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}
    if path == "/cgi-bin/message/subscribe/bizsend":
        if not (isinstance(body.get("touser"), str) and isinstance(body.get("template_id"), str)
                and _data_ok(body.get("data")) and "url" not in body):
            return {"errcode": 47001, "errmsg": "data format error"}
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}
    if path == "/cgi-bin/qrcode/create":
        scene = ((body.get("action_info") or {}).get("scene") or {}).get("scene_str")
        if body.get("action_name") != "QR_STR_SCENE" or not isinstance(scene, str) \
                or not 1 <= len(scene) <= 64 or not 0 < body.get("expire_seconds", 0) <= 2592000:
            return {"errcode": 40053, "errmsg": "invalid action info"}
        return {"ticket": f"ticket-{msgid}", "expire_seconds": body["expire_seconds"],
                "url": f"http://weixin.qq.com/q/scene{msgid}"}
    if path == "/cgi-bin/message/send":  # WeCom
        if body.get("agentid") != AGENT_ID:
            return {"errcode": 40056, "errmsg": "invalid agentid"}
        kind = body.get("msgtype")
        if kind not in ("text", "textcard") or not isinstance(body.get(kind), dict):
            return {"errcode": 40008, "errmsg": "invalid message type"}
        if body.get("touser") not in fake.wecom_users:
            return {"errcode": 81013, "errmsg": "user & party & tag all invalid",
                    "invaliduser": body.get("touser")}
        return {"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": f"wecom-{msgid}"}
    return {"errcode": 40066, "errmsg": "invalid url"}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeWeChat

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/cgi-bin/token":
            if q.get("grant_type") != "client_credential" or q.get("appid") != APP_ID:
                return self._reply({"errcode": 40013, "errmsg": "invalid appid"})
            if q.get("secret") != APP_SECRET:
                return self._reply({"errcode": 40125, "errmsg": "invalid appsecret"})
            return self._reply(_issue(self.fake, "MP"))
        if url.path == "/cgi-bin/gettoken":
            if q.get("corpid") != CORP_ID or q.get("corpsecret") != CORP_SECRET:
                return self._reply({"errcode": 40001, "errmsg": "invalid secret"})
            return self._reply({"errcode": 0, "errmsg": "ok", **_issue(self.fake, "WECOM")})
        self._reply({"errcode": 40066, "errmsg": "invalid url"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._reply({"errcode": 47001, "errmsg": "data format error"})
        self._reply(_answer(self.fake, url.path, q, body))


def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWeChat]:
    fake = FakeWeChat()
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name, value in {
            "CARELOOP_WECHAT_APP_ID": APP_ID, "CARELOOP_WECHAT_APP_SECRET": APP_SECRET,
            "CARELOOP_WECHAT_TOKEN": ACCOUNT_TOKEN, "CARELOOP_WECHAT_API_BASE": fake.base,
            "CARELOOP_WECOM_CORP_ID": CORP_ID, "CARELOOP_WECOM_CORP_SECRET": CORP_SECRET,
            "CARELOOP_WECOM_AGENT_ID": str(AGENT_ID), "CARELOOP_WECOM_API_BASE": fake.base,
            "CARELOOP_CHANNEL_WECHAT": "wechat_mp", "CARELOOP_CHANNEL_WECOM": "wecom_app"}.items():
        monkeypatch.setenv(name, value)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


WECHAT_TEMPLATE = """kind: template
key: followup_form_wechat
title: {zh-CN: 随访问卷（公众号）, en: Follow-up form (WeChat)}
channels: [wechat, sms]
variables: [patient_name, form_link]
body:
  zh-CN: "{{ patient_name }}您好，请填写随访问卷：{{ form_link }}"
providers:
  wechat_mp:
    template_id: "tmpl-FOLLOWUP-01"
    url: "{{ form_link }}"
    data:
      first: "{{ patient_name }}您好，您的出院随访问卷已准备好"
      keyword1: {value: "出院随访问卷", color: "#173177"}
      remark: "请点击填写"
"""
STAFF_TEMPLATE = """kind: template
key: staff_task_wecom
title: {zh-CN: 待办提醒（企业微信）, en: To-do reminder (WeCom)}
channels: [wecom]
variables: [task_title, task_link]
body:
  zh-CN: "新的待办：{{ task_title }}"
providers:
  wecom_app:
    msgtype: textcard
    title: "新的待办"
    description: "{{ task_title }}"
    url: "{{ task_link }}"
"""


def make_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "common"
    shutil.copytree(APPS / "common", bundle)
    (bundle / "templates" / "followup_form_wechat.yaml").write_text(WECHAT_TEMPLATE, "utf-8")
    (bundle / "templates" / "staff_task_wecom.yaml").write_text(STAFF_TEMPLATE, "utf-8")
    return bundle


def sign(token: str, timestamp: str, nonce: str) -> str:
    """As WeChat signs its pushes: sha1 of the sorted token, timestamp and nonce."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()


def signed_query(token: str = ACCOUNT_TOKEN) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), secrets.token_hex(5)
    return {"signature": sign(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}


def event_xml(openid: str, event: str, **fields: str) -> str:
    extra = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    return (f"<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>1764554400</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>{extra}</xml>")
