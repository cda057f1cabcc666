"""Tables of the flow engine: runs, step runs, history, durable timers, incidents, outbox, API keys,
HIS events parked for IT (the integration queue).

Everything another process needs lives here (never in process memory): a timer is a row claimed
atomically by one sweeper, an outbox message is a row claimed by one dispatcher.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from careloop.engine import txcache
from careloop.engine.models import Base, JSONType, utcnow


class FlowRun(Base):
    """One run of one flow version (pinned: ``flow_version`` never changes)."""

    __tablename__ = "flow_runs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    flow_key: Mapped[str] = mapped_column(String(64), index=True)
    flow_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|completed|…
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[str | None] = mapped_column(ForeignKey("encounters.id"), index=True)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    # ``<flow>:<once>:<patient or encounter>`` while the run counts for its trigger's ``once``
    # (see TriggerSpec.once_key); unique, so two processes never start the same run twice.
    # Cleared when the run is cancelled, or when it ends if ``once`` is ``…_while_active``.
    once_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class StepRun(Base):
    """One execution of one step in a run (a loop makes several rows for the same key)."""

    __tablename__ = "flow_step_runs"
    __table_args__ = (Index("ix_flow_step_runs_waiting", "waiting_for", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("flow_runs.id"), index=True)
    step_key: Mapped[str] = mapped_column(String(64))
    step_type: Mapped[str] = mapped_column(String(32))
    # pending | waiting | done | cancelled | failed | skipped
    status: Mapped[str] = mapped_column(String(16), default="pending")
    parent_id: Mapped[int | None] = mapped_column(Integer)  # the parallel step run of a branch
    waiting_for: Mapped[str | None] = mapped_column(String(128))  # event type, "tasks", "timer"
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class RunHistory(Base):
    """Append-only history of a run: what happened, when, at which step."""

    __tablename__ = "flow_run_history"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("flow_runs.id"), index=True)
    step_key: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class FlowTimer(Base):
    """A durable timer: fires once at ``due_at`` (claimed by one sweeper, with claim expiry)."""

    __tablename__ = "flow_timers"
    __table_args__ = (Index("ix_flow_timers_status_due", "status", "due_at"),
                      Index("ix_flow_timers_step_run", "step_run_id"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("flow_runs.id"), index=True)
    step_run_id: Mapped[int | None] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(16))  # resume | reminder | timeout | retry
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|fired|cancelled
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    fired_at: Mapped[datetime | None]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # set instead of step_run_id by a step whose row is not written yet: the flush writes the
    # step run first and fills step_run_id (no foreign key in the table, so declared here)
    step_run: Mapped[StepRun | None] = relationship(
        primaryjoin="foreign(FlowTimer.step_run_id) == StepRun.id", lazy="raise")


class Incident(Base):
    """A step that failed after its retries; an administrator retries or skips it."""

    __tablename__ = "flow_incidents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("flow_runs.id"), index=True)
    step_run_id: Mapped[int] = mapped_column(ForeignKey("flow_step_runs.id"))
    step_key: Mapped[str] = mapped_column(String(64))
    error: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|retried|skipped
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(128))


class OutboxMessage(Base):
    """A message written in the producing step's transaction, dispatched later by a channel."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_status_next", "status", "next_attempt_at"),
                      Index("ix_outbox_messages_provider_ref", "provider_ref"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    template_key: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    locale: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    urgent: Mapped[bool] = mapped_column(default=False)
    # pending | sending (claimed, the send started: committed before the channel is called) |
    # sent | logged (log channel: nothing delivered) | dead (retries gave up: a dead letter) |
    # unknown (sent or not, nobody can tell: a person resolves) | expired | suppressed |
    # cancelled | failed (before 0018: now dead)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    source_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    # why it failed, expired, was suppressed or cancelled: a code the admin page puts in words
    reason: Mapped[str | None] = mapped_column(String(32))
    expires_at: Mapped[datetime | None]  # the moment has passed: not sent after this
    link_expires_at: Mapped[datetime | None]  # the link it carries stops working then
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    # 0018 delivery: the claim's token (the outcome commits only under it), when the current
    # attempt started (the send-once record), when sending first failed (the retry horizon runs
    # from it), the dead letter's time and incident, the provider's reference
    claim_token: Mapped[str | None] = mapped_column(String(32))
    attempt_started_at: Mapped[datetime | None]
    first_failed_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None]
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("delivery_incidents.id"))
    provider_ref: Mapped[str | None] = mapped_column(String(255))
    # 0025 provider templates and receipts: each provider's rendered template entry (an SMS
    # gateway's template code and parameters, a WeChat template's data), the reference of the
    # link the message carries (its first ``/f/`` or ``/d/`` token's ``token_ref``), what the
    # provider reported back later (delivered | failed | read, when, its words) and when the
    # patient first opened the link
    provider_params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    link_ref: Mapped[str | None] = mapped_column(String(16), index=True)
    receipt_state: Mapped[str | None] = mapped_column(String(16))
    receipt_at: Mapped[datetime | None]
    receipt_detail: Mapped[str | None] = mapped_column(String(255))
    opened_at: Mapped[datetime | None]


class DeliveryIncident(Base):
    """A channel that let messages die: opened by the first dead letter on the channel, counts
    the next ones while open; a person resolves it (after resending or cancelling them)."""

    __tablename__ = "delivery_incidents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | resolved
    reason: Mapped[str | None] = mapped_column(String(32))  # the first dead letter's reason
    dead_count: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(128))


class DischargeDocument(Base):
    """What the HIS sent with ``encounter.discharged`` for the patient to read: the discharge
    summary text and the take-home medicines (``[{name, dose, usage, days, note}]``)."""

    __tablename__ = "discharge_documents"

    encounter_id: Mapped[str] = mapped_column(ForeignKey("encounters.id"), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    summary: Mapped[str | None] = mapped_column(Text)
    medications: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentLink(Base):
    """A patient's link to one document page (``/d/{token}``): 192-bit random token, stored only
    as SHA-256, expiring, bound to one encounter and one document kind."""

    __tablename__ = "document_links"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # discharge_summary | medication_guidance
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[str] = mapped_column(ForeignKey("encounters.id"))
    source_ref: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    opened_at: Mapped[datetime | None]


class TaskOverdueMark(Base):
    """``task.overdue`` was emitted for this task at this due time (at most once each)."""

    __tablename__ = "flow_task_overdue"
    __table_args__ = (UniqueConstraint("task_id", "due_at", name="uq_flow_task_overdue_task_due"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    due_at: Mapped[datetime]
    emitted_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A key the HIS uses for ``POST /api/v1/events``; only its SHA-256 hash is stored.

    ``scopes`` say what the key may do (``events:write``, ``readback:read``,
    ``incidents:write``); a key past ``expires_at`` or revoked authenticates nothing.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    scopes: Mapped[list[Any] | None] = mapped_column(JSONType)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(128))


class ParkedEvent(Base):
    """An HIS event that named a department, ward or staff code the hospital has not set up,
    kept (``CARELOOP_UNKNOWN_CODES=park``) for IT to retry once the code exists. Only the event
    as the HIS sent it and its problems; nothing of it reached the domain tables or engines."""

    __tablename__ = "integration_queue"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    event: Mapped[dict[str, Any]] = mapped_column(default=dict)
    problems: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"errors": [{path, message}]}
    status: Mapped[str] = mapped_column(String(16), default="parked", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    # unknown_code | unknown_patient (None: parked before 0021, for an unknown code)
    reason: Mapped[str | None] = mapped_column(String(32))
    # the patient an ``unknown_patient`` event waits for (replayed when that patient arrives)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # when the sweep found it parked beyond the horizon (the integration page's incident)
    incident_at: Mapped[datetime | None]


class HisEventFingerprint(Base):
    """What an accepted HIS event looked like, one salted hash per field path
    (``{"$.payload.discharged_at": "…"}``): a re-sent event id with another body is answered 409
    naming the differing paths, without keeping the personal values the event log leaves out."""

    __tablename__ = "his_event_fingerprints"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboundHost(Base):
    """A host outbound calls (``call_webhook`` steps) may reach: the administrator's allow-list.

    ``allow_private`` lets a listed host resolve to a private, loopback or link-local address
    (an HIS inside the hospital network); without it such an address is refused."""

    __tablename__ = "outbound_hosts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    allow_private: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str | None] = mapped_column(Text)
    added_by: Mapped[str | None] = mapped_column(String(128))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookCall(Base):
    """A ``call_webhook`` step's request, written in the step's transaction and sent later by
    the sweep (never inside a patient's request). ``error`` holds only words a person may read
    ("host not on the allow-list", "connection failed", "HTTP 500") — never an address, a port
    or a body, so the stored errors cannot map the network."""

    __tablename__ = "webhook_calls"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    run_id: Mapped[int | None] = mapped_column(Integer, index=True)
    step_run_id: Mapped[int | None] = mapped_column(Integer)
    step_key: Mapped[str | None] = mapped_column(String(64))
    flow_key: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class Hl7Message(Base):
    """An HL7 v2 message as received (bytes and charset), stored in the transaction that ingests
    its events, with the ACK answered: a re-sent MSH-10 from the same sender gets that ACK
    again; one in ``error`` is kept for IT to replay after fixing the mapping or a code table.
    ``control_id`` is NULL for a message rejected before its MSH-10 could be read."""

    __tablename__ = "hl7_messages"
    __table_args__ = (UniqueConstraint("sending_application", "sending_facility", "control_id",
                                       name="uq_hl7_messages_sender_control_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    sending_application: Mapped[str] = mapped_column(String(180))
    sending_facility: Mapped[str] = mapped_column(String(180))
    control_id: Mapped[str | None] = mapped_column(String(64))
    message_type: Mapped[str | None] = mapped_column(String(16))  # ADT^A03, ORU^R01
    version: Mapped[str | None] = mapped_column(String(16))
    charset: Mapped[str | None] = mapped_column(String(32))  # the Python codec used
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # accepted | parked (an unknown code, kept in the integration queue) | error | rejected
    state: Mapped[str] = mapped_column(String(16), index=True)
    ack_code: Mapped[str | None] = mapped_column(String(2))
    ack: Mapped[str | None] = mapped_column(Text)
    errors: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    event_ids: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    merged_patient_id: Mapped[str | None] = mapped_column(String(64))  # A40: MRG-1
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    processed_at: Mapped[datetime | None]


class ResultLink(Base):
    """A patient's link to the laboratory results staff pushed (``/r/{token}``): 192-bit random
    token stored only as SHA-256, expiring; ``result_ids`` are the ``result.recorded`` event ids
    it shows (only those: a result recorded later needs a new notice)."""

    __tablename__ = "result_links"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    result_ids: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]


class SummaryLink(Base):
    """A stage summary staff sent the patient (``/s/{token}``): the PDF exactly as it was sent
    (in the patient's language, name masked, what the sender could see), its period, and a
    192-bit random token stored only as SHA-256, expiring."""

    __tablename__ = "summary_links"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]


# A run, its steps and the documents its messages link to are read again by each step of a
# transaction: kept once read (engine/txcache.py).
for _cls in (FlowRun, StepRun, DischargeDocument):
    txcache.pin_class(_cls)


def timer_status_is(dialect: str, status: str) -> ColumnElement[bool]:
    """``flow_timers.status = status`` for a statement that picks its timers by id, step run or
    run: SQLite, given bound parameters, prefers the ``(status, due_at)`` index for it and reads
    every pending timer (a million of them for each batch of a sweep); its no-op unary ``+``
    keeps it on the primary key or the step-run and run indexes."""
    if dialect == "sqlite":
        return literal_column("+flow_timers.status") == status
    return FlowTimer.status == status
