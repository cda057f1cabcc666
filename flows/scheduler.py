"""Durable timers and the one sweep that fires them.

Every wait is a row in ``flow_timers`` (indexed by status and due time). :func:`run_due` claims
due timers in bounded batches — PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED``, SQLite a
conditional ``UPDATE … WHERE claimed_until IS NULL OR claimed_until < now`` — then fires the
claimed batch in **one transaction**, each timer inside its own savepoint whose first statement
marks the timer fired *only if still pending and still ours*: a timer's effects (messages, tasks,
next timers) commit together with its mark, or not at all. A timer whose firing fails is rolled
back to its savepoint alone — the others of the batch commit — and is then fired on its own
(:func:`fire`), where its error is handled exactly as before batching. A process killed
mid-sweep commits nothing of the batch under way; its claims expire after ``CLAIM_SECONDS`` and
are swept again.

The process's one ticker job (:mod:`careloop.engine.ticker`) calls :func:`run_due` through the
``flows.sweep`` tick; there is never one job per patient.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, distinct, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from careloop.engine import events, store, txcache
from careloop.engine.clock import frozen_now, hospital_tz, now_utc
from careloop.engine.db import default_engine, transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department, Encounter, Patient, PatientTag, Task
from careloop.engine.errors import CareloopError
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import escalate_overdue
from careloop.flows import webhooks
from careloop.flows.models import FlowRun, FlowTimer, StepRun, TaskOverdueMark, timer_status_is
from careloop.flows.outbox import dispatch_due
from careloop.flows.runtime import (
    OPEN_STEP,
    Exec,
    know_open_steps,
    optimistic,
    prefetch_references,
    retry_step,
    spec_of,
    start,
)
from careloop.flows.spec import FlowSpec

log = logging.getLogger("careloop.flows.scheduler")

CLAIM_SECONDS = 300
BATCH = 100


def worker_id() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class SweepReport:
    fired: int = 0
    overdue: int = 0
    cron_runs: int = 0
    events: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"fired": self.fired, "overdue": self.overdue, "cron_runs": self.cron_runs,
                "events": self.events,
                "messages": self.messages, "webhooks": self.webhooks}


def _claimable(now: datetime) -> Any:
    return and_(FlowTimer.status == "pending", FlowTimer.due_at <= now,
                or_(FlowTimer.claimed_until.is_(None), FlowTimer.claimed_until < now))


def claim(engine: Engine, worker: str, now: datetime, limit: int = BATCH) -> list[int]:
    """Claim up to ``limit`` due timers for ``worker``; returns their ids, oldest first."""
    until = now + timedelta(seconds=CLAIM_SECONDS)
    with transaction(engine) as session:
        query = (select(FlowTimer.id).where(_claimable(now))
                 .order_by(FlowTimer.due_at, FlowTimer.id).limit(limit))
        if engine.dialect.name == "postgresql":
            # one statement: the subquery locks the rows it picks, skipping those another
            # sweep holds, and the update claims exactly those
            return sorted(session.scalars(update(FlowTimer).where(
                FlowTimer.id.in_(query.with_for_update(skip_locked=True).scalar_subquery()))
                .values(claimed_by=worker, claimed_until=until)
                .returning(FlowTimer.id)).all())
        # SQLite: one statement, atomic against other processes (it runs under the database's
        # write lock), so the rows its subquery picks are still claimable when it updates them
        return sorted(session.scalars(update(FlowTimer).where(
            FlowTimer.id.in_(query.scalar_subquery()))
            .values(claimed_by=worker, claimed_until=until)
            .returning(FlowTimer.id)).all())


def fire_batch(engine: Engine, timer_ids: list[int], worker: str) -> tuple[int, list[int]]:
    """Fire claimed timers in one transaction. Returns how many fired and the ids whose firing
    raised (rolled back to their savepoint and back to ``pending``, still claimed: the caller
    fires each alone with :func:`fire`).

    One ``UPDATE … RETURNING`` marks the batch fired (only timers still pending and ours) and
    returns the timers; one query loads their runs, patients, stays, tags and open step runs;
    then the timers with work to
    do run together in one savepoint, their steps without savepoints of their own
    (:func:`~careloop.flows.runtime.optimistic`). When one of them raises, that savepoint is
    rolled back and each timer runs again in its own savepoint. A timer with nothing to do (its
    run ended) costs no statement of its own."""
    if not timer_ids:
        return 0, []
    failed: list[int] = []
    with transaction(engine) as session:
        # the marked rows come back whole: no second query for the timers
        timers = sorted(session.scalars(
            update(FlowTimer).where(FlowTimer.id.in_(timer_ids),
                                    timer_status_is(engine.dialect.name, "pending"),
                                    FlowTimer.claimed_by == worker)
            .values(status="fired", fired_at=now_utc()).returning(FlowTimer),
            execution_options={"synchronize_session": False}).all(),
            key=lambda t: (t.due_at, t.id))
        fired_ids = [t.id for t in timers]
        if not fired_ids:
            return 0, []
        step_run_ids = {t.step_run_id for t in timers if t.step_run_id}
        run_ids = {t.run_id for t in timers if t.run_id}
        # held for the batch: _dispatch_timer's gets, the steps' expression contexts and a
        # run's end (its open steps) then read nothing
        batch_runs, batch_steps = _preload(session, run_ids, step_run_ids)
        know_open_steps(session, run_ids, batch_steps)
        working = [timer for timer in timers if _has_work(session, timer)]
        try:  # the batch's templates and forms in one query (a missing flow fails below)
            running = {run.id: run for run in batch_runs if run.status == "running"}
            prefetch_references(session, [spec_of(session, run) for run in running.values()])
        except CareloopError:
            pass
        mark = txcache.deferred_mark(session)
        try:  # the whole batch in one savepoint: two statements a batch, not a timer
            with session.begin_nested(), optimistic(session):
                for timer in working:
                    with frozen_now(timer.due_at):
                        _dispatch_timer(session, timer)
            return len(fired_ids), []
        except Exception:
            txcache.drop_deferred_since(session, mark)
            log.info("a timer failed in a batch; firing the batch timer by timer")
        for timer in working:
            mark = txcache.deferred_mark(session)
            try:
                with session.begin_nested(), frozen_now(timer.due_at), optimistic(session):
                    _dispatch_timer(session, timer)
            except Exception:
                txcache.drop_deferred_since(session, mark)
                log.warning("timer %s failed in a batch; firing it on its own", timer.id,
                            exc_info=True)
                failed.append(timer.id)
                session.execute(update(FlowTimer).where(FlowTimer.id == timer.id)
                                .values(status="pending", fired_at=None))
    return len(fired_ids) - len(failed), failed


def _preload(session: Any, run_ids: set[int],
             step_run_ids: set[int]) -> tuple[list[FlowRun], list[StepRun]]:
    """The batch's runs with their patients, encounters, the encounters' departments, patient
    tags, the timers' step runs and every open step run of the runs, in one query (patients,
    encounters and departments kept for the transaction by engine/txcache.py)."""
    if not run_ids:
        return [], []
    which: ColumnElement[bool] = StepRun.status.in_(OPEN_STEP)
    if step_run_ids:
        which = or_(which, StepRun.id.in_(step_run_ids))
    runs: dict[int, FlowRun] = {}
    steps: dict[int, StepRun] = {}
    tags: dict[str, set[str]] = {}
    for run, patient, _encounter, _department, tag, step_run in session.execute(
            select(FlowRun, Patient, Encounter, Department, PatientTag.tag, StepRun)
            .outerjoin(Patient, Patient.id == FlowRun.patient_id)
            .outerjoin(Encounter, Encounter.id == FlowRun.encounter_id)
            .outerjoin(Department, Department.id == Encounter.department_id)
            .outerjoin(PatientTag, PatientTag.patient_id == FlowRun.patient_id)
            .outerjoin(StepRun, (StepRun.run_id == FlowRun.id) & which)
            .where(FlowRun.id.in_(run_ids))).all():
        runs[run.id] = run
        if step_run is not None:
            steps[step_run.id] = step_run
        if patient is not None:
            held = tags.setdefault(patient.id, set())
            if tag is not None:
                held.add(tag)
    for pid, found in tags.items():
        txcache.remember(session, ("context.tags", pid), _constant(sorted(found)),
                         (PatientTag,))
    return list(runs.values()), list(steps.values())


def _constant(value: list[str]) -> Callable[[], list[str]]:
    return lambda: value


def _has_work(session: Any, timer: FlowTimer) -> bool:
    run = session.get(FlowRun, timer.run_id) if timer.run_id else None
    return bool(timer.step_run_id) and run is not None and run.status == "running"


def _fire_in(session: Any, timer_id: int, worker: str) -> bool:
    result = session.execute(update(FlowTimer).where(
        FlowTimer.id == timer_id, FlowTimer.status == "pending",
        FlowTimer.claimed_by == worker).values(status="fired", fired_at=now_utc()))
    if result.rowcount != 1:
        return False
    timer = session.get(FlowTimer, timer_id)
    assert timer is not None  # just updated
    with frozen_now(timer.due_at):
        _dispatch_timer(session, timer)
    return True


def fire(engine: Engine, timer_id: int, worker: str) -> bool:
    """Fire one claimed timer at its due time (logical time); False if another process did."""
    with transaction(engine) as session:
        return _fire_in(session, timer_id, worker)


def _dispatch_timer(session: Any, timer: FlowTimer) -> None:
    step_run = session.get(StepRun, timer.step_run_id) if timer.step_run_id else None
    run = session.get(FlowRun, timer.run_id) if timer.run_id else None
    if step_run is None or run is None or run.status != "running":
        return
    spec = spec_of(session, run)
    step = spec.step(step_run.step_key)
    if timer.purpose == "retry" and step_run.status == "retrying":
        retry_step(session, step_run)
    elif step_run.status == "waiting":  # the step's own timers: its type says what they do
        kind = loaded_registry().catalogue("step_type")[step.type]
        kind.on_timer(Exec(session, run, spec, step, step_run), timer.purpose)


def emit_overdue(engine: Engine, now: datetime, limit: int = 500) -> int:
    """Emit ``task.overdue`` once per task and due time for open tasks past due."""
    with transaction(engine) as session:
        rows = session.scalars(select(Task).outerjoin(TaskOverdueMark, and_(
            TaskOverdueMark.task_id == Task.id, TaskOverdueMark.due_at == Task.due_at))
            .where(Task.status.in_(("open", "in_progress")), Task.due_at <= now,
                   TaskOverdueMark.id.is_(None)).order_by(Task.due_at).limit(limit)).all()
        count = 0
        marked = _mark_overdue(session, rows, now)
        for task in rows:
            assert task.due_at is not None  # filtered above
            if marked is not None and task.id not in marked:
                continue  # another process emitted it
            if marked is None:
                try:
                    with session.begin_nested():
                        session.add(TaskOverdueMark(task_id=task.id, due_at=task.due_at,
                                                    emitted_at=now))
                        session.flush()
                except IntegrityError:
                    continue  # another process emitted it
            events.record(session, "task.overdue", {
                "task_id": task.id, "patient_id": task.patient_id,
                "encounter_id": task.encounter_id, "department_id": task.department_id,
                "assignee_user_id": task.assignee_user_id, "assignee_role": task.assignee_role,
                "priority": task.priority, "kind": task.kind, "due_at": task.due_at.isoformat(),
                "source_ref": task.source_ref},
                event_id=f"task.overdue:{task.id}:{task.due_at.isoformat()}")
            # The escalation chain the task was created with runs as data, for every task
            # that declares one — unless a handler of the event already moved or closed it.
            if task.status in ("open", "in_progress") and task.due_at is not None \
                    and task.due_at <= now:
                escalate_overdue(session, task,
                                 event_id=f"task.overdue:{task.id}:{task.due_at.isoformat()}")
            count += 1
        return count


def _mark_overdue(session: Any, rows: Sequence[Task], now: datetime) -> set[int] | None:
    """The overdue marks of ``rows`` in one ``INSERT … ON CONFLICT DO NOTHING RETURNING``
    (a mark another process wrote first is left out: its task's event was emitted there);
    the ids of the tasks marked here. ``None`` on a database without it (each mark is then
    written in its own savepoint)."""
    dialect = session.get_bind().dialect.name
    if not rows or dialect not in ("postgresql", "sqlite"):
        return None if rows else set()
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = (insert(TaskOverdueMark)
                 .values([{"task_id": task.id, "due_at": task.due_at, "emitted_at": now}
                          for task in rows])
                 .on_conflict_do_nothing().returning(TaskOverdueMark.task_id))
    return set(session.execute(statement).scalars().all())


def start_cron_flows(engine: Engine, now: datetime) -> int:
    """Start a run of each cron-triggered flow for its latest fire time not yet started."""
    from apscheduler.triggers.cron import CronTrigger

    started = 0
    with transaction(engine) as session:
        for row in store.list_current(session, "flow"):
            spec = store.compile_row(row, FlowSpec)
            if not spec.trigger.cron:
                continue
            trigger = CronTrigger.from_crontab(spec.trigger.cron, timezone=hospital_tz())
            since = max(row.created_at, now - timedelta(days=40))
            fire_at, last = trigger.get_next_fire_time(None, since), None
            for _ in range(2000):
                if fire_at is None or fire_at > now:
                    break
                last = fire_at
                fire_at = trigger.get_next_fire_time(fire_at, fire_at + timedelta(seconds=1))
            if last is None:
                continue
            key = f"cron:{spec.key}:{last.isoformat()}"
            try:
                with session.begin_nested():
                    before = session.scalars(select(FlowRun.id).where(
                        FlowRun.idempotency_key == key)).first()
                    if before is None:
                        with frozen_now(last):
                            start(session, flow_key=spec.key, context={"fired_at":
                                                                       last.isoformat()},
                                  idempotency_key=key)
                        started += 1
            except IntegrityError:
                continue
    return started


def run_due(engine: Engine | None = None, *, now: datetime | None = None, batch: int = BATCH,
            worker: str | None = None, max_batches: int = 100_000,
            dispatch: bool = True) -> SweepReport:
    """Fire every timer due up to ``now`` (default: the clock), in batches, then emit overdue
    tasks and dispatch due outbox messages. Timers created while sweeping that are already due
    fire in the same call (time travel: ``--now`` three months ahead runs the whole plan)."""
    engine = engine or default_engine()
    now = now or now_utc()
    worker = worker or worker_id()
    report = SweepReport()
    with frozen_now(now):
        # the events stored so far first (each at its own instant): flows they start and tasks
        # they create are there before timers and overdue tasks are looked at
        report.events = drain(engine, worker=worker).handled
        report.cron_runs = start_cron_flows(engine, now)
        for _ in range(max_batches):
            ids = claim(engine, worker, now, batch)
            if not ids:
                break
            fired, failed = fire_batch(engine, ids, worker)
            report.fired += fired
            for timer_id in failed:
                if fire(engine, timer_id, worker):
                    report.fired += 1
        report.overdue = emit_overdue(engine, now)
        report.events += drain(engine, worker=worker).handled
        if dispatch:
            report.messages = dispatch_due(engine, worker=worker, now=now)
            report.webhooks = webhooks.dispatch_due(engine, worker=worker, now=now)
    return report


@dataclass(frozen=True, slots=True)
class HeldClaims:
    """Due timers still claimed at an instant: by a sweep running elsewhere, or by one that
    stopped (crashed, killed) before firing them — those fire once their claims expire."""

    count: int
    workers: int
    first_expiry: datetime | None
    last_expiry: datetime | None

    def to_json(self) -> dict[str, Any]:
        from careloop.engine.clock import to_local

        def shown(at: datetime | None) -> str | None:
            return to_local(at).isoformat(timespec="seconds") if at is not None else None

        return {"count": self.count, "workers": self.workers,
                "claims_expire_from": shown(self.first_expiry),
                "claims_expire_until": shown(self.last_expiry)}


def held_claims(engine: Engine, now: datetime) -> HeldClaims:
    """Read-only: the pending timers due by ``now`` whose claim has not expired at ``now`` (so
    :func:`run_due` at ``now`` cannot fire them), and when those claims expire."""
    held = and_(FlowTimer.status == "pending", FlowTimer.due_at <= now,
                FlowTimer.claimed_until.is_not(None), FlowTimer.claimed_until >= now)
    with transaction(engine) as session:
        count, workers, first, last = session.execute(
            select(func.count(), func.count(distinct(FlowTimer.claimed_by)),
                   func.min(FlowTimer.claimed_until), func.max(FlowTimer.claimed_until))
            .where(held)).one()
    return HeldClaims(int(count or 0), int(workers or 0), _aware(first), _aware(last))


def _aware(at: datetime | None) -> datetime | None:
    # SQLite hands back naive UTC for func.min/max (the column type is not applied)
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at

