"""Domain events: stored first (unique event id), then dispatched in-transaction or queued.

Handlers register in ``registry.catalogue("event_handler")`` as ``name -> handler`` where
``handler(session, event) -> None``; each handler sees every stored event and filters by type.
An engine may also register ``registry.catalogue("event_prefetch")`` as ``name -> prefetch``,
``prefetch(session, rows) -> None``: called once before a batch stored by :func:`record_many` is
dispatched (still one event at a time, to every handler), to read in one query what its handler
would otherwise ask per event.
Recording the same ``event_id`` twice stores and dispatches nothing the second time, so the same
event delivered twice never repeats actions.

    >>> new_event_id().startswith("evt_")
    True
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc, to_local
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry

EventHandler = Callable[[Session, DomainEventRow], None]


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


PENDING, HANDLED, PARKED = "pending", "handled", "parked"


def record(session: Session, type: str, payload: dict[str, Any], *,
           event_id: str | None = None, source: str = "careloop",
           occurred_at: datetime | None = None,
           dispatch: bool = True, defer: bool = False,
           checked: bool = False) -> tuple[DomainEventRow, bool]:
    """Store an event unless its id is known; returns ``(row, created)``.

    Within the caller's transaction. By default the handlers run at once, in the same
    transaction: the event and what its handlers write commit together. ``defer=True`` stores it
    ``pending`` and runs nothing: :mod:`careloop.engine.dispatcher` runs its handlers after the
    caller's commit, on the ticker or a ``careloop worker`` (the events API acknowledges without
    waiting for them). An event of a patient who still has pending events is deferred too, so a
    patient's events are always handled in the order they were stored. ``dispatch=False``
    stores it as handled without running any handler. ``checked=True``: the caller read
    ``event_id`` in this transaction and found no event (the events API): it is neither read
    again nor stored under a savepoint — a concurrent duplicate fails the caller's transaction
    (its flush raises ``IntegrityError``), which the caller retries or reports.
    """
    event_id = event_id or new_event_id()
    if not checked:
        existing = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == event_id)).first()
        if existing is not None:
            return existing, False
    patient = payload.get("patient_id")
    patient_id = patient if isinstance(patient, str) else None
    queued = dispatch and (defer or (patient_id is not None
                                     and has_pending(session, patient_id)))
    now = now_utc()
    row = DomainEventRow(event_id=event_id, type=type, source=source,
                         occurred_at=occurred_at or now, recorded_at=now,
                         payload=payload, patient_id=patient_id,
                         state=PENDING if queued else HANDLED,
                         handled_at=None if queued else now)
    if checked:
        session.add(row)
        session.flush()  # its id, for the acknowledgement
    else:
        with session.begin_nested():
            session.add(row)
            session.flush()
    if dispatch and not queued:
        dispatch_event(session, row)
    return row, True


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event :func:`store` wrote: what its acknowledgement reads."""

    id: int
    event_id: str
    type: str
    recorded_at: datetime
    payload: dict[str, Any]


# Built once: a queued event's insert (Core: no unit of work; the id is its primary key).
_INSERT = insert(DomainEventRow.__table__)  # type: ignore[arg-type]


def store(session: Session, type: str, payload: dict[str, Any], *, event_id: str,
          source: str = "careloop", occurred_at: datetime | None = None) -> StoredEvent:
    """:func:`record` with ``defer=True, checked=True`` in one ``INSERT`` and no ORM row: the
    event is stored ``pending`` for :mod:`careloop.engine.dispatcher`. The caller read
    ``event_id`` in this transaction and found no event; a concurrent duplicate fails the
    insert (``IntegrityError``), which the caller retries or reports."""
    patient = payload.get("patient_id")
    now = now_utc()
    new_id = session.connection().execute(_INSERT, {
        "event_id": event_id, "type": type, "source": source,
        "occurred_at": occurred_at or now, "recorded_at": now, "payload": payload,
        "patient_id": patient if isinstance(patient, str) else None, "state": PENDING,
        "handled_at": None}).inserted_primary_key[0]  # type: ignore[index]
    return StoredEvent(new_id, event_id, type, now, payload)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event for :func:`record_many`: what :func:`record` takes for one."""

    type: str
    payload: dict[str, Any]
    event_id: str
    occurred_at: datetime | None = None


def record_many(session: Session, items: Sequence[NewEvent], *, source: str = "careloop",
                dispatch: bool = True) -> list[tuple[DomainEventRow, bool]]:
    """:func:`record` for a batch: one query for the ids already stored, one multi-row insert,
    then every new event dispatched in order, each to every handler as :func:`record` does.

    Returns ``(row, created)`` per item, in order; an id stored before (or repeated in
    ``items``) gives the stored row and ``False`` and is neither stored nor dispatched again.
    """
    ids = list(dict.fromkeys(item.event_id for item in items))
    known: dict[str, DomainEventRow] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        known.update((row.event_id, row) for row in session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id.in_(ids[start:start + _IN_CHUNK]))))
    # A patient with events still queued keeps their order: their new events queue behind them.
    patients = {p for item in items if isinstance(p := item.payload.get("patient_id"), str)}
    waiting = _pending_patients(session, patients) if dispatch else set()
    out: list[tuple[DomainEventRow, bool]] = []
    new: list[DomainEventRow] = []
    now = now_utc()
    for item in items:
        existing = known.get(item.event_id)
        if existing is not None:
            out.append((existing, False))
            continue
        patient = item.payload.get("patient_id")
        patient_id = patient if isinstance(patient, str) else None
        queued = patient_id is not None and patient_id in waiting
        row = DomainEventRow(event_id=item.event_id, type=item.type, source=source,
                             occurred_at=item.occurred_at or now, recorded_at=now,
                             payload=item.payload, patient_id=patient_id,
                             state=PENDING if queued else HANDLED,
                             handled_at=None if queued else now)
        known[item.event_id] = row
        new.append(row)
        out.append((row, True))
    if new:
        with session.begin_nested():
            session.add_all(new)
            session.flush()
    inline = [row for row in new if row.state == HANDLED]
    if dispatch and inline:
        for _, prefetch in loaded_registry().catalogue("event_prefetch").items():
            prefetch(session, inline)
        for row in inline:
            dispatch_event(session, row)
    return out


def _pending_patients(session: Session, patients: set[str]) -> set[str]:
    """Which of ``patients`` have events whose handlers have not run yet (indexed lookups)."""
    ids = sorted(patients)
    found: set[str] = set()
    for start in range(0, len(ids), _IN_CHUNK):
        found.update(session.scalars(select(DomainEventRow.patient_id).where(
            DomainEventRow.state == PENDING,
            DomainEventRow.patient_id.in_(ids[start:start + _IN_CHUNK])).distinct()))
    return found


# Values per ``IN (…)`` list: far below SQLite's and PostgreSQL's bound-parameter limits.
_IN_CHUNK = 500


def has_pending(session: Session, patient_id: str) -> bool:
    """Whether the patient has events whose handlers have not run yet (one indexed lookup)."""
    return session.scalars(select(DomainEventRow.id).where(
        DomainEventRow.state == PENDING, DomainEventRow.patient_id == patient_id)
        .limit(1)).first() is not None


def dispatch_event(session: Session, event: DomainEventRow) -> None:
    """Call every registered handler with the event, in registration order."""
    for _, handler in loaded_registry().catalogue("event_handler").items():
        handler(session, event)


# --- the daily ``scheduled`` event --------------------------------------------------------------

SCHEDULED = "scheduled"


def daily_at() -> time:
    """Hospital-local time of day of the ``scheduled`` event (``CARELOOP_DAILY_AT``, default
    06:00)."""
    text = os.environ.get("CARELOOP_DAILY_AT", "06:00")
    try:
        hour, minute = (int(part) for part in text.split(":"))
        return time(hour, minute)
    except ValueError:
        raise ValueError(f"CARELOOP_DAILY_AT must be HH:MM, not {text!r}") from None


def emit_daily(engine: Engine, now: datetime | None = None) -> bool:
    """Record today's ``scheduled`` event once the hospital-local clock passes :func:`daily_at`.

    Its id is ``scheduled:<date>``, so however many processes tick, the day's event is stored and
    dispatched once (the handlers — rule sets with ``on: [scheduled]`` — run in the same
    transaction). Payload: ``date`` (ISO), ``weekday`` (1 = Monday … 7 = Sunday), ``day``,
    ``month``. Returns whether this call recorded it.
    """
    from careloop.engine.db import transaction

    local = to_local(now or now_utc())
    at = daily_at()
    if local.time() < at:
        return False
    day = local.date()
    payload = {"date": day.isoformat(), "weekday": day.isoweekday(), "day": day.day,
               "month": day.month, "at": at.strftime("%H:%M")}
    try:
        with transaction(engine) as session:
            _, created = record(session, SCHEDULED, payload, event_id=f"{SCHEDULED}:{day}",
                                source="careloop.ticker", occurred_at=now or now_utc())
    except IntegrityError:  # another process recorded it between our check and our insert
        return False
    return created
