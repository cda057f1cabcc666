"""The builder's table: one server-side draft per user and definition (survives a reload)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, JSONType, utcnow


class BuilderDraft(Base):
    """A definition being edited: its YAML/JSON text, not yet published."""

    __tablename__ = "builder_drafts"
    __table_args__ = (UniqueConstraint("user_id", "kind", "key",
                                       name="uq_builder_drafts_user_id_kind_key"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    app_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    base_version: Mapped[int | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PublishRequest(Base):
    """A publish that waits for a second person's approval (a definition that sends data out
    or acts hospital-wide). The approval is a run of the ``definition_approval`` flow; its task
    is decided at ``POST /api/v1/tasks/{id}/decision`` and the definition lands only then.

    ``status``: ``awaiting`` → ``published`` (approved and written) | ``rejected`` |
    ``stale`` (approved, but the definition changed meanwhile: nothing overwritten)."""

    __tablename__ = "publish_requests"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(80))
    base_version: Mapped[int | None]
    reasons: Mapped[list[str]] = mapped_column(JSONType, default=list)
    confirm_orphans: Mapped[bool] = mapped_column(default=False)
    requested_by: Mapped[str] = mapped_column(String(128))
    requested_by_user_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="awaiting", index=True)
    run_id: Mapped[int | None] = mapped_column(Integer)
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[datetime | None]
    version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
