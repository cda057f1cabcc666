"""Domain events: stored first (append-only, unique event id), then dispatched in-transaction.

Handlers register in ``registry.catalogue("event_handler")`` as ``name -> handler`` where
``handler(session, event) -> None``; each handler sees every stored event and filters by type.
Recording the same ``event_id`` twice stores and dispatches nothing the second time, so the same
event delivered twice never repeats actions.

    >>> new_event_id().startswith("evt_")
    True
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry

EventHandler = Callable[[Session, DomainEventRow], None]


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def record(session: Session, type: str, payload: dict[str, Any], *,
           event_id: str | None = None, source: str = "careloop",
           occurred_at: datetime | None = None,
           dispatch: bool = True) -> tuple[DomainEventRow, bool]:
    """Store an event unless its id is known; returns ``(row, created)``.

    Within the caller's transaction: the event, and whatever its handlers write, commit together.
    """
    event_id = event_id or new_event_id()
    existing = session.scalars(select(DomainEventRow).where(
        DomainEventRow.event_id == event_id)).first()
    if existing is not None:
        return existing, False
    row = DomainEventRow(event_id=event_id, type=type, source=source,
                         occurred_at=occurred_at or now_utc(), recorded_at=now_utc(),
                         payload=payload)
    with session.begin_nested():
        session.add(row)
        session.flush()
    if dispatch:
        dispatch_event(session, row)
    return row, True


def dispatch_event(session: Session, event: DomainEventRow) -> None:
    """Call every registered handler with the event, in registration order."""
    for _, handler in loaded_registry().catalogue("event_handler").items():
        handler(session, event)
