"""The builder's table: one server-side draft per user and definition (survives a reload)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow


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
