"""A patient's question to a consult desk, and the links that open its thread on the phone.

    consults                 one question: who asked, which desk (department), the task that
                             carries its answer time, the answer, who gave it and when
    consult_links            /q/{token}: 192-bit random token stored as SHA-256, expiring
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow


class Consult(Base):
    """One question a patient asked through a patient link, and its answer."""

    __tablename__ = "consults"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    desk_key: Mapped[str] = mapped_column(String(64))
    department_id: Mapped[str | None] = mapped_column(ForeignKey("departments.id"), index=True)
    question: Mapped[str] = mapped_column(Text)
    locale: Mapped[str] = mapped_column(String(16), default="zh-CN")
    via: Mapped[str] = mapped_column(String(8))  # the kind of link it was asked from: d r f q
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | answered
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    asked_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime]
    answer: Mapped[str | None] = mapped_column(Text)
    canned_key: Mapped[str | None] = mapped_column(String(64))
    answered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    answered_at: Mapped[datetime | None]
    read_at: Mapped[datetime | None]


class ConsultLink(Base):
    """A link that opens a consult's thread on the patient's phone (``/q/{token}``)."""

    __tablename__ = "consult_links"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]
