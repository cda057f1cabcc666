"""The event queue: handlers of stored events run here, after the request that stored them.

An event recorded with ``defer=True`` (the events API) is a ``pending`` row of ``domain_events``
— the table is its own durable queue. :func:`drain` takes a **group** of claimable events (at
most :data:`GROUP` a transaction, one per patient) with one ``UPDATE … WHERE id IN (SELECT …)
RETURNING`` that marks them handled and loads them — on PostgreSQL the inner ``SELECT`` is
``FOR UPDATE SKIP LOCKED``, on SQLite the statement runs under the database's write lock — and
runs every one's handlers in **that same transaction**: the marks and every effect of the
group's handlers commit together, or not at all (exactly once; a process killed mid-way commits
nothing, and its row locks go with its connection). Handlers run as :func:`events.record_many`
runs them (the ``event_prefetch`` hooks once for the group, then one event at a time), so what
does not change between events (current definitions, bundles) is read once per group.

When any handler of the group raises, the group is rolled back and its events are taken again
**one at a time** — :func:`claim` marks them ours (``CLAIM_SECONDS``), :func:`handle` runs each
in **its own transaction**, whose first statement marks it handled *only if still pending and
still ours* — so a failure isolates its own event, exactly as before groups existed.

In order per patient: an event is claimable only while no earlier event of its patient is
pending (claimed elsewhere, or waiting for a retry), so two events of one patient never run at
once or out of order; events of other patients go on. An event whose handlers raise is rolled
back alone and retried with backoff (:data:`BACKOFF`); after :func:`max_attempts` it is
``parked``: listed with the integration queue for IT (``/admin/integration``), retried by hand
with :func:`retry_parked`, and no longer holds back its patient's later events.

Where it runs: the ``events.dispatch`` tick (every process's ticker), :class:`Dispatcher` (a
thread of ``careloop serve`` woken by the events API, polling for other processes' events) and
``careloop worker``. Journeys and tests drain with :func:`drain` — the same code.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Engine, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from careloop.engine.clock import frozen_now, now_utc
from careloop.engine.db import default_engine, transaction
from careloop.engine.events import HANDLED, PARKED, PENDING, dispatch_event
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry

log = logging.getLogger("careloop.engine.dispatcher")

CLAIM_SECONDS = 300
BATCH = 100
# Events handled in one transaction by :func:`drain`: the reads they share are made once, and
# on SQLite the write lock is held for at most a group's handlers (a few tens of ms), not more.
GROUP = 20
# Seconds :class:`Dispatcher` lets events gather after being woken, unless a group's worth
# arrived sooner: a group costs the same statements however many events it holds (the take,
# the definitions' fingerprint, the prefetches, the commit: ~5 ms of CPU on PostgreSQL), so
# events arriving one by one no longer pay them each.
GATHER_SECONDS = 0.05
# Seconds before the 1st, 2nd, … retry of an event whose handlers raised.
BACKOFF = (5, 30, 120, 600)


def worker_name() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def max_attempts() -> int:
    """How often an event's handlers run before it is parked (``CARELOOP_EVENT_ATTEMPTS``, 5)."""
    try:
        return max(1, int(os.environ.get("CARELOOP_EVENT_ATTEMPTS", "5")))
    except ValueError:
        return 5


def _claimable(now: Any) -> Any:
    """Claimable at ``now`` (an instant, or a bound parameter standing for one)."""
    earlier = aliased(DomainEventRow)
    blocked = exists().where(earlier.state == PENDING,
                             earlier.patient_id == DomainEventRow.patient_id,
                             earlier.id < DomainEventRow.id)
    return and_(DomainEventRow.state == PENDING,
                or_(DomainEventRow.available_at.is_(None), DomainEventRow.available_at <= now),
                or_(DomainEventRow.claimed_until.is_(None),
                    DomainEventRow.claimed_until < now),
                ~blocked)


@cache
def _take_statement(dialect: str, limit: int) -> Any:
    """The statement of :func:`take`, built once per dialect and group size: the instants are
    bound parameters (``now``, ``handled_at``), so a group no longer builds the expression tree
    again (a fifth of the dispatcher's CPU when groups are small)."""
    moment = DomainEventRow.claimed_until.type
    query = (select(DomainEventRow.id).where(_claimable(bindparam("now", type_=moment)))
             .order_by(DomainEventRow.id).limit(limit))
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return (update(DomainEventRow).where(DomainEventRow.id.in_(query.scalar_subquery()))
            .values(state=HANDLED, handled_at=bindparam("handled_at", type_=moment),
                    claimed_by=None, claimed_until=None)
            .returning(DomainEventRow))


def take(session: Session, now: datetime, limit: int = GROUP) -> list[DomainEventRow]:
    """Mark up to ``limit`` claimable events handled and load them, oldest first, in one
    statement of the caller's transaction: their handlers must run in it (commit or nothing)."""
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    rows = session.scalars(_take_statement(engine.dialect.name, limit),
                           {"now": now, "handled_at": now_utc()},
                           execution_options={"synchronize_session": False}).all()
    return sorted(rows, key=lambda row: row.id)


def _handle_group(engine: Engine, worker: str, limit: int, report: DrainReport) -> bool:
    """Take a group of events and run their handlers in one transaction; on a failure, run
    them again one event per transaction (:func:`claim`, :func:`handle`). False when no event
    was claimable."""
    taken: list[int] = []
    now = now_utc()
    try:
        with transaction(engine) as session:
            rows = take(session, now, limit)
            taken = [row.id for row in rows]
            if rows:
                for _, prefetch in loaded_registry().catalogue("event_prefetch").items():
                    prefetch(session, rows)
            for row in rows:
                with frozen_now(row.recorded_at):
                    dispatch_event(session, row)
    except Exception as exc:
        if not taken:
            raise  # the database, not a handler: the caller decides
        log.info("event group of %d: %s; handled one at a time", len(taken),
                 type(exc).__name__)
        for event_id in claim_ids(engine, worker, now, taken):
            outcome = handle(engine, event_id, worker)
            if outcome:
                report.handled += 1
            elif outcome is False:
                report.failed += 1
        return True
    report.handled += len(taken)
    return bool(taken)


def claim_ids(engine: Engine, worker: str, now: datetime, ids: list[int]) -> list[int]:
    """Claim those of ``ids`` that are still claimable (oldest first)."""
    until = now + timedelta(seconds=CLAIM_SECONDS)
    with transaction(engine) as session:
        return sorted(session.scalars(update(DomainEventRow).where(
            DomainEventRow.id.in_(ids), _claimable(now))
            .values(claimed_by=worker, claimed_until=until)
            .returning(DomainEventRow.id), execution_options={"synchronize_session": False})
            .all())


def claim(engine: Engine, worker: str, now: datetime, limit: int = BATCH) -> list[int]:
    """Claim up to ``limit`` pending events, at most one per patient; their ids, oldest first."""
    until = now + timedelta(seconds=CLAIM_SECONDS)
    query = (select(DomainEventRow.id).where(_claimable(now))
             .order_by(DomainEventRow.id).limit(limit))
    with transaction(engine) as session:
        if engine.dialect.name == "postgresql":
            ids = list(session.scalars(query.with_for_update(skip_locked=True)).all())
            if ids:
                session.execute(update(DomainEventRow).where(DomainEventRow.id.in_(ids))
                                .values(claimed_by=worker, claimed_until=until))
            return ids
        return sorted(session.scalars(update(DomainEventRow).where(
            DomainEventRow.id.in_(query.scalar_subquery()))
            .values(claimed_by=worker, claimed_until=until)
            .returning(DomainEventRow.id)).all())


def handle(engine: Engine, event_id: int, worker: str) -> bool | None:
    """Run the handlers of one claimed event in one transaction, at the instant it was stored.

    Returns True when handled, None when another process had it (the claim expired), False
    when its handlers raised (rolled back; retried later or parked)."""
    try:
        with transaction(engine) as session:
            marked = session.execute(update(DomainEventRow).where(
                DomainEventRow.id == event_id, DomainEventRow.state == PENDING,
                DomainEventRow.claimed_by == worker).values(
                state=HANDLED, handled_at=now_utc(), claimed_by=None, claimed_until=None))
            if marked.rowcount != 1:  # type: ignore[attr-defined]
                return None
            row = session.get(DomainEventRow, event_id)
            assert row is not None  # just updated
            with frozen_now(row.recorded_at):
                dispatch_event(session, row)
    except Exception as exc:  # a handler's failure isolates its event; the type, never the data
        log.warning("event %s: handlers failed (%s); retried later", event_id,
                    type(exc).__name__, exc_info=True)
        _failed(engine, event_id, worker, type(exc).__name__)
        return False
    return True


def _failed(engine: Engine, event_id: int, worker: str, error: str) -> None:
    with transaction(engine) as session:
        row = session.get(DomainEventRow, event_id)
        if row is None or row.state != PENDING or row.claimed_by != worker:
            return
        row.attempts += 1
        row.last_error = error[:200]
        row.claimed_by = row.claimed_until = None
        if row.attempts >= max_attempts():
            row.state = PARKED
        else:
            delay = BACKOFF[min(row.attempts, len(BACKOFF)) - 1]
            row.available_at = now_utc() + timedelta(seconds=delay)


@dataclass(slots=True)
class DrainReport:
    handled: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"handled": self.handled, "failed": self.failed}


def drain(engine: Engine | None = None, *, worker: str | None = None, batch: int = GROUP,
          max_batches: int = 100_000) -> DrainReport:
    """Handle pending events until none is claimable (a retry waiting for its time is not),
    at most ``batch`` (≤ :data:`GROUP`) in a transaction."""
    engine = engine or default_engine()
    worker = worker or worker_name()
    report = DrainReport()
    for _ in range(max_batches):
        if not _handle_group(engine, worker, min(batch, GROUP), report):
            break
    return report


def tick(engine: Engine) -> None:
    """The ``events.dispatch`` tick: drain what other processes' dispatchers left."""
    drain(engine)


# --- what IT sees and does ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueState:
    """The queue at a glance: pending events, the oldest one's storing time, parked ones."""

    pending: int
    oldest_pending_at: datetime | None
    parked: int


def state(engine: Engine | None = None) -> QueueState:
    with transaction(engine) as session:
        pending, oldest = session.execute(
            select(func.count(), func.min(DomainEventRow.recorded_at))
            .where(DomainEventRow.state == PENDING)).one()
        parked = session.scalar(select(func.count()).where(DomainEventRow.state == PARKED))
    if isinstance(oldest, str):  # SQLite hands back text for an aggregate
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        from datetime import UTC

        oldest = oldest.replace(tzinfo=UTC)
    return QueueState(int(pending or 0), oldest, int(parked or 0))


def parked(engine: Engine | None = None, limit: int = 200) -> list[DomainEventRow]:
    """Events whose handlers failed every attempt, oldest first (detached rows)."""
    with transaction(engine) as session:
        rows = list(session.scalars(select(DomainEventRow).where(
            DomainEventRow.state == PARKED).order_by(DomainEventRow.id).limit(limit)).all())
        session.expunge_all()
    return rows


def retry_parked(engine: Engine | None, event_id: int) -> bool:
    """Put a parked event back in the queue (attempts from zero); False if it is not parked."""
    with transaction(engine) as session:
        done = session.execute(update(DomainEventRow).where(
            DomainEventRow.id == event_id, DomainEventRow.state == PARKED).values(
            state=PENDING, attempts=0, available_at=None, claimed_by=None,
            claimed_until=None))
        return bool(done.rowcount)  # type: ignore[attr-defined]


# --- the serving process's dispatcher thread -------------------------------------------------


class Dispatcher:
    """A daemon thread draining the queue: woken at once by :func:`wake` (an event stored in
    this process), and every ``poll_seconds`` for events other processes stored."""

    def __init__(self, engine: Engine | None = None, poll_seconds: float = 1.0) -> None:
        self.engine = engine
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._full = threading.Event()  # a group's worth of events stored since the last drain
        self._woken = 0  # events stored in this process since the last drain (a hint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="careloop-dispatcher",
                                        daemon=True)

    def start(self) -> Dispatcher:
        _running.append(self)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._full.set()
        self._thread.join(timeout)
        if self in _running:
            _running.remove(self)

    def wake(self) -> None:
        self._woken += 1
        if self._woken >= GROUP:
            self._full.set()
        self._wake.set()

    def _run(self) -> None:
        worker = worker_name()
        while not self._stop.is_set():
            self._wake.clear()
            if self._woken:  # woken by events stored here: let a group gather first
                self._full.wait(GATHER_SECONDS)
            self._woken = 0
            self._full.clear()
            try:
                drain(self.engine, worker=worker)
            except Exception as exc:  # the database away: try again at the next poll
                log.error("event dispatcher: %s", type(exc).__name__)
            self._wake.wait(self.poll_seconds)


_running: list[Dispatcher] = []


def wake() -> None:
    """Tell this process's dispatcher threads that an event was just committed."""
    for dispatcher in _running:
        dispatcher.wake()
