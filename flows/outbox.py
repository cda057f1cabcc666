"""The outbox: messages written in the producing transaction, dispatched later by a channel.

    enqueue (in the step's transaction)        dispatch_due (any process, claimed per row)
    ──────────────────────────────────▶ row ──▶ expired? consent? quiet hours? paced? rate?
                                                ──▶ adapter.send ──▶ sent | logged | failed

A row is rendered when it is written (the template version in force then, the patient's
language), with the token of each patient link sealed (``engine/links.py``: the stored body holds
a placeholder, never a token); the link is opened again only in what the adapter is given.
Dispatch claims rows with a conditional update, so two processes never send the same row; the
idempotency key travels to the gateway so a retry after a crash can be recognised there.

A message has a moment: it is not sent after ``expires_at`` (``valid_for`` after it was due,
default :data:`DEFAULT_VALID_FOR`) nor once the link it carries has expired
(``link_expires_at``); the dispatcher marks it ``expired`` with the reason instead. After downtime,
late messages to one patient go at most one per :data:`PATIENT_SPACING`, never in a burst. An
adapter that delivers nothing (``log``) leaves the message ``logged``, never ``sent``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.orm import Session

from careloop.engine import links, store
from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.errors import CareloopError
from careloop.engine.registry import loaded_registry
from careloop.engine.templates import TemplateSpec
from careloop.flows.models import OutboxMessage

log = logging.getLogger("careloop.flows.outbox")

QUIET_START, QUIET_END = time(21, 0), time(8, 0)
QUIET_CHANNELS = frozenset({"sms"})
MAX_ATTEMPTS = 5
CLAIM_SECONDS = 120
DEFAULT_VALID_FOR = timedelta(days=1)
CATCH_UP_GRACE = timedelta(hours=1)  # later than this after its due time, a message is "late"
PATIENT_SPACING = timedelta(minutes=10)

STATUSES = ("pending", "sent", "logged", "failed", "expired", "suppressed", "cancelled")
DELIVERED = ("sent", "logged")  # left the outbox (``logged``: on the log channel, not delivered)
RESENDABLE = ("failed", "expired", "cancelled", "logged")
# Reason codes (``outbox_messages.reason``); the admin page puts each in words
# (``flows.outbox.reason.<code>``).
REASONS = ("link_expired", "too_late", "consent_withdrawn", "log_channel", "paced",
           "channel_error", "no_address", "gateway_unreachable", "gateway_refused",
           "smtp_failed", "no_adapter", "not_configured", "flow_cancelled", "cancelled_by_staff",
           "link_unavailable")


class ChannelError(CareloopError):
    """Raised by a channel adapter when sending failed and may be retried; ``reason`` is one
    of :data:`REASONS` (the admin page shows it in words)."""

    def __init__(self, message: str, reason: str = "channel_error") -> None:
        super().__init__(message)
        self.reason = reason


class OutboxError(CareloopError):
    """Raised when a message cannot be written (unknown template, missing values), or an
    administrator's resend or cancel does not apply to the message's state."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """What an adapter receives: no database objects, only what it needs to send."""

    id: int
    idempotency_key: str
    channel: str
    patient_id: str | None
    address: str | None  # phone, e-mail address or gateway user id (never logged)
    subject: str | None
    body: str
    urgent: bool


class ChannelAdapter(Protocol):
    """Sends one message; raise :class:`ChannelError` for a failure worth retrying. An adapter
    with ``delivers = False`` (the ``log`` adapter) only records the message: it ends
    ``logged``, not ``sent``."""

    def send(self, message: Outbound) -> None: ...


def in_quiet_hours(at: datetime) -> bool:
    local = at.astimezone(hospital_tz()).time()
    return local >= QUIET_START or local < QUIET_END


def after_quiet_hours(at: datetime) -> datetime:
    """The next 08:00 local time at or after ``at`` (``at`` itself outside quiet hours)."""
    if not in_quiet_hours(at):
        return at
    local = at.astimezone(hospital_tz())
    day = local.date() if local.time() < QUIET_END else local.date() + timedelta(days=1)
    return datetime.combine(day, QUIET_END, hospital_tz()).astimezone(at.tzinfo)


def _template(session: Session, key: str) -> TemplateSpec:
    row = store.current(session, "template", key)
    if row is None:
        raise OutboxError(f"no template '{key}'")
    spec: TemplateSpec = store.compile_row(row)
    return spec


def enqueue(session: Session, *, template_key: str, channel: str, patient_id: str | None = None,
            user_id: int | None = None, values: dict[str, Any], locale: str | None = None,
            urgent: bool = False, idempotency_key: str, source_ref: str | None = None,
            valid_for: timedelta | None = None, link_expires_at: datetime | None = None) -> int:
    """Write one message (contract 4, service ``outbox.enqueue``); the same key returns the
    first message's id and writes nothing.

    The message may go out until ``valid_for`` (default :data:`DEFAULT_VALID_FOR`) after it is
    due, and never after ``link_expires_at`` (the expiry of the link it carries)."""
    existing = session.scalars(select(OutboxMessage.id).where(
        OutboxMessage.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return existing
    if channel not in loaded_registry().catalogue("channel"):
        raise OutboxError(f"unknown channel '{channel}'")
    patient = session.get(Patient, patient_id) if patient_id else None
    locale = locale or (patient.locale if patient is not None else None) or "zh-CN"
    subject, body = _template(session, template_key).render(locale, values)
    subject, body = links.seal_links(session, subject), links.seal_links(session, body) or ""
    now = now_utc()
    due = now if urgent or channel not in QUIET_CHANNELS else after_quiet_hours(now)
    expires = due + (valid_for if valid_for is not None else DEFAULT_VALID_FOR)
    if link_expires_at is not None:
        expires = min(expires, link_expires_at)
    row = OutboxMessage(idempotency_key=idempotency_key, template_key=template_key,
                        channel=channel, patient_id=patient_id, user_id=user_id, locale=locale,
                        subject=subject, body=body, urgent=urgent, status="pending", attempts=0,
                        next_attempt_at=due, source_ref=source_ref, created_at=now,
                        expires_at=expires, link_expires_at=link_expires_at)
    session.add(row)
    session.flush()
    return row.id


def consented(patient: Patient | None, channel: str) -> bool:
    """A channel may be used unless the patient withdrew consent (``consents[ch] = false``)."""
    if patient is None:
        return True
    return patient.consents.get(channel, True) is not False


def rate_limit(channel: str) -> int:
    """Messages per minute on a channel (``CARELOOP_OUTBOX_RATE_<CHANNEL>``, default 600)."""
    return int(os.environ.get(f"CARELOOP_OUTBOX_RATE_{channel.upper()}", "600"))


def cancel_for(session: Session, source_prefix: str) -> int:
    """Cancel unsent messages whose ``source_ref`` starts with ``source_prefix``."""
    result = session.execute(update(OutboxMessage).where(
        OutboxMessage.source_ref.startswith(source_prefix, autoescape=True),
        OutboxMessage.status == "pending").values(status="cancelled", reason="flow_cancelled"))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _pending_row(session: Session, message_id: int) -> OutboxMessage:
    row = session.get(OutboxMessage, message_id, with_for_update=True)
    if row is None:
        raise OutboxError(f"no outbox message {message_id}")
    return row


def resendable(row: OutboxMessage, now: datetime) -> bool:
    """A failed, expired, cancelled or logged message may be sent again while its link works."""
    return row.status in RESENDABLE and (row.link_expires_at is None
                                         or row.link_expires_at > now)


def resend(session: Session, message_id: int) -> OutboxMessage:
    """An administrator sends a message again: pending now, valid for another
    :data:`DEFAULT_VALID_FOR` (never past its link's expiry).

    Raises:
        OutboxError: for an unknown message, a state that cannot be resent (pending, sent,
            suppressed) or a message whose link has expired.
    """
    now = now_utc()
    row = _pending_row(session, message_id)
    if not resendable(row, now):
        raise OutboxError(f"outbox message {message_id} ({row.status}) cannot be resent")
    expires = now + DEFAULT_VALID_FOR
    if row.link_expires_at is not None:
        expires = min(expires, row.link_expires_at)
    row.status, row.attempts, row.next_attempt_at, row.expires_at = "pending", 0, now, expires
    row.reason = row.error = row.claimed_by = row.claimed_until = row.sent_at = None
    return row


def cancel(session: Session, message_id: int) -> OutboxMessage:
    """An administrator cancels a pending message.

    Raises:
        OutboxError: for an unknown message or one that is no longer pending.
    """
    row = _pending_row(session, message_id)
    if row.status != "pending":
        raise OutboxError(f"outbox message {message_id} ({row.status}) is not pending")
    row.status, row.reason, row.claimed_by, row.claimed_until = (
        "cancelled", "cancelled_by_staff", None, None)
    return row


def claim_due(engine: Engine, model: Any, worker: str, now: datetime, limit: int) -> list[int]:
    """Claim up to ``limit`` due ``pending`` rows of a delivery queue (``model`` with ``status``,
    ``next_attempt_at``, ``claimed_by``, ``claimed_until``: the outbox, the webhook calls) for
    ``worker``: each row is claimed by one conditional UPDATE, so several processes sharing the
    database never deliver the same row twice; a claim lapses after ``CLAIM_SECONDS``."""
    free = or_(model.claimed_until.is_(None), model.claimed_until < now)
    with transaction(engine) as session:
        ids = session.scalars(select(model.id).where(
            model.status == "pending", model.next_attempt_at <= now, free)
            .order_by(model.next_attempt_at, model.id).limit(limit)).all()
        claimed = []
        for row_id in ids:
            result = session.execute(update(model).where(
                model.id == row_id, model.status == "pending", free)
                .values(claimed_by=worker, claimed_until=now + timedelta(seconds=CLAIM_SECONDS)))
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(row_id)
        return claimed


def _adapter(channel: str) -> ChannelAdapter:
    name = os.environ.get(f"CARELOOP_CHANNEL_{channel.upper()}", "log")
    adapter = loaded_registry().catalogue("channel_adapter").get(name)
    if adapter is None:
        raise ChannelError(f"no channel adapter '{name}' for channel '{channel}'", "no_adapter")
    result: ChannelAdapter = adapter
    return result


def _address(patient: Patient | None, channel: str) -> str | None:
    if patient is None:
        return None
    if channel == "email":
        value = patient.attributes.get("email")
        return str(value) if value else None
    if channel in ("wechat", "wecom"):
        value = patient.attributes.get(f"{channel}_openid")
        return str(value) if value else patient.phone
    return patient.phone


def expiry_reason(row: OutboxMessage, now: datetime) -> str | None:
    """``link_expired`` or ``too_late`` when the message's moment has passed, else ``None``."""
    if row.link_expires_at is not None and row.link_expires_at <= now:
        return "link_expired"
    if row.expires_at is not None and row.expires_at <= now:
        return "too_late"
    return None


def _defer(row: OutboxMessage, until: datetime, reason: str | None = None) -> str:
    row.next_attempt_at, row.claimed_by, row.claimed_until = until, None, None
    if reason is not None:
        row.reason = reason
    return "deferred"


def _paced_until(session: Session, row: OutboxMessage, now: datetime) -> datetime | None:
    """A late (or already paced) message waits :data:`PATIENT_SPACING` after the patient's last
    message, so messages held up by downtime do not arrive in one burst."""
    if row.patient_id is None or (now - row.next_attempt_at <= CATCH_UP_GRACE
                                  and row.reason != "paced"):
        return None
    last = session.scalar(select(func.max(OutboxMessage.sent_at)).where(
        OutboxMessage.patient_id == row.patient_id, OutboxMessage.status.in_(DELIVERED),
        OutboxMessage.sent_at > now - PATIENT_SPACING))
    return last + PATIENT_SPACING if last is not None else None


def _deliver(session: Session, row: OutboxMessage, now: datetime) -> str:
    expired = expiry_reason(row, now)
    if expired is not None:
        row.status, row.reason, row.error = "expired", expired, None
        return "expired"
    patient = session.get(Patient, row.patient_id) if row.patient_id else None
    if not consented(patient, row.channel):
        row.status, row.reason, row.error = "suppressed", "consent_withdrawn", None
        return "suppressed"
    if row.channel in QUIET_CHANNELS and not row.urgent and in_quiet_hours(now):
        return _defer(row, after_quiet_hours(now))
    paced = _paced_until(session, row, now)
    if paced is not None:
        return _defer(row, paced, "paced")
    recent = session.scalar(select(func.count()).select_from(OutboxMessage).where(
        OutboxMessage.channel == row.channel, OutboxMessage.status.in_(DELIVERED),
        OutboxMessage.sent_at > now - timedelta(minutes=1))) or 0
    if recent >= rate_limit(row.channel):
        row.next_attempt_at = now + timedelta(minutes=1)
        row.claimed_by = row.claimed_until = None
        return "deferred"
    row.attempts += 1
    try:
        subject, body = message_text(session, row)
    except links.LinkUnavailable as exc:
        row.status, row.reason, row.error = "failed", "link_unavailable", str(exc)
        return "failed"
    try:
        adapter = _adapter(row.channel)
        adapter.send(Outbound(row.id, row.idempotency_key, row.channel, row.patient_id,
                              _address(patient, row.channel), subject, body, row.urgent))
    except ChannelError as exc:
        log.warning("outbox message %s on %s failed (attempt %s): %s", row.id, row.channel,
                    row.attempts, exc)
        row.error, row.reason = str(exc), exc.reason
        if row.attempts >= MAX_ATTEMPTS:
            row.status = "failed"
        else:
            row.next_attempt_at = now + timedelta(minutes=2 ** row.attempts)
            row.claimed_by = row.claimed_until = None
        return "failed"
    if getattr(adapter, "delivers", True):
        row.status, row.sent_at, row.error, row.reason = "sent", now, None, None
        return "sent"
    row.status, row.sent_at, row.error, row.reason = "logged", now, None, "log_channel"
    return "logged"


def message_text(session: Session, row: OutboxMessage, *,
                 shown: bool = True) -> tuple[str | None, str]:
    """``(subject, body)`` as the patient receives them: the sealed link tokens opened again
    (``shown=False``: only their first characters, for a page or printout).

    Raises:
        careloop.engine.links.LinkUnavailable: when a link does not open with the secret.
    """
    return (links.open_links(session, row.subject, shown=shown),
            links.open_links(session, row.body, shown=shown) or "")


def dispatch_due(engine: Engine, *, worker: str, now: datetime | None = None,
                 batch: int = 100, max_batches: int = 1000) -> dict[str, int]:
    """Send every due message (each in its own transaction); returns counts by outcome."""
    now = now or now_utc()
    counts: dict[str, int] = {}
    for _ in range(max_batches):
        ids = claim_due(engine, OutboxMessage, worker, now, batch)
        if not ids:
            break
        for message_id in ids:
            with transaction(engine) as session:
                row = session.get(OutboxMessage, message_id, with_for_update=True)
                if row is None or row.status != "pending" or row.claimed_by != worker:
                    continue
                outcome = _deliver(session, row, now)
                counts[outcome] = counts.get(outcome, 0) + 1
    return counts
