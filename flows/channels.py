"""Channel adapters: how an outbox message leaves Careloop.

Register an adapter in ``registry.catalogue("channel_adapter")`` and select it per channel with
``CARELOOP_CHANNEL_<CHANNEL>=<adapter>`` (default ``log``). An adapter gets an
:class:`~careloop.flows.outbox.Outbound` and raises :class:`~careloop.flows.outbox.ChannelError`
(with a reason code) when the send may be retried. Built-ins: ``log`` (records, delivers nothing:
messages end ``logged``), ``email`` (SMTP) and ``webhook`` (a generic HTTP gateway for the
hospital's SMS / WeChat / WeCom provider).
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
from email.message import EmailMessage

import httpx

from careloop.flows.outbox import ChannelError, Outbound

log = logging.getLogger("careloop.flows.channels")


class LogChannel:
    """Logs the message id (never its text or address); with ``CARELOOP_OUTBOX_LOG_FILE`` also
    appends one JSON line per message (id, key, channel) — used by tests and demos. Nothing
    reaches the patient, so the outbox records the message as ``logged``, never ``sent``."""

    delivers = False

    def send(self, message: Outbound) -> None:
        log.info("outbox message %s logged on %s, not delivered (log channel)", message.id,
                 message.channel)
        path = os.environ.get("CARELOOP_OUTBOX_LOG_FILE")
        if path:
            line = json.dumps({"id": message.id, "key": message.idempotency_key,
                               "channel": message.channel, "status": "logged",
                               "pid": os.getpid()})
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


class EmailChannel:
    """SMTP: ``CARELOOP_SMTP_HOST`` / ``_PORT`` / ``_FROM`` (and ``_USER`` / ``_PASSWORD``)."""

    delivers = True

    def send(self, message: Outbound) -> None:
        if not message.address:
            raise ChannelError(f"message {message.id}: patient has no e-mail address",
                               "no_address")
        mail = EmailMessage()
        mail["From"] = os.environ.get("CARELOOP_SMTP_FROM", "careloop@localhost")
        mail["To"] = message.address
        mail["Subject"] = message.subject or "Careloop"
        mail["Message-ID"] = f"<{message.idempotency_key.replace(':', '.')}@careloop>"
        mail.set_content(message.body)
        host = os.environ.get("CARELOOP_SMTP_HOST", "127.0.0.1")
        port = int(os.environ.get("CARELOOP_SMTP_PORT", "25"))
        try:
            with smtplib.SMTP(host, port, timeout=10) as smtp:
                user = os.environ.get("CARELOOP_SMTP_USER")
                if user:
                    smtp.login(user, os.environ.get("CARELOOP_SMTP_PASSWORD", ""))
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(f"message {message.id}: SMTP failed: {type(exc).__name__}",
                               "smtp_failed") from exc


class WebhookChannel:
    """POSTs ``{id, idempotency_key, channel, to, subject, body, urgent}`` as JSON to
    ``CARELOOP_GATEWAY_URL``; any non-2xx answer is retried."""

    delivers = True

    def send(self, message: Outbound) -> None:
        url = os.environ.get("CARELOOP_GATEWAY_URL")
        if not url:
            raise ChannelError("CARELOOP_GATEWAY_URL is not set", "not_configured")
        payload = {"id": message.id, "idempotency_key": message.idempotency_key,
                   "channel": message.channel, "to": message.address,
                   "subject": message.subject, "body": message.body, "urgent": message.urgent}
        try:
            response = httpx.post(url, json=payload, timeout=10,
                                  headers={"Idempotency-Key": message.idempotency_key})
        except httpx.HTTPError as exc:
            raise ChannelError(f"message {message.id}: gateway unreachable",
                               "gateway_unreachable") from exc
        if response.status_code >= 300:
            raise ChannelError(f"message {message.id}: gateway answered {response.status_code}",
                               "gateway_refused")


ADAPTERS = {"log": LogChannel(), "email": EmailChannel(), "webhook": WebhookChannel()}
