"""Tables of the report engine: alert state per (alert, group) and the result cache.

Both live in the database so several app processes agree (no in-memory state another process
needs). The cache key includes the viewer's department scope, so a cached result can never leak
another department's figures.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow


class AlertState(Base):
    """Where one alert stands for one group: ``ok`` → ``pending`` → ``firing`` → ``ok`` …"""

    __tablename__ = "report_alert_states"
    __table_args__ = (UniqueConstraint("alert_key", "group_value",
                                       name="uq_report_alert_states_alert_group"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    alert_key: Mapped[str] = mapped_column(String(64))
    group_value: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="ok")  # ok | pending | firing
    since: Mapped[datetime] = mapped_column(default=utcnow)
    last_value: Mapped[float | None] = mapped_column(Float)
    last_evaluated_at: Mapped[datetime] = mapped_column(default=utcnow)
    fired_count: Mapped[int] = mapped_column(default=0)


class ReportCache(Base):
    """A dataset result keyed by (definition hash, filters, scope, data fingerprint)."""

    __tablename__ = "report_cache"
    __table_args__ = (Index("ix_report_cache_dataset", "dataset_key"),)

    cache_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    dataset_key: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(128))
    result: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
