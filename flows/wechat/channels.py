"""The channel types ``wechat_mp`` (a WeChat official account's template and subscribe messages
to patients) and ``wecom_app`` (a WeCom application's messages to staff).

Select them per message channel: ``CARELOOP_CHANNEL_WECHAT=wechat_mp`` (the patient's openid,
``patient.attributes["wechat_openid"]``, bound by the QR code on the discharge papers) and
``CARELOOP_CHANNEL_WECOM=wecom_app`` (a staff member's WeCom userid, kept in ``staff_addresses``).

A message template names what the official account sends under ``providers.wechat_mp``::

    providers:
      wechat_mp:
        template_id: "Xk3…"              # the approved template (公众号后台 → 模板消息)
        url: "{{ form_link }}"           # opened when the patient taps the message
        data: {first: "{{ patient_name }}您好", keyword1: "出院随访问卷", remark: "请填写"}

(``kind: subscribe`` sends a subscribe message, ``message/subscribe/bizsend``, with ``page``
instead of ``url``.) ``providers.wecom_app`` is optional: without it the message text goes as a
text message; with ``msgtype: textcard`` a card with ``title``, ``description`` and ``url``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from careloop.engine.registry import Registry
from careloop.flows.channel import (
    Channel,
    ChannelError,
    Outbound,
    RetryPolicy,
    SendResult,
    Timeouts,
)
from careloop.flows.wechat.api import Api

OPENID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
WECOM_USERID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_DATA_VALUE: dict[str, Any] = {"oneOf": [
    {"type": "string", "maxLength": 1000},
    {"type": "object", "required": ["value"], "additionalProperties": False,
     "properties": {"value": {"type": "string", "maxLength": 1000},
                    "color": {"type": "string", "pattern": "^#[0-9A-Fa-f]{6}$"}}}]}


def _data(entry: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{key: text}`` or ``{key: {value, color}}`` as the API wants it: ``{key: {value}}``."""
    out: dict[str, dict[str, str]] = {}
    for key, value in (entry.get("data") or {}).items():
        if isinstance(value, Mapping):
            out[str(key)] = {k: str(v) for k, v in value.items() if k in ("value", "color")}
        else:
            out[str(key)] = {"value": str(value)}
    return out


class WeChatOfficialAccount(Channel):
    name = "wechat_mp"
    title: ClassVar[dict[str, str]] = {"zh-CN": "微信公众号（模板消息）",
                                       "en": "WeChat official account (template messages)"}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "required": ["app_id", "app_secret", "token"],
        "properties": {
            "app_id": {"type": "string", "pattern": "^wx[0-9a-f]{16}$",
                       "x-env": "CARELOOP_WECHAT_APP_ID"},
            "app_secret": {"type": "string", "minLength": 16,
                           "x-env": "CARELOOP_WECHAT_APP_SECRET"},
            "token": {"type": "string", "minLength": 3, "maxLength": 32,
                      "x-env": "CARELOOP_WECHAT_TOKEN"},
            "api_base": {"type": "string", "pattern": "^https?://",
                         "default": "https://api.weixin.qq.com",
                         "x-env": "CARELOOP_WECHAT_API_BASE"}}}
    receipts = True  # TEMPLATESENDJOBFINISH / subscribe_msg_sent_event pushes
    retry = RetryPolicy(horizon=timedelta(hours=6), base=timedelta(minutes=1),
                        cap=timedelta(minutes=30))
    timeouts = Timeouts(connect=5, read=10)
    template_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["template_id", "data"], "additionalProperties": False,
        "properties": {
            "kind": {"enum": ["template", "subscribe"]},
            "template_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "url": {"type": "string", "maxLength": 1000},
            "page": {"type": "string", "maxLength": 256},
            "data": {"type": "object", "minProperties": 1, "maxProperties": 20,
                     "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_.]{0,31}$"},
                     "additionalProperties": _DATA_VALUE}}}

    def api(self) -> Api:
        options = self.options()
        return Api(self.name, str(options["app_id"]), str(options["api_base"]), "/cgi-bin/token",
                   {"grant_type": "client_credential", "appid": str(options["app_id"]),
                    "secret": str(options["app_secret"])}, self.timeouts)

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        if not message.address or not OPENID.match(message.address):
            raise ChannelError(f"message {message.id}: the patient has not bound WeChat",
                               "no_address", retryable=False)
        entry = message.provider
        if not entry:
            raise ChannelError(f"message {message.id}: the template has no wechat_mp entry",
                               "wechat_no_template", retryable=False)
        body: dict[str, Any] = {"touser": message.address,
                                "template_id": str(entry["template_id"]), "data": _data(entry)}
        if entry.get("kind") == "subscribe":
            path = "/cgi-bin/message/subscribe/bizsend"
            if entry.get("page"):
                body["page"] = str(entry["page"])
        else:
            path = "/cgi-bin/message/template/send"
            url = str(entry.get("url") or "")
            if url.startswith(("http://", "https://")):
                body["url"] = url
        result = self.api().post(path, body, f"message {message.id}")
        msgid = result.get("msgid")
        return SendResult("delivered", str(msgid) if msgid is not None else None)

    def create_qr(self, scene: str, expire_seconds: int) -> str:
        """The URL a QR code carries for a temporary ``QR_STR_SCENE`` with ``scene``
        (``qrcode/create``): scanning it opens the account and pushes ``subscribe`` / ``SCAN``
        with the scene."""
        result = self.api().post("/cgi-bin/qrcode/create", {
            "expire_seconds": expire_seconds, "action_name": "QR_STR_SCENE",
            "action_info": {"scene": {"scene_str": scene}}}, "binding QR code")
        url = result.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ChannelError("binding QR code: the provider gave no URL", "gateway_refused")
        return url


class WeComApplication(Channel):
    name = "wecom_app"
    title: ClassVar[dict[str, str]] = {"zh-CN": "企业微信应用消息（员工）",
                                       "en": "WeCom application messages (staff)"}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "required": ["corp_id", "corp_secret", "agent_id"],
        "properties": {
            "corp_id": {"type": "string", "pattern": "^ww[0-9a-zA-Z]{8,32}$",
                        "x-env": "CARELOOP_WECOM_CORP_ID"},
            "corp_secret": {"type": "string", "minLength": 16,
                            "x-env": "CARELOOP_WECOM_CORP_SECRET"},
            "agent_id": {"type": "integer", "minimum": 1, "x-env": "CARELOOP_WECOM_AGENT_ID"},
            "api_base": {"type": "string", "pattern": "^https?://",
                         "default": "https://qyapi.weixin.qq.com",
                         "x-env": "CARELOOP_WECOM_API_BASE"}}}
    retry = RetryPolicy(horizon=timedelta(hours=2), base=timedelta(seconds=30),
                        cap=timedelta(minutes=10))
    timeouts = Timeouts(connect=5, read=10)
    template_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "msgtype": {"enum": ["text", "textcard"]},
            "title": {"type": "string", "maxLength": 128},
            "description": {"type": "string", "maxLength": 512},
            "url": {"type": "string", "maxLength": 2048},
            "btntxt": {"type": "string", "maxLength": 4}}}

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        if not message.address or not WECOM_USERID.match(message.address):
            raise ChannelError(f"message {message.id}: the staff member has no WeCom user id",
                               "no_address", retryable=False)
        options = self.options()
        api = Api(self.name, str(options["corp_id"]), str(options["api_base"]),
                  "/cgi-bin/gettoken", {"corpid": str(options["corp_id"]),
                                        "corpsecret": str(options["corp_secret"])},
                  self.timeouts)
        entry = message.provider or {}
        body: dict[str, Any] = {"touser": message.address, "agentid": int(options["agent_id"]),
                                "enable_duplicate_check": 1, "duplicate_check_interval": 1800}
        url = str(entry.get("url") or "")
        if entry.get("msgtype") == "textcard" and url.startswith(("http://", "https://")):
            body["msgtype"] = "textcard"
            body["textcard"] = {"title": str(entry.get("title") or message.subject or ""),
                                "description": str(entry.get("description") or message.body),
                                "url": url, "btntxt": str(entry.get("btntxt") or "详情")}
        else:
            text = f"{message.subject}\n{message.body}" if message.subject else message.body
            body["msgtype"], body["text"] = "text", {"content": text}

        def accept(result: dict[str, Any]) -> None:
            if str(result.get("invaliduser") or ""):
                raise ChannelError(f"message {message.id}: WeCom does not know the user id",
                                   "wechat_bad_address", retryable=False)

        result = api.post("/cgi-bin/message/send", body, f"message {message.id}", accept)
        msgid = result.get("msgid")
        return SendResult("delivered", str(msgid) if msgid is not None else None)


WECHAT_MP = WeChatOfficialAccount()
WECOM_APP = WeComApplication()


def register(registry: Registry) -> None:
    adapters = registry.catalogue("channel_adapter")
    adapters.register(WECHAT_MP.name, WECHAT_MP)
    adapters.register(WECOM_APP.name, WECOM_APP)
    from careloop.flows.wechat.cli import wecom

    registry.catalogue("cli").register("wecom", wecom)
