"""What the SMS channel types share: phone numbers, provider codes in words, the endpoint check
and the receipt token.

**Provider codes.** Each provider's refusal codes map to a Careloop reason (``REASONS``, put in
words on **管理 → 消息送达**) and to *retryable* or *permanent*. The rule: a refusal about **this
message** that the provider would repeat (a wrong number, a template the provider refuses, a
blacklisted number) is permanent — a dead letter at once; a refusal about **the account or the
moment** (throttling, an empty balance, credentials or signature refused, an outage) is
retried until the channel's horizon, so fixing the account lets the waiting messages go.
An unknown code is retried (nothing was sent; the horizon bounds it).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from careloop.engine.db import transaction
from careloop.engine.errors import Problem
from careloop.flows import egress
from careloop.flows.callbacks import MAX_BODY, Answer, Inbound, refused
from careloop.flows.channel import Channel, ChannelError
from careloop.flows.receipts import record_receipt

log = logging.getLogger("careloop.flows.sms")
CHINA = ZoneInfo("Asia/Shanghai")  # both providers report times in Beijing time
# reason codes of the SMS channels (words: ``flows.outbox.reason.<code>``, web/data/i18n/sms/)
REASONS = ("no_provider_template", "sms_number_invalid", "sms_template_refused",
           "sms_content_blocked", "sms_throttled", "sms_balance", "sms_credentials_refused",
           "sms_provider_error", "egress_refused")
_DIGITS = re.compile(r"^\+?[0-9]{6,16}$")


class SmsChannel(Channel):
    """What both SMS channel types share: option problems never quote a secret's value (the
    schema's messages would: ``'abc' is too short``), and the SDK must be installed."""

    secret_options: ClassVar[tuple[str, ...]] = ()

    def check_options(self, options: Mapping[str, Any],
                      path: tuple[str | int, ...] = ()) -> list[Problem]:
        problems = super().check_options(options, path)
        secrets = [str(options[k]) for k in self.secret_options if options.get(k)]
        return [replace(p, message=_masked(p.message, secrets)) for p in problems]

    def sdk_missing(self, message_id: int, exc: ImportError) -> ChannelError:
        return ChannelError(f"message {message_id}: the {self.name} SDK is not installed "
                            f"(pip install 'careloop[sms]'): {exc.name}", "not_configured")


def _masked(message: str, secrets: list[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "…")
    return message


@dataclass(frozen=True, slots=True)
class Rule:
    """Provider codes matching ``pattern`` (a regular expression, whole code) mean ``reason``."""

    pattern: str
    reason: str
    retryable: bool


def classify(code: str, rules: Sequence[Rule]) -> tuple[str, bool]:
    """``(reason, retryable)`` of a provider's refusal code (unknown: retried)."""
    for rule in rules:
        if re.fullmatch(rule.pattern, code):
            return rule.reason, rule.retryable
    return "sms_provider_error", True


def e164(address: str | None, message_id: int) -> str:
    """The number in E.164 (``+86…``): an 11-digit mainland mobile number gets ``+86``.

    Raises:
        ChannelError: ``no_address`` / ``sms_number_invalid`` (permanent), naming no number.
    """
    if not address:
        raise ChannelError(f"message {message_id}: patient has no phone number", "no_address",
                           retryable=False)
    text = re.sub(r"[\s()-]", "", address)
    if not _DIGITS.match(text):
        raise ChannelError(f"message {message_id}: the phone number is not a number",
                           "sms_number_invalid", retryable=False)
    if text.startswith("+"):
        return text
    if text.startswith("0086"):
        return "+" + text[2:]
    if len(text) == 13 and text.startswith("86"):
        return "+" + text
    if len(text) == 11 and text.startswith("1"):
        return "+86" + text
    raise ChannelError(f"message {message_id}: the phone number is neither a mainland mobile "
                       "number nor written with its country code (+…)", "sms_number_invalid",
                       retryable=False)


def check_endpoint(url: str, message_id: int) -> None:
    """The provider's endpoint must be on the outbound allow-list (flows/egress.py).

    Raises:
        ChannelError: ``egress_refused`` (retried: an administrator may list the host).
    """
    try:
        with transaction() as session:
            egress.check(session, url)
    except egress.EgressRefused as exc:
        host = urlsplit(url).hostname or "?"
        raise ChannelError(f"message {message_id}: {host}: {exc}", "egress_refused") from exc


class _NoRequestDetails(logging.Filter):
    """The SDKs' HTTP layers log request URLs and bodies at DEBUG: Alibaba Cloud's RPC call
    carries the number, the template parameters (names, link tokens) in its query string,
    URL-encoded where the log pipeline's redaction cannot see them. Query strings are cut from
    urllib3's lines; the SDKs' own DEBUG lines (whole requests and answers) are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "urllib3.connectionpool":
            return record.levelno > logging.DEBUG
        if isinstance(record.args, tuple):
            record.args = tuple(a.split("?", 1)[0] + "?…" if isinstance(a, str) and "?" in a
                                else a for a in record.args)
        return True


_FILTER = _NoRequestDetails()


def quiet_request_logs() -> None:
    """Install the filter on the loggers the SDKs write to (idempotent)."""
    for name in ("urllib3.connectionpool", "darabonba-core", "tencentcloud_sdk_common"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def token_ok(given: str | None, expected: str | None) -> bool:
    """Whether a receipt carries the configured shared token (constant-time comparison)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def china_time(text: object) -> datetime | None:
    """A provider's ``2017-01-01 00:00:00`` (Beijing time) in UTC; ``None`` if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=CHINA).astimezone(UTC)
    except ValueError:
        return None


# --- status reports (delivery receipts) ---------------------------------------------------------

@dataclass(frozen=True)
class ReportFormat:
    """How one provider's status-report push reads: the key naming the message (the provider's
    reference returned at sending), how a failure is told, where its code, words and time are,
    and the answers the provider expects."""

    ref: str
    time: str
    code: str
    words: str
    failed: Callable[[Mapping[str, Any]], bool]
    check: Callable[[Mapping[str, Any]], str | None]  # a problem with one report, or None
    ok: Callable[[], dict[str, Any]]
    bad: Callable[[str], dict[str, Any]]


def receive_reports(session: Session, channel: Channel, hook: str, request: Inbound,
                    fmt: ReportFormat) -> Answer:
    """``POST /channels/<type>/receipts?token=…``: check the shared token, read the batch (the
    first problem named by its place, ``[2].sid``), record each report on its message."""
    if hook != "receipts" or request.method != "POST":
        return Answer(404)
    try:
        expected = channel.options().get("receipt_token")
    except ChannelError:
        expected = None
    if not token_ok(request.query.get("token"), expected):
        log.warning("%s status report refused: wrong or missing token", channel.name)
        return refused()
    reports, problem = _reports(request.body, fmt)
    if problem is not None:
        return Answer.json(fmt.bad(problem), 400)
    recorded = 0
    for report in reports:
        failed = fmt.failed(report)
        detail = None
        if failed:
            code, words = str(report.get(fmt.code) or ""), str(report.get(fmt.words) or "")
            detail = f"{words}（{code}）" if words and code else (words or code or None)
        found = record_receipt(
            session, channel_type=channel.name, provider_ref=str(report[fmt.ref]),
            state="failed" if failed else "delivered", at=china_time(report.get(fmt.time)),
            detail=detail)
        recorded += found is not None
    log.info("%s status reports: %s received, %s matched a message", channel.name,
             len(reports), recorded)
    return Answer.json(fmt.ok())


def _reports(body: bytes, fmt: ReportFormat) -> tuple[list[dict[str, Any]], str | None]:
    if len(body) > MAX_BODY:
        return [], "body too large"
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return [], f"not JSON: {exc}"[:200]
    if not isinstance(data, list):
        return [], "$: expected a JSON array of status reports"
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            return [], f"[{index}]: expected an object"
        problem = fmt.check(item)
        if problem is not None:
            return [], f"[{index}].{problem}"
    return data, None
