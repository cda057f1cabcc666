"""Built-in channel types (the :class:`~careloop.flows.channel.Channel` contract): how an outbox
message leaves Careloop.

Each registers in ``registry.catalogue("channel_adapter")`` like a plugin's; a message channel
(``sms``, ``wechat``, ``email`` …) is sent through the channel type named by
``CARELOOP_CHANNEL_<CHANNEL>`` (default ``log``). Built-ins:

* ``log`` records, delivers nothing: messages end ``logged`` (not delivered), never ``sent``;
* ``smtp`` (alias ``email``) sends mail. Plain SMTP can neither be asked about a message nor
  given an idempotency key, so a message whose send was started but whose outcome was never
  recorded (a crash, a reply that never came) is **not** sent again blind: it goes to
  ``unknown`` for a person to resolve. Its ``Message-ID`` is derived from the message, so a
  receiving server (or a person searching the mailbox) can still tell a repeat;
* ``webhook`` POSTs JSON to a generic HTTP gateway (``CARELOOP_GATEWAY_URL``) with an
  ``Idempotency-Key`` header: the gateway is expected to drop a second message with one key, so a
  message whose outcome is unknown is sent again with the same key.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from typing import Any, ClassVar

import httpx

from careloop.flows.channel import (
    Channel,
    ChannelError,
    Outbound,
    RetryPolicy,
    SendResult,
    Timeouts,
)

log = logging.getLogger("careloop.flows.channels")


class LogChannel(Channel):
    """Logs the message id (never its text or address); with ``CARELOOP_OUTBOX_LOG_FILE`` also
    appends one JSON line per message (id, key, channel) — used by tests and demos. Nothing
    reaches the patient, so the outbox records the message as ``logged``, never ``sent``."""

    name = "log"
    title: ClassVar[dict[str, str]] = {"zh-CN": "日志（不发送）", "en": "Log (not delivered)"}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"file": {"type": "string", "x-env": "CARELOOP_OUTBOX_LOG_FILE"}}}
    delivers = False
    idempotent = True  # logging twice reaches nobody
    local = True  # a log line (and a line appended to a local file): nothing to wait for

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        log.info("outbox message %s logged on %s, not delivered (log channel)", message.id,
                 message.channel)
        path = self.options().get("file")
        if path:
            line = json.dumps({"id": message.id, "key": idempotency_key,
                               "channel": message.channel, "status": "logged",
                               "pid": os.getpid()})
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        return SendResult("logged")


def message_id_header(idempotency_key: str) -> str:
    """The ``Message-ID`` of the mail for one outbox message: the same on every attempt."""
    safe = "".join(c if c.isalnum() or c in "-_." else "." for c in idempotency_key)
    return f"<{safe}@careloop>"


class SmtpChannel(Channel):
    """SMTP: ``CARELOOP_SMTP_HOST`` / ``_PORT`` / ``_FROM`` (and ``_USER`` / ``_PASSWORD``)."""

    name = "smtp"
    title: ClassVar[dict[str, str]] = {"zh-CN": "电子邮件（SMTP）", "en": "E-mail (SMTP)"}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "host": {"type": "string", "minLength": 1, "default": "127.0.0.1",
                     "x-env": "CARELOOP_SMTP_HOST"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 25,
                     "x-env": "CARELOOP_SMTP_PORT"},
            "from": {"type": "string", "default": "careloop@localhost",
                     "x-env": "CARELOOP_SMTP_FROM"},
            "user": {"type": "string", "x-env": "CARELOOP_SMTP_USER"},
            "password": {"type": "string", "x-env": "CARELOOP_SMTP_PASSWORD"}}}
    retry = RetryPolicy(horizon=timedelta(hours=12), cap=timedelta(minutes=30))
    timeouts = Timeouts(connect=5, read=30)

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        if not message.address:
            raise ChannelError(f"message {message.id}: patient has no e-mail address",
                               "no_address", retryable=False)
        options = self.options()
        mail = EmailMessage()
        mail["From"] = options["from"]
        mail["To"] = message.address
        mail["Subject"] = message.subject or "Careloop"
        mail["Message-ID"] = message_id_header(idempotency_key)
        mail.set_content(message.body)
        try:
            # smtplib has one timeout: the longer (the reply to DATA may take a while)
            with smtplib.SMTP(options["host"], options["port"],
                              timeout=max(self.timeouts.connect, self.timeouts.read)) as smtp:
                if options.get("user"):
                    smtp.login(options["user"], options.get("password", ""))
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise ChannelError(f"message {message.id}: recipient refused", "smtp_refused",
                               retryable=False) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(f"message {message.id}: SMTP failed: {type(exc).__name__}",
                               "smtp_failed") from exc
        return SendResult("delivered", message_id_header(idempotency_key))


class WebhookChannel(Channel):
    """POSTs ``{id, idempotency_key, channel, to, subject, body, urgent}`` as JSON to
    ``CARELOOP_GATEWAY_URL`` with an ``Idempotency-Key`` header; a 5xx answer or no answer is
    retried (with the same key), a 4xx answer makes a dead letter."""

    name = "webhook"
    title: ClassVar[dict[str, str]] = {"zh-CN": "短信/微信网关（HTTP）",
                                       "en": "SMS / WeChat gateway (HTTP)"}
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "properties": {"url": {"type": "string", "pattern": "^https?://",
                               "x-env": "CARELOOP_GATEWAY_URL"}}}
    idempotent = True
    retry = RetryPolicy(horizon=timedelta(hours=6))
    timeouts = Timeouts(connect=5, read=15)

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        url = self.options()["url"]
        payload = {"id": message.id, "idempotency_key": idempotency_key,
                   "channel": message.channel, "to": message.address,
                   "subject": message.subject, "body": message.body, "urgent": message.urgent}
        timeout = httpx.Timeout(self.timeouts.read, connect=self.timeouts.connect)
        try:
            response = httpx.post(url, json=payload, timeout=timeout,
                                  headers={"Idempotency-Key": idempotency_key})
        except httpx.HTTPError as exc:
            raise ChannelError(f"message {message.id}: gateway unreachable",
                               "gateway_unreachable") from exc
        if response.status_code >= 300:
            raise ChannelError(f"message {message.id}: gateway answered {response.status_code}",
                               "gateway_refused", retryable=response.status_code >= 500
                               or response.status_code in (408, 429))
        return SendResult("delivered")


SMTP = SmtpChannel()
BUILTIN_CHANNELS: dict[str, Channel] = {"log": LogChannel(), "smtp": SMTP, "email": SMTP,
                                        "webhook": WebhookChannel()}
