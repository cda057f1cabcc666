"""Tables of the education library: what was sent to whom (and opened, read to the end), and the
videos and PDFs staff uploaded.

    education_sends: one row per item sent to a patient — its link token (SHA-256 only), the item
        and version, the owning department, when it was sent, opened and read to the end
    education_media: an uploaded file, kept in the database and named by its SHA-256, so a
        published item always shows the same bytes (files are never replaced, only added)
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow


class EducationSend(Base):
    """An education item sent to a patient (``/e/{token}``)."""

    __tablename__ = "education_sends"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    article_key: Mapped[str] = mapped_column(String(64), index=True)
    article_version: Mapped[int] = mapped_column(Integer)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[str | None] = mapped_column(ForeignKey("encounters.id"))
    department_id: Mapped[str] = mapped_column(String(64), index=True)  # the item's owner
    stage: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[int | None] = mapped_column(Integer)
    source_ref: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="sent")  # sent | opened | read
    sent_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]
    read_at: Mapped[datetime | None]


class EducationMedia(Base):
    """A video or PDF uploaded for the library (the bytes themselves)."""

    __tablename__ = "education_media"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    department_id: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
