"""A channel type for a fictitious regional SMS gateway ("岭南短信平台", Lingnan SMS).

Its HTTP API, as an integrator would read it in the provider's manual:

* ``POST {url}/v1/messages`` with ``Authorization: Bearer {token}`` and
  ``X-Idempotency-Key: {key}``, JSON ``{"to", "text", "sender"}`` → ``201 {"message_id"}``; the
  same key again → ``200`` with the first ``message_id`` (nothing sent twice); ``4xx`` refuses the
  message for good (a wrong number), ``5xx`` / no answer may be retried;
* ``GET {url}/v1/messages?key={key}`` → ``200 {"message_id", "status"}`` or ``404``: what became of
  a key (the dispatcher asks after a crash instead of sending again).

One file, ``register(registry)`` like the built-ins, no edit to any core file: the contract is
:class:`careloop.flows.channel.Channel`. Select it per message channel with
``CARELOOP_CHANNEL_SMS=sms_gateway``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import httpx

from careloop.engine.registry import Registry
from careloop.flows.channel import (
    Channel,
    ChannelError,
    Outbound,
    RetryPolicy,
    SendResult,
    Timeouts,
)


class SmsGateway(Channel):
    name = "sms_gateway"
    title: ClassVar[dict[str, str]] = {"zh-CN": "岭南短信平台", "en": "Lingnan SMS gateway"}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url", "token"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://",
                    "x-env": "CARELOOP_SMS_GATEWAY_URL"},
            "token": {"type": "string", "minLength": 8, "x-env": "CARELOOP_SMS_GATEWAY_TOKEN"},
            "sender": {"type": "string", "maxLength": 11, "default": "CARELOOP",
                       "x-env": "CARELOOP_SMS_GATEWAY_SENDER"}}}
    idempotent = True  # the gateway answers a repeated key with the first message
    can_lookup = True
    retry = RetryPolicy(horizon=timedelta(hours=4), base=timedelta(minutes=1),
                        cap=timedelta(minutes=20))
    timeouts = Timeouts(connect=3, read=10)

    def _client(self) -> tuple[httpx.Client, str]:
        options = self.options()
        client = httpx.Client(timeout=httpx.Timeout(self.timeouts.read,
                                                    connect=self.timeouts.connect),
                              headers={"Authorization": f"Bearer {options['token']}"},
                              trust_env=False)
        return client, str(options["url"]).rstrip("/")

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        if not message.address:
            raise ChannelError(f"message {message.id}: no phone number", "no_address",
                               retryable=False)
        client, url = self._client()
        try:
            with client:
                response = client.post(
                    f"{url}/v1/messages", headers={"X-Idempotency-Key": idempotency_key},
                    json={"to": message.address, "text": message.body,
                          "sender": self.options()["sender"]})
        except httpx.HTTPError as exc:
            raise ChannelError(f"message {message.id}: gateway unreachable",
                               "gateway_unreachable") from exc
        if response.status_code in (200, 201):
            return SendResult("delivered", str(response.json().get("message_id")))
        raise ChannelError(f"message {message.id}: gateway answered {response.status_code}",
                           "gateway_refused", retryable=response.status_code >= 500
                           or response.status_code == 429)

    def lookup(self, idempotency_key: str) -> SendResult:
        client, url = self._client()
        try:
            with client:
                response = client.get(f"{url}/v1/messages", params={"key": idempotency_key})
        except httpx.HTTPError as exc:
            raise ChannelError("gateway unreachable", "gateway_unreachable") from exc
        if response.status_code == 404:
            return SendResult("not_found")
        if response.status_code != 200:
            raise ChannelError(f"gateway answered {response.status_code}", "gateway_refused")
        return SendResult("delivered", str(response.json().get("message_id")))


def register(registry: Registry) -> None:
    registry.catalogue("channel_adapter").register(SmsGateway.name, SmsGateway())
