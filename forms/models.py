"""Tables of the form engine: form requests (patient links), submissions and their answer rows.

``submission_answers`` holds one row per answered leaf value (a matrix row, a repeat-group item's
sub-field, one selected code of a multiple choice), so reports can aggregate in SQL without
reading JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow


class FormRequest(Base):
    """A request for one patient to answer one form, reached through a token link.

    Only the SHA-256 of the token is stored; the token itself is only ever in the link.
    """

    __tablename__ = "form_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    form_key: Mapped[str] = mapped_column(String(64), index=True)
    form_version: Mapped[int | None] = mapped_column(Integer)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    # sent | opened | answered | expired | cancelled
    status: Mapped[str] = mapped_column(String(16), default="sent")
    source_ref: Mapped[str | None] = mapped_column(String(255))
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    opened_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    draft: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # why a cancelled request was closed: ``encounter_cancelled`` (the HIS cancelled the stay or
    # the discharge: the link says the follow-up is no longer needed); None otherwise
    closed_reason: Mapped[str | None] = mapped_column(String(32))


class Submission(Base):
    """One answered form: who, for which encounter, through which channel, answers and scores."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_form_key_submitted_at", "form_key", "submitted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    form_key: Mapped[str] = mapped_column(String(64))
    form_version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(80))
    # None only for an anonymous answer at a touchpoint (a QR code at a window or a ward)
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[str | None] = mapped_column(String(64))
    department_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # the touchpoint (``kind: touchpoint``) whose QR code was answered; None for a patient link
    touchpoint_key: Mapped[str | None] = mapped_column(String(64), index=True)
    # who answered for the patient (``daughter``, ``son``, ``spouse`` …); None: the patient
    proxy_relation: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64))
    # web | phone | sms | wechat | kiosk | import
    channel: Mapped[str] = mapped_column(String(16))
    entered_by: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16))
    # received | pending_dissatisfied | in_review | archived | …
    status: Mapped[str] = mapped_column(String(32), default="received")
    answers: Mapped[dict[str, Any]]
    scores: Mapped[dict[str, Any]]
    bands: Mapped[dict[str, Any]]
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)


class SubmissionAnswer(Base):
    """One answered leaf value of a submission (for SQL aggregation by field key)."""

    __tablename__ = "submission_answers"
    __table_args__ = (Index("ix_submission_answers_form_field", "form_key", "field_key"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    form_key: Mapped[str] = mapped_column(String(64))
    field_key: Mapped[str] = mapped_column(String(130))
    row_key: Mapped[str | None] = mapped_column(String(64))
    value_number: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str | None] = mapped_column(Text)
    value_code: Mapped[str | None] = mapped_column(String(64))


class TouchpointVisit(Base):
    """One anonymous answer accepted at a touchpoint, by device: what the rate limit and the
    duplicate suppression count (kept in the database, so every app process sees them).

    ``device`` is the SHA-256 of the device cookie and of the address, keyed with the
    installation's link secret: neither is stored, nor can be recovered from it.
    """

    __tablename__ = "touchpoint_visits"
    __table_args__ = (Index("ix_touchpoint_visits_device_at", "device", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    touchpoint_key: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64), index=True)
    answers_hash: Mapped[str] = mapped_column(String(64))
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
