"""The outbox: messages written in the producing transaction, dispatched later by a channel.

    enqueue (in the step's transaction)      dispatch_due (any process; each row claimed with a
    ──────────────────────────────────▶ row  token by one conditional UPDATE)
        pending ──claim──▶ expired? consent? quiet hours? paced? rate?
                ──commit "sending" (the send-once record)──▶ channel.send(message, key)
                ──commit the outcome (only under the claim's token)──▶ sent | logged
                                                                      | pending (retry later)
                                                                      | dead  (dead letter)
        sending, claim lapsed (the process died between send and commit):
                lookup(key) ─▶ sent | pending ;  idempotent channel ─▶ pending (same key)
                otherwise ─▶ unknown (a person resolves: delivered, resend or cancel)

A row is rendered when it is written (the template version in force then, the patient's
language), with the token of each patient link sealed (``engine/links.py``: the stored body holds
a placeholder, never a token); the link is opened again only in what the channel is given.

Retries back off exponentially with jitter (:class:`~careloop.flows.channel.RetryPolicy` of the
channel) until the channel's **horizon** after the first failure, or the message's moment
(``expires_at``), whichever comes first; then the message is a **dead letter**: it opens (or
counts into) the channel's open :class:`~careloop.flows.models.DeliveryIncident`, records the
events ``outbox.dead_letter`` (and ``delivery.incident_opened``) and a flow waiting on it takes
its ``on_undelivered`` fallback. When a later send on the channel succeeds, dead letters still
within their moment are offered for resend (:func:`recovered_dead`).

A message has a moment: it is not sent after ``expires_at`` (``valid_for`` after it was due,
default :data:`DEFAULT_VALID_FOR`) nor once the link it carries has expired
(``link_expires_at``); the dispatcher marks it ``expired`` with the reason instead (``dead`` if
sending it had already failed). After downtime, late messages to one patient go at most one per
:data:`PATIENT_SPACING`, never in a burst. A channel that delivers nothing (``log``) leaves the
message ``logged``, never ``sent``.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time as monotime
import uuid
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from careloop.engine import events, links, store
from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.errors import CareloopError
from careloop.engine.registry import loaded_registry
from careloop.engine.templates import TemplateSpec
from careloop.flows.channel import Channel, ChannelError, Outbound, SendResult
from careloop.flows.models import DeliveryIncident, OutboxMessage

log = logging.getLogger("careloop.flows.outbox")

__all__ = ["ChannelError", "Outbound"]  # re-exported: where channel code imported them before

QUIET_START, QUIET_END = time(21, 0), time(8, 0)
QUIET_CHANNELS = frozenset({"sms"})
CLAIM_SECONDS = 120
DEFAULT_VALID_FOR = timedelta(days=1)
CATCH_UP_GRACE = timedelta(hours=1)  # later than this after its due time, a message is "late"
PATIENT_SPACING = timedelta(minutes=10)
BREAKER_FAILURES = 3  # failures in a row on a channel within one pass: the rest wait a minute
DEFAULT_BUDGET_SECONDS = 20.0  # one pass stops claiming after this (the sweep keeps its pace)

STATUSES = ("pending", "sending", "sent", "logged", "dead", "unknown", "expired", "suppressed",
            "cancelled", "failed")
DELIVERED = ("sent", "logged")  # left the outbox (``logged``: on the log channel, not delivered)
RESENDABLE = ("dead", "unknown", "failed", "expired", "cancelled", "logged")
CANCELLABLE = ("pending", "dead", "unknown")
UNDELIVERED = ("dead", "expired", "suppressed")  # a flow waiting on it takes its fallback
# Reason codes (``outbox_messages.reason``); the admin page puts each in words
# (``flows.outbox.reason.<code>``).
REASONS = ("link_expired", "too_late", "consent_withdrawn", "log_channel", "paced",
           "channel_error", "no_address", "gateway_unreachable", "gateway_refused",
           "smtp_failed", "smtp_refused", "no_adapter", "not_configured", "flow_cancelled",
           "cancelled_by_staff", "link_unavailable", "retry_horizon", "outcome_unknown",
           "channel_down", "confirmed_by_staff", "no_lookup",
           # WeChat / WeCom (flows/wechat/api.py)
           "wechat_busy", "wechat_not_subscribed", "wechat_bad_address", "wechat_bad_template",
           "wechat_config", "wechat_token", "wechat_refused", "wechat_no_template")


class OutboxError(CareloopError):
    """Raised when a message cannot be written (unknown template, missing values), or an
    administrator's resend or cancel does not apply to the message's state."""


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
    spec = store.compile_row(row, TemplateSpec)
    return spec


def enqueue(session: Session, *, template_key: str, channel: str, patient_id: str | None = None,
            user_id: int | None = None, values: dict[str, Any], locale: str | None = None,
            urgent: bool = False, idempotency_key: str, source_ref: str | None = None,
            valid_for: timedelta | None = None, link_expires_at: datetime | None = None,
            new_key: bool = False) -> int:
    """Write one message (contract 4, service ``outbox.enqueue``); the same key returns the
    first message's id and writes nothing. See :func:`enqueue_row`."""
    row = enqueue_row(session, template_key=template_key, channel=channel,
                      patient_id=patient_id, user_id=user_id, values=values, locale=locale,
                      urgent=urgent, idempotency_key=idempotency_key, source_ref=source_ref,
                      valid_for=valid_for, link_expires_at=link_expires_at, new_key=new_key)
    if isinstance(row, int):
        return row
    session.flush()
    return row.id


def enqueue_row(session: Session, *, template_key: str, channel: str,
                patient_id: str | None = None, user_id: int | None = None,
                values: dict[str, Any], locale: str | None = None, urgent: bool = False,
                idempotency_key: str, source_ref: str | None = None,
                valid_for: timedelta | None = None, link_expires_at: datetime | None = None,
                new_key: bool = False) -> OutboxMessage | int:
    """:func:`enqueue` without its flush: the new row, written with the session's next flush
    (a flow batch's messages in one ``INSERT``), or the id of the message holding the key.

    Write one message (contract 4, service ``outbox.enqueue``); the same key returns the
    first message's id and writes nothing. ``new_key``: the caller knows no message can hold
    the key yet (a flow step run created in this transaction), so it is not looked up (the
    unique index still guards it).

    The message may go out until ``valid_for`` (default :data:`DEFAULT_VALID_FOR`) after it is
    due, and never after ``link_expires_at`` (the expiry of the link it carries)."""
    existing = None if new_key else session.scalars(select(OutboxMessage.id).where(
        OutboxMessage.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return existing
    if channel not in loaded_registry().catalogue("channel"):
        raise OutboxError(f"unknown channel '{channel}'")
    patient = session.get(Patient, patient_id) if patient_id else None
    locale = locale or (patient.locale if patient is not None else None) or "zh-CN"
    template = _template(session, template_key)
    subject, body = template.render(locale, values)
    providers = _seal_tree(session, template.render_providers(values)) or None
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
                        expires_at=expires, link_expires_at=link_expires_at,
                        provider_params=providers, link_ref=links.first_ref(body))
    session.add(row)
    return row


def _seal_tree(session: Session, value: Any) -> Any:
    """Provider parameters carry links too: stored sealed like the body, opened when sent."""
    if isinstance(value, str):
        return links.seal_links(session, value)
    if isinstance(value, dict):
        return {k: _seal_tree(session, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_seal_tree(session, v) for v in value]
    return value


def _open_tree(session: Session, value: Any) -> Any:
    if isinstance(value, str):
        return links.open_links(session, value)
    if isinstance(value, dict):
        return {k: _open_tree(session, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_open_tree(session, v) for v in value]
    return value


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



# --- what a person does: resend, cancel, resolve ---------------------------------------------


def _locked_row(session: Session, message_id: int) -> OutboxMessage:
    row = session.get(OutboxMessage, message_id, with_for_update=True)
    if row is None:
        raise OutboxError(f"no outbox message {message_id}")
    return row


def resendable(row: OutboxMessage, now: datetime) -> bool:
    """A dead, unknown, expired, cancelled or logged message may be sent again while its link
    works."""
    return row.status in RESENDABLE and (row.link_expires_at is None
                                         or row.link_expires_at > now)


def resend(session: Session, message_id: int, *, keep_expiry: bool = False) -> OutboxMessage:
    """A person sends a message again: pending now, valid for another
    :data:`DEFAULT_VALID_FOR` (never past its link's expiry); ``keep_expiry``: within the
    moment it already had (the dead letters offered after a channel recovered).

    Raises:
        OutboxError: for an unknown message, a state that cannot be resent (pending, sending,
            sent, suppressed) or a message whose link has expired.
    """
    now = now_utc()
    row = _locked_row(session, message_id)
    if not resendable(row, now):
        raise OutboxError(f"outbox message {message_id} ({row.status}) cannot be resent")
    expires = row.expires_at if keep_expiry and row.expires_at is not None \
        else now + DEFAULT_VALID_FOR
    if row.link_expires_at is not None:
        expires = min(expires, row.link_expires_at)
    row.status, row.attempts, row.next_attempt_at, row.expires_at = "pending", 0, now, expires
    row.reason = row.error = row.claimed_by = row.claimed_until = row.sent_at = None
    row.claim_token = row.attempt_started_at = row.first_failed_at = row.dead_at = None
    return row


def cancel(session: Session, message_id: int) -> OutboxMessage:
    """A person cancels a pending message, a dead letter or a message of unknown outcome.

    Raises:
        OutboxError: for an unknown message or one in another state.
    """
    row = _locked_row(session, message_id)
    if row.status not in CANCELLABLE:
        raise OutboxError(f"outbox message {message_id} ({row.status}) cannot be cancelled")
    row.status, row.reason = "cancelled", "cancelled_by_staff"
    row.claimed_by = row.claimed_until = row.claim_token = None
    return row


def confirm_delivered(session: Session, message_id: int) -> OutboxMessage:
    """A person checked (the mail server's log, the patient) that a message of unknown outcome
    did arrive: it is ``sent``, and is never sent again.

    Raises:
        OutboxError: for an unknown message or one whose outcome is known.
    """
    row = _locked_row(session, message_id)
    if row.status != "unknown":
        raise OutboxError(f"outbox message {message_id} ({row.status}) is not of unknown "
                          "outcome")
    row.status, row.reason, row.sent_at = "sent", "confirmed_by_staff", now_utc()
    return row


def recovered_dead(session: Session, now: datetime | None = None,
                   limit: int = 500) -> list[OutboxMessage]:
    """Dead letters worth sending again: still within their moment, on a channel where a
    later message was sent (the channel has recovered)."""
    now = now or now_utc()
    later = aliased(OutboxMessage)
    recovered = exists().where(later.channel == OutboxMessage.channel,
                               later.status == "sent", later.sent_at > OutboxMessage.dead_at)
    return list(session.scalars(select(OutboxMessage).where(
        OutboxMessage.status == "dead", OutboxMessage.dead_at.is_not(None),
        or_(OutboxMessage.expires_at.is_(None), OutboxMessage.expires_at > now),
        or_(OutboxMessage.link_expires_at.is_(None), OutboxMessage.link_expires_at > now),
        recovered).order_by(OutboxMessage.id).limit(limit)).all())


def resend_recovered(session: Session, now: datetime | None = None) -> list[int]:
    """Resend every dead letter :func:`recovered_dead` offers (within its moment)."""
    ids = [row.id for row in recovered_dead(session, now)]
    for message_id in ids:
        resend(session, message_id, keep_expiry=True)
    return ids


def resolve_incident(session: Session, incident_id: int, actor: str) -> DeliveryIncident:
    """A person closes a delivery incident (its dead letters were resent or cancelled, or
    the channel is fixed).

    Raises:
        OutboxError: for an unknown or already resolved incident.
    """
    incident = session.get(DeliveryIncident, incident_id, with_for_update=True)
    if incident is None or incident.status != "open":
        raise OutboxError(f"delivery incident {incident_id} is not open")
    incident.status, incident.resolved_at, incident.resolved_by = "resolved", now_utc(), actor
    return incident


# --- claiming ----------------------------------------------------------------------------------


def claim_due(engine: Engine, model: Any, worker: str, now: datetime, limit: int) -> list[int]:
    """Claim up to ``limit`` due ``pending`` rows of a delivery queue (``model`` with ``status``,
    ``next_attempt_at``, ``claimed_by``, ``claimed_until``: the webhook calls) for ``worker``:
    each row is claimed by one conditional UPDATE, so several processes sharing the database
    never deliver the same row twice; a claim lapses after ``CLAIM_SECONDS``."""
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


def _claim(engine: Engine, worker: str, now: datetime, limit: int, status: str = "pending",
           stamp: datetime | None = None) -> list[tuple[int, str]]:
    """Claim outbox rows in ``status`` (due ``pending`` ones, or ``sending`` ones whose claim
    lapsed) under a fresh token (one for the batch): one conditional ``UPDATE … WHERE id IN (…)
    AND <still claimable> RETURNING id``, which holds on SQLite (the UPDATE takes the write lock
    and re-checks the condition) as on PostgreSQL (a row another process claimed meanwhile is
    re-checked after its lock and left out). The claimed rows in the order they were found."""
    free = or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now)
    due = [OutboxMessage.next_attempt_at <= now] if status == "pending" else []
    token = uuid.uuid4().hex
    values = {"claimed_by": worker[:64], "claim_token": token,
              "claimed_until": (stamp or now) + timedelta(seconds=CLAIM_SECONDS)}
    query = (select(OutboxMessage.id).where(OutboxMessage.status == status, free, *due)
             .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
    with transaction(engine) as session:
        if engine.dialect.name == "postgresql":
            # one statement: the subquery locks the rows it picks, skipping those another
            # dispatcher holds (it neither waits for them nor comes back empty-handed)
            rows = session.execute(update(OutboxMessage).where(
                OutboxMessage.id.in_(query.with_for_update(skip_locked=True).scalar_subquery()))
                .values(**values)
                .returning(OutboxMessage.id, OutboxMessage.next_attempt_at)
                .execution_options(synchronize_session=False)).all()
            return [(row_id, token) for row_id, _ in sorted(rows, key=lambda r: (r[1], r[0]))]
        # SQLite: the transaction holds the database's write lock from its start (BEGIN
        # IMMEDIATE), so the rows found are still claimable when the UPDATE re-checks them
        ids = session.scalars(query).all()
        if not ids:
            return []
        taken = set(session.scalars(update(OutboxMessage).where(
            OutboxMessage.id.in_(ids), OutboxMessage.status == status, free)
            .values(**values).returning(OutboxMessage.id)
            .execution_options(synchronize_session=False)).all())
    return [(row_id, token) for row_id in ids if row_id in taken]


def _release(engine: Engine, claimed: list[tuple[int, str]]) -> None:
    with transaction(engine) as session:
        for row_id, token in claimed:
            session.execute(update(OutboxMessage).where(
                OutboxMessage.id == row_id, OutboxMessage.claim_token == token,
                OutboxMessage.status == "pending")
                .values(claimed_by=None, claimed_until=None, claim_token=None))


# --- channels -----------------------------------------------------------------------------------


def channel_for(name: str) -> Channel:
    """The channel type that sends on message channel ``name``
    (``CARELOOP_CHANNEL_<NAME>``, default ``log``).

    Raises:
        ChannelError: ``no_adapter`` when no channel type of that name is registered.
    """
    kind = os.environ.get(f"CARELOOP_CHANNEL_{name.upper()}", "log")
    channel = loaded_registry().catalogue("channel_adapter").get(kind)
    if not isinstance(channel, Channel):
        raise ChannelError(f"no channel type '{kind}' for channel '{name}'", "no_adapter")
    return channel


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


def staff_address(session: Session, user_id: int, channel: str) -> str | None:
    """A staff member's address on a staff channel (their WeCom user id on ``wecom``)."""
    from careloop.flows.wechat.models import StaffAddress

    return session.scalars(select(StaffAddress.address).where(
        StaffAddress.user_id == user_id, StaffAddress.channel == channel)).first()


def expiry_reason(row: OutboxMessage, now: datetime) -> str | None:
    """``link_expired`` or ``too_late`` when the message's moment has passed, else ``None``."""
    if row.link_expires_at is not None and row.link_expires_at <= now:
        return "link_expired"
    if row.expires_at is not None and row.expires_at <= now:
        return "too_late"
    return None


def _defer(row: OutboxMessage, until: datetime, reason: str | None = None) -> str:
    row.next_attempt_at, row.claimed_by, row.claimed_until, row.claim_token = (
        until, None, None, None)
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


def message_text(session: Session, row: OutboxMessage, *,
                 shown: bool = True) -> tuple[str | None, str]:
    """``(subject, body)`` as the patient receives them: the sealed link tokens opened again
    (``shown=False``: only their first characters, for a page or printout).

    Raises:
        careloop.engine.links.LinkUnavailable: when a link does not open with the secret.
    """
    return (links.open_links(session, row.subject, shown=shown),
            links.open_links(session, row.body, shown=shown) or "")


# --- outcomes -----------------------------------------------------------------------------------


def _settle(row: OutboxMessage, status: str, reason: str | None, now: datetime) -> None:
    row.status, row.reason = status, reason
    row.claimed_by = row.claimed_until = row.claim_token = row.attempt_started_at = None
    if status in ("dead", "expired", "suppressed"):
        _undelivered(row)


def _undelivered(row: OutboxMessage) -> None:
    from sqlalchemy.orm import object_session

    session = object_session(row)
    if session is not None and row.source_ref and row.source_ref.startswith("flow_run:"):
        from careloop.flows.undelivered import fall_back

        try:  # a fallback that fails (no assignee) must not keep the message from settling
            with session.begin_nested():
                fall_back(session, row)
        except Exception as exc:  # logged without personal data; the message still settles
            log.warning("outbox message %s: the flow's fallback failed: %s", row.id,
                        type(exc).__name__)


def _success(channel: Channel, result: SendResult, now: datetime) -> tuple[str, dict[str, Any]]:
    """A send's outcome and the columns it writes (a settled row: its claim cleared)."""
    outcome, reason = (("logged", "log_channel") if result.status == "logged"
                       or not channel.delivers else ("sent", None))
    return outcome, {"sent_at": now, "error": None, "provider_ref": result.provider_ref,
                     "status": outcome, "reason": reason, "claimed_by": None,
                     "claimed_until": None, "claim_token": None, "attempt_started_at": None}


def _succeeded(row: OutboxMessage, channel: Channel, result: SendResult,
               now: datetime) -> str:
    outcome, values = _success(channel, result, now)
    for name, value in values.items():
        setattr(row, name, value)
    return outcome


def dead_letter(session: Session, row: OutboxMessage, reason: str, now: datetime) -> str:
    """Make ``row`` a dead letter: counted into its channel's open delivery incident (opened
    now if there is none), with the events a rule set (or an operator's alerting) reacts to."""
    incident = session.scalars(select(DeliveryIncident).where(
        DeliveryIncident.channel == row.channel, DeliveryIncident.status == "open")
        .order_by(DeliveryIncident.id).limit(1)).first()
    if incident is None:
        incident = DeliveryIncident(channel=row.channel, status="open", reason=reason,
                                    dead_count=0, opened_at=now, last_at=now)
        session.add(incident)
        session.flush()
        log.error("delivery incident %s opened: messages on channel %s are dead letters (%s)",
                  incident.id, row.channel, reason)
        title = getattr(loaded_registry().catalogue("channel").get(row.channel), "title", {})
        # the channel's name in words too: an alert a rule set raises reads no codes
        events.record(session, "delivery.incident_opened",
                      {"incident_id": incident.id, "channel": row.channel, "reason": reason,
                       "channel_zh": title.get("zh-CN", row.channel),
                       "channel_en": title.get("en", row.channel)},
                      event_id=f"delivery.incident_opened:{incident.id}")
    incident.dead_count += 1
    incident.last_at = now
    row.incident_id, row.dead_at = incident.id, now
    log.warning("outbox message %s on %s is a dead letter (%s) after %s attempts", row.id,
                row.channel, reason, row.attempts)
    events.record(session, "outbox.dead_letter", {
        "message_id": row.id, "channel": row.channel, "reason": reason,
        "incident_id": incident.id, "patient_id": row.patient_id,
        "source_ref": row.source_ref, "template": row.template_key},
        event_id=f"outbox.dead_letter:{row.id}:{now.isoformat()}")
    _settle(row, "dead", reason, now)
    return "dead"


def _failed(session: Session, row: OutboxMessage, channel: Channel, exc: ChannelError,
            now: datetime, rng: random.Random | None) -> str:
    log.warning("outbox message %s on %s failed (attempt %s): %s", row.id, row.channel,
                row.attempts, exc.reason)
    row.error = str(exc)[:500]
    row.first_failed_at = row.first_failed_at or now
    if not exc.retryable:
        return dead_letter(session, row, exc.reason, now)
    if now - row.first_failed_at >= channel.retry.horizon:
        return dead_letter(session, row, "retry_horizon", now)
    following = now + channel.retry.delay(row.attempts, rng)
    if row.expires_at is not None:
        following = min(following, row.expires_at)  # dead at its moment's end, not later
    row.reason = exc.reason
    _defer(row, following)
    row.status, row.attempt_started_at = "pending", None
    return "retry"


def _unknown(session: Session, row: OutboxMessage, channel: Channel, now: datetime,
             answer: SendResult | None) -> str:
    """The send started but its outcome was never recorded. Ask the provider if the channel can
    be asked; send again with the same key if the provider drops repeats; otherwise leave the
    decision to a person — never send blind."""
    if answer is not None and answer.status in ("delivered", "logged"):
        return _succeeded(row, channel, answer, now)
    if answer is not None or channel.idempotent:  # not_found, or the key makes a repeat safe
        row.reason = "outcome_unknown"
        _defer(row, now)
        row.status, row.attempt_started_at = "pending", None
        return "requeued"
    _settle(row, "unknown", "outcome_unknown", now)
    log.warning("outbox message %s on %s: outcome unknown, waiting for a person", row.id,
                row.channel)
    return "unknown"


def _bounded(call: Any, seconds: float) -> tuple[Any, BaseException | None, bool]:
    """Run ``call`` in a worker thread for at most ``seconds``: ``(result, error, timed_out)``.
    A hanging provider costs the pass ``seconds``, never the sweep; the thread is left to its
    socket time limits."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # handed back to the dispatcher
            box["error"] = exc

    worker = threading.Thread(target=target, name="careloop-outbox-send", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        return None, None, True
    return box.get("result"), box.get("error"), False


def _direct(call: Any, seconds: float) -> tuple[Any, BaseException | None, bool]:
    """:func:`_bounded` for a channel whose send cannot hang (``Channel.local``): called here,
    without a thread; an error is handed back the same way."""
    try:
        return call(), None, False
    except Exception as exc:  # handed back to the dispatcher, as from the worker thread
        return None, exc, False


# --- dispatch -----------------------------------------------------------------------------------


class _Pass:
    """One dispatch pass: its clock, its time budget and the channels found down in it."""

    def __init__(self, engine: Engine, worker: str, now: datetime, budget: float,
                 rng: random.Random | None) -> None:
        self.engine, self.worker, self.now, self.rng = engine, worker, now, rng
        self.started = monotime.monotonic()
        self.deadline = self.started + budget
        self.failures: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def stamp(self) -> datetime:
        """The pass's logical time plus the real time spent in it (for claim expiry)."""
        return self.now + timedelta(seconds=monotime.monotonic() - self.started)

    def over(self) -> bool:
        return monotime.monotonic() > self.deadline


# The statements sent for every message, built once (their bound values given at each call):
# how many left on a channel in the last minute; the send-once record; a send's outcome.
_RECENT = select(func.count()).select_from(OutboxMessage).where(
    OutboxMessage.channel == bindparam("channel"), OutboxMessage.status.in_(DELIVERED),
    OutboxMessage.sent_at > bindparam("since"))
_SENDING = update(OutboxMessage).where(
    OutboxMessage.id == bindparam("message_id"), OutboxMessage.claim_token == bindparam("token"),
    OutboxMessage.status == "pending").values(
    status="sending", attempts=OutboxMessage.attempts + 1,
    attempt_started_at=bindparam("started"), claimed_until=bindparam("until"))
_SUCCEEDED = update(OutboxMessage).where(
    OutboxMessage.id == bindparam("message_id"), OutboxMessage.status == "sending",
    OutboxMessage.claim_token == bindparam("token")).values(
    {name: bindparam(f"new_{name}") for name in (
        "sent_at", "error", "provider_ref", "status", "reason", "claimed_by", "claimed_until",
        "claim_token", "attempt_started_at")})


def _prepare(session: Session, row: OutboxMessage, p: _Pass) -> str | tuple[Channel, Outbound]:
    now = p.now
    expired = expiry_reason(row, now)
    if expired is not None:
        row.error = None
        if row.attempts > 0 or row.first_failed_at is not None:
            # sending had failed (or its channel was down): a dead letter, not merely late
            return dead_letter(session, row, expired, now)
        _settle(row, "expired", expired, now)
        return "expired"
    patient = session.get(Patient, row.patient_id) if row.patient_id else None
    if not consented(patient, row.channel):
        row.error = None
        _settle(row, "suppressed", "consent_withdrawn", now)
        return "suppressed"
    if row.channel in QUIET_CHANNELS and not row.urgent and in_quiet_hours(now):
        return _defer(row, after_quiet_hours(now))
    paced = _paced_until(session, row, now)
    if paced is not None:
        return _defer(row, paced, "paced")
    if p.failures.get(row.channel, 0) >= BREAKER_FAILURES:
        row.first_failed_at = row.first_failed_at or now
        return _defer(row, now + timedelta(minutes=1), "channel_down")
    recent = session.scalar(_RECENT, {"channel": row.channel,
                                      "since": now - timedelta(minutes=1)}) or 0
    if recent >= rate_limit(row.channel):
        return _defer(row, now + timedelta(minutes=1))
    try:
        channel = channel_for(row.channel)
    except ChannelError as exc:
        row.attempts += 1
        return _failed(session, row, channel_for_errors(), exc, now, p.rng)
    try:
        subject, body = message_text(session, row)
        entry = (row.provider_params or {}).get(channel.name)
        provider = _open_tree(session, entry) if isinstance(entry, dict) else None
    except links.LinkUnavailable as exc:
        row.attempts += 1
        row.error = str(exc)[:500]
        return dead_letter(session, row, "link_unavailable", now)
    address = (_address(patient, row.channel) if row.user_id is None or patient is not None
               else staff_address(session, row.user_id, row.channel))
    return channel, Outbound(row.id, row.idempotency_key, row.channel, row.patient_id,
                             address, subject, body, row.urgent, provider)


def channel_for_errors() -> Channel:
    """The retry policy used when no channel type could be found (a configuration error)."""
    return Channel()


# A claimed message read for sending, locked, with its patient (``_prepare`` reads the patient's
# consent and address): one statement instead of two, built once.
_LOAD = (select(OutboxMessage, Patient)
         .outerjoin(Patient, Patient.id == OutboxMessage.patient_id)
         .where(OutboxMessage.id == bindparam("message_id"))
         .with_for_update(of=OutboxMessage))


def _dispatch_one(p: _Pass, message_id: int, token: str) -> str:
    with transaction(p.engine) as session:
        loaded = session.execute(_LOAD, {"message_id": message_id}).first()
        row = loaded[0] if loaded is not None else None
        if row is None or row.status != "pending" or row.claim_token != token:
            return "skipped"
        prepared = _prepare(session, row, p)
        if isinstance(prepared, str):
            return prepared
        channel, outbound = prepared
        # the send-once record, committed before the channel is called: a conditional UPDATE,
        # so a process whose claim lapsed meanwhile (and was taken over) never sends
        started = session.connection().execute(_SENDING, {
            "message_id": message_id, "token": token, "started": p.now,
            "until": p.stamp() + timedelta(seconds=max(CLAIM_SECONDS,
                                                       2 * channel.timeouts.total))})
        if started.rowcount != 1:  # ``row`` is not read again
            return "superseded"
    result, error, timed_out = (_direct if channel.local else _bounded)(
        lambda: channel.send(outbound, outbound.idempotency_key), channel.timeouts.total)
    if not timed_out and error is None and isinstance(result, SendResult):
        # the usual outcome in one conditional UPDATE (no row read first): the same test of
        # status and token as below, taken under the UPDATE's row lock
        outcome, values = _success(channel, result, p.now)
        with p.engine.begin() as conn:
            done = conn.execute(_SUCCEEDED, {"message_id": message_id, "token": token} | {
                f"new_{name}": value for name, value in values.items()}).rowcount
        if done != 1:
            return "superseded"  # another process took it over after our claim lapsed
        p.failures[outbound.channel] = 0
        return outcome
    with transaction(p.engine) as session:
        row = session.get(OutboxMessage, message_id, with_for_update=True)
        if row is None or row.status != "sending" or row.claim_token != token:
            return "superseded"  # another process took it over after our claim lapsed
        if timed_out:
            row.error = "the channel did not answer in time"
            p.failures[row.channel] = p.failures.get(row.channel, 0) + 1
            return _unknown(session, row, channel, p.now, None)
        if error is None and isinstance(result, SendResult):
            p.failures[row.channel] = 0
            return _succeeded(row, channel, result, p.now)
        failure = error if isinstance(error, ChannelError) else ChannelError(
            f"message {message_id}: {type(error).__name__}", "channel_error")
        p.failures[row.channel] = p.failures.get(row.channel, 0) + 1
        return _failed(session, row, channel, failure, p.now, p.rng)


def _recover(p: _Pass, message_id: int, token: str) -> str:
    """A ``sending`` row whose claim lapsed: its process died between send and commit."""
    with transaction(p.engine) as session:
        row = session.get(OutboxMessage, message_id)
        if row is None or row.status != "sending" or row.claim_token != token:
            return "skipped"
        name, key = row.channel, row.idempotency_key
    try:
        channel = channel_for(name)
    except ChannelError:
        channel = channel_for_errors()
    answer: SendResult | None = None
    if channel.can_lookup:
        answer, error, timed_out = _bounded(lambda: channel.lookup(key),
                                            channel.timeouts.total)
        if error is not None or timed_out:
            return "recovery_deferred"  # asked again next pass (the claim lapses again)
    with transaction(p.engine) as session:
        row = session.get(OutboxMessage, message_id, with_for_update=True)
        if row is None or row.status != "sending" or row.claim_token != token:
            return "skipped"
        return _unknown(session, row, channel, p.now, answer)


def dispatch_due(engine: Engine, *, worker: str, now: datetime | None = None,
                 batch: int = 100, max_batches: int = 1000, budget_seconds: float | None = None,
                 rng: random.Random | None = None) -> dict[str, int]:
    """Resolve sends whose process died, then send every due message (each in its own
    transactions) until ``budget_seconds`` of real time (``CARELOOP_OUTBOX_BUDGET``, default
    :data:`DEFAULT_BUDGET_SECONDS`) are spent; returns counts by outcome."""
    budget = budget_seconds if budget_seconds is not None else float(
        os.environ.get("CARELOOP_OUTBOX_BUDGET", DEFAULT_BUDGET_SECONDS))
    p = _Pass(engine, worker, now or now_utc(), budget, rng)
    for message_id, token in _claim(engine, worker, p.now, batch, "sending", p.stamp()):
        p.count(_recover(p, message_id, token))
    for _ in range(max_batches):
        claimed = _claim(engine, worker, p.now, batch, "pending", p.stamp())
        if not claimed:
            break
        for index, (message_id, token) in enumerate(claimed):
            if p.over():
                _release(engine, claimed[index:])
                p.count("budget_spent")
                return p.counts
            p.count(_dispatch_one(p, message_id, token))
    return p.counts


def counts_by_status(session: Session) -> dict[str, int]:
    """How many messages are in each state."""
    return {str(status): int(n) for status, n in session.execute(
        select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all()}


def open_incidents(session: Session) -> list[DeliveryIncident]:
    return list(session.scalars(select(DeliveryIncident).where(
        DeliveryIncident.status == "open").order_by(DeliveryIncident.id)).all())

