"""Tables of phone follow-up calls: the call log of a task (``call_records``) and the recording
the app keeps for a call (``call_recordings``, the audio in the database: backed up with it,
served by the app only, never by a CDN or a shared folder).

One call record is one phone call a nurse made (or the hospital's call system reported) for a
phone follow-up task::

    CallRecord(task_id=12, patient_id="P2", started_at=<UTC>, duration_seconds=185,
               outcome="reached_ok", notes="恢复良好", caller="nurse_li", source="console")
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow


class CallRecord(Base):
    """One call of a phone follow-up task: when (UTC), how long, the outcome, notes, by whom."""

    __tablename__ = "call_records"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    started_at: Mapped[datetime]
    duration_seconds: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))  # one of engine.tasks.OUTCOMES
    notes: Mapped[str | None] = mapped_column(Text)
    caller: Mapped[str] = mapped_column(String(128))  # username, or the call system's agent id
    source: Mapped[str] = mapped_column(String(16), default="console")  # console | integration
    # A recording the hospital's call system keeps (an address on the hospital network); the
    # app redirects to it only after checking scope and writing the audit row.
    recording_url: Mapped[str | None] = mapped_column(String(1000))
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CallRecording(Base):
    """The audio of one call, kept by the app (type sniffed from its first bytes)."""

    __tablename__ = "call_recordings"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("call_records.id"), unique=True)
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(200))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
