"""Tables of the inbound adapters: each HIS view's poll state (watermark, lease, last error), the
column mappings remembered per import source, and patient import jobs (the uploaded file, its
dry-run report and the progress of its apply)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, JSONType, utcnow


class HisViewState(Base):
    """One polled HIS view: how far it has been read, who polls it now, how the last poll went.

    A poller claims the row (``lease_owner``/``lease_until``) with a conditional UPDATE; the
    watermark moves in the transaction that ingests the rows it covers, on the condition that
    the lease is still the poller's."""

    __tablename__ = "his_view_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    watermark: Mapped[str | None] = mapped_column(Text)  # JSON: {"type": …, "value": …}
    lease_owner: Mapped[str | None] = mapped_column(String(96))
    lease_until: Mapped[datetime | None]
    last_poll_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    rows_seen: Mapped[int] = mapped_column(Integer, default=0)
    events_accepted: Mapped[int] = mapped_column(Integer, default=0)


class ImportMapping(Base):
    """The column mapping last used for an import source (``旧随访系统``): field → column header."""

    __tablename__ = "import_mappings"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class ImportJob(Base):
    """One uploaded patient file: ``uploaded`` → ``checked`` (dry run) → ``applying`` → ``done``
    (or ``failed``). Progress lives here, so any process can show it."""

    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="uploaded")
    headers: Mapped[list[str]] = mapped_column(JSONType, default=list)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    done_rows: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))
    finished_at: Mapped[datetime | None]
