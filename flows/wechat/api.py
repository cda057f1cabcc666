"""The WeChat official-account and WeCom HTTP APIs, as their documentation gives them, and what
each ``errcode`` means for the outbox.

Plain httpx rather than wechatpy: wechatpy's client retries a refused token by recursing without
bound (a token refused twice loops for ever), fetches tokens with no time limit and caches them
per process; Careloop needs one refresh and one retry, bounded time and a token cache shared by
processes (:mod:`.tokens`). The calls are few and documented:

* official account: ``GET /cgi-bin/token`` (``appid``, ``secret``), ``POST
  /cgi-bin/message/template/send``, ``POST /cgi-bin/message/subscribe/bizsend``, ``POST
  /cgi-bin/qrcode/create``;
* WeCom: ``GET /cgi-bin/gettoken`` (``corpid``, ``corpsecret``), ``POST /cgi-bin/message/send``.

The access token travels in the query string as the providers require; no URL, token or body is
ever put in an error message or a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from careloop.flows.channel import ChannelError, Timeouts
from careloop.flows.wechat.tokens import Fetched, access_token

_SECRET_PARAMS = re.compile(r"((?:access_token|secret|corpsecret)=)[^&\s\"']+")


class _HideSecrets(logging.Filter):
    """httpx logs each request's URL at INFO: tokens and secrets in it become ``[hidden]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _SECRET_PARAMS.search(text):
            record.msg, record.args = _SECRET_PARAMS.sub(r"\1[hidden]", text), ()
        return True


if not any(isinstance(f, _HideSecrets) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_HideSecrets())

# errcode -> (reason code, retryable). Token errors are handled before this table.
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
ERRCODES: dict[int, tuple[str, bool]] = {
    -1: ("wechat_busy", True),            # 系统繁忙
    45009: ("wechat_busy", True),         # 接口调用超过限额
    45011: ("wechat_busy", True),         # API 调用太频繁
    45033: ("wechat_busy", True),         # 接口并发调用超过限制 (WeCom)
    43004: ("wechat_not_subscribed", False),  # 需要接收者关注
    43101: ("wechat_not_subscribed", False),  # 用户拒绝接受消息 (subscribe message)
    40003: ("wechat_bad_address", False),     # 不合法的 OpenID
    60111: ("wechat_bad_address", False),     # WeCom: userid 不存在
    81013: ("wechat_bad_address", False),     # WeCom: 接收人全部无效
    40037: ("wechat_bad_template", False),    # 不合法的 template_id
    47003: ("wechat_bad_template", False),    # 模板参数不准确
    41028: ("wechat_bad_template", False),    # form_id 不正确，或者过期
    40013: ("wechat_config", True),           # 不合法的 AppID
    40125: ("wechat_config", True),           # 不合法的 secret
    40164: ("wechat_config", True),           # 调用接口的 IP 不在白名单中
    40056: ("wechat_config", True),           # WeCom: 不合法的 agentid
    60020: ("wechat_config", True),           # WeCom: 不安全的访问 IP
}
REASONS = ("wechat_busy", "wechat_not_subscribed", "wechat_bad_address", "wechat_bad_template",
           "wechat_config", "wechat_token", "wechat_refused", "wechat_no_template")


def refusal(errcode: int, what: str) -> ChannelError:
    """The :class:`ChannelError` for a provider's ``errcode`` (never its text: it may quote the
    address)."""
    reason, retryable = ERRCODES.get(errcode, ("wechat_refused", True))
    return ChannelError(f"{what}: the provider answered errcode {errcode}", reason,
                        retryable=retryable)


class Api:
    """One provider account: ``base`` URL, how to fetch a token, the timeouts."""

    def __init__(self, channel_type: str, app_id: str, base: str, token_path: str,
                 token_params: Mapping[str, str], timeouts: Timeouts) -> None:
        self.channel_type, self.app_id = channel_type, app_id
        self.base = base.rstrip("/")
        self.token_path, self.token_params = token_path, dict(token_params)
        self.timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect)

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, trust_env=False, follow_redirects=False)

    def fetch_token(self) -> Fetched:
        try:
            with self._client() as client:
                response = client.get(f"{self.base}{self.token_path}", params=self.token_params)
        except httpx.HTTPError as exc:
            raise ChannelError("access token: the provider could not be reached",
                               "gateway_unreachable") from exc
        result = _json(response, "access token")
        code = int(result.get("errcode") or 0)
        if code != 0 or not isinstance(result.get("access_token"), str):
            raise refusal(code, "access token")
        return Fetched(str(result["access_token"]), int(result.get("expires_in") or 7200))

    def token(self, refused: str | None = None) -> str:
        return access_token(self.channel_type, self.app_id, self.fetch_token, refused=refused)

    def post(self, path: str, body: Mapping[str, Any], what: str,
             accept: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """POST ``body`` with the access token; a token the provider refuses (40001 invalid,
        42001 expired, 40014) is refreshed once and the call made once more."""
        token = self.token()
        for attempt in (1, 2):
            try:
                with self._client() as client:
                    response = client.post(f"{self.base}{path}",
                                           params={"access_token": token}, json=dict(body))
            except httpx.HTTPError as exc:
                raise ChannelError(f"{what}: the provider could not be reached",
                                   "gateway_unreachable") from exc
            result = _json(response, what)
            code = int(result.get("errcode") or 0)
            if code in TOKEN_ERRORS:
                if attempt == 1:
                    token = self.token(refused=token)
                    continue
                raise ChannelError(f"{what}: the provider refused a fresh access token",
                                   "wechat_token")
            if code != 0:
                raise refusal(code, what)
            if accept is not None:
                accept(result)
            return result
        raise AssertionError("unreachable")


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise ChannelError(f"{what}: the provider answered HTTP {response.status_code}",
                           "gateway_refused", retryable=response.status_code >= 500
                           or response.status_code == 429)
    try:
        result = response.json()
    except ValueError as exc:
        raise ChannelError(f"{what}: the provider's answer was not JSON",
                           "gateway_refused") from exc
    if not isinstance(result, dict):
        raise ChannelError(f"{what}: the provider's answer was not an object", "gateway_refused")
    return result
