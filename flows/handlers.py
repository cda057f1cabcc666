"""The ``flows`` event handler: cancel, resume and start runs when a domain event arrives.

Order matters: a cancelled encounter (discharge or admission) first cancels its tasks and runs,
then waiting steps resume, then triggers start new runs (so a cancelled encounter never starts
one from its own event).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event, func, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from careloop.engine import scope, store, txcache
from careloop.engine.domain import Department, Encounter, Patient, PatientTag
from careloop.engine.i18n import t
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import ENCOUNTER_CANCELLED, cancel_encounter_tasks
from careloop.flows import appointments
from careloop.flows import context as ctxmod
from careloop.flows.models import FlowRun, StepRun
from careloop.flows.runtime import (
    Exec,
    cancel_runs,
    complete_run,
    optimistic,
    resume,
    spec_of,
    start,
    without_runs,
)
from careloop.flows.spec import FlowSpec

log = logging.getLogger("careloop.flows")

CANCELLING = ENCOUNTER_CANCELLED  # HL7 A11 (cancel admit), A13 (cancel discharge)


def handle_event(session: Session, event: DomainEventRow) -> None:
    payload = event.payload
    if event.type in CANCELLING and payload.get("encounter_id"):
        # the encounter's open tasks first (any source), each with why in words; then its runs,
        # their pending timers and unsent messages (the forms handler closes its links)
        cancel_encounter_tasks(session, payload["encounter_id"], reason=event.type,
                               why=_why(event.type),
                               event_id=event.event_id, actor=event.source)
        cancel_runs(session, encounter_id=payload["encounter_id"], reason=event.type)
    if event.type in (appointments.RESCHEDULED, appointments.CANCELLED):
        appointments.handle(session, event)  # the appointment's reminders move or go
    running = _cancel_on(session, event)
    if running != []:  # a patient with no running run has no step waiting either
        _resume_waiting(session, event)
    _start_triggered(session, event)


def _why(kind: str) -> str:
    """Why the encounter's tasks were cancelled, in words (zh-CN first, en second)."""
    key = f"hissem.cancel.why.{kind}"
    return f"{t(key, 'zh-CN')}（{t(key, 'en')}）"


def prefetch(session: Session, rows: Sequence[DomainEventRow]) -> None:
    """The ``flows`` prefetch of an event batch (:func:`careloop.engine.events.record_many`):
    its patients without any flow run, found in one query, so their events skip the look-ups
    for runs to cancel or resume (a patient import: 500 new patients, none with a run)."""
    ids = list({p for row in rows if isinstance(p := row.payload.get("patient_id"), str)})
    having: set[str | None] = set()
    for first in range(0, len(ids), 500):
        having.update(session.scalars(select(FlowRun.patient_id).where(
            FlowRun.patient_id.in_(ids[first:first + 500])).distinct()))
    without_runs(session).update(set(ids) - having)


def _cancel_on(session: Session, event: DomainEventRow) -> list[FlowRun] | None:
    """Cancel the patient's runs the event cancels; returns the patient's running runs (``[]``
    when none; ``None`` when not looked up)."""
    payload = event.payload
    if payload.get("patient_id") in without_runs(session):
        return None
    patient_id = payload.get("patient_id")
    if not patient_id:
        return None
    # the patient's running runs and the runs holding a ``once`` key, in one query: a trigger
    # of this event then asks :func:`_held` without a query of its own. An event that starts
    # flows reads them with the patient, stay, department and tags its start needs.
    loaded = _subject(session, payload) if _triggers(session).get(event.type) else None
    if loaded is None:
        loaded = list(session.scalars(select(FlowRun).where(_patient_runs(patient_id))).all())
    session.info.setdefault(_PATIENT_RUNS, {})[patient_id] = loaded
    runs = [run for run in loaded if run.status == "running"]
    for run in runs:
        if event.type in spec_of(session, run).cancel_on and (
                not payload.get("encounter_id") or run.encounter_id in (
                    None, payload.get("encounter_id"))) and _same_submission(run, payload):
            complete_run(session, run, "cancelled", event.type)
    return runs


_PATIENT_RUNS = "careloop.flows.patient_runs"


@event.listens_for(Session, "after_transaction_end")
def _forget_patient_runs(session: Session, transaction: Any) -> None:
    session.info.pop(_PATIENT_RUNS, None)  # any end: a rolled-back savepoint removes runs


def _same_submission(run: FlowRun, payload: dict[str, Any]) -> bool:
    """An event about one submission (e.g. ``complaint.resolved``) cancels only the runs that
    submission started, not the patient's other runs (another complaint's)."""
    started_by = ((run.context or {}).get("_event") or {}).get("submission_id")
    about = payload.get("submission_id")
    return about is None or started_by is None or started_by == about


def _sees(session: Session, run: FlowRun, departments: frozenset[str],
          owner: str | None) -> bool:
    """Whether the run's app acts for the event's departments (a cardiology run waiting for
    any form never receives the patient's psychiatry answers)."""
    row = store.get_version(session, "flow", run.flow_key, run.flow_version)
    return scope.sees(session, row.app_id, departments, owner)


def _resume_waiting(session: Session, event: DomainEventRow) -> None:
    patient_id = event.payload.get("patient_id")
    if not patient_id or patient_id in without_runs(session):
        return
    rows = session.execute(select(StepRun, FlowRun).join(FlowRun, FlowRun.id == StepRun.run_id)
                           .where(StepRun.waiting_for == event.type,
                                  StepRun.status == "waiting", FlowRun.status == "running",
                                  FlowRun.patient_id == patient_id)
                           .order_by(StepRun.id)).all()
    if not rows:
        return
    departments = scope.event_departments(session, event.payload)
    owner = scope.form_owner(session, event.payload)
    for step_run, run in rows:
        if not _sees(session, run, departments, owner):
            continue
        spec = spec_of(session, run)
        step = spec.step(step_run.step_key)
        kind = loaded_registry().catalogue("step_type")[step.type]
        x = Exec(session, run, spec, step, step_run)
        if not kind.accepts(x, event.type, event.payload):
            continue
        target, update = kind.on_event(x, event.type, event.payload)
        resume(session, step_run, target, update)


Triggers = dict[str, list[tuple[FlowSpec, str | None]]]


def _triggers(session: Session) -> Triggers:
    """Current flows by trigger event type (``(spec, app id)`` in key order): built once per
    process while the stored definitions stay the same (:func:`store.shared_current` checks a
    cheap fingerprint once per transaction), so an event that starts no flow costs a dictionary
    look-up."""
    return store.shared_current(session, "flow", "by trigger", _by_trigger)


def _by_trigger(rows: Sequence[Any]) -> Triggers:
    found: Triggers = {}
    for row in rows:
        spec = store.compile_row(row, FlowSpec)
        if spec.trigger.event:
            found.setdefault(spec.trigger.event, []).append((spec, row.app_id))
    return found


#: what a stay must still be when its event's handlers run for the event to start flows: the
#: HIS may cancel a discharge (A13) or an admission (A11) before the dispatcher reaches the
#: event, and ingestion has already applied the cancellation to the stay's row
_STILL = {"encounter.discharged": ("discharged",),
          "encounter.admitted": ("admitted", "discharged")}


def _overtaken(session: Session, event: DomainEventRow) -> bool:
    """True when the event's stay is no longer what the event says (its discharge or its
    admission cancelled since): the event starts no flow (a later discharge of the stay will)."""
    allowed = _STILL.get(event.type)
    encounter_id = event.payload.get("encounter_id")
    if allowed is None or not encounter_id:
        return False
    encounter = session.get(Encounter, encounter_id)  # usually read with the group already
    return encounter is not None and encounter.status not in allowed


def _start_triggered(session: Session, event: DomainEventRow) -> None:
    """Start every flow whose trigger matches, at most as often as its ``once`` allows."""
    payload = event.payload
    departments: frozenset[str] | None = None
    owner: str | None = None
    for spec, app_id in _triggers(session).get(event.type, []):
        if departments is None:
            if _overtaken(session, event):
                log.info("event %s starts no flow: a later event cancelled what it says "
                         "(the stay is no longer %s)", event.event_id, event.type.split(".")[1])
                return
            patient_runs = session.info.setdefault(_PATIENT_RUNS, {})
            if payload.get("patient_id") not in patient_runs:
                # not read with its runs yet (a patient known to have none)
                loaded = _subject(session, payload)
                if loaded is not None:
                    patient_runs[payload["patient_id"]] = loaded
            departments = scope.event_departments(session, payload)
            owner = scope.form_owner(session, payload)
        if not scope.sees(session, app_id, departments, owner):
            log.info("flow %s not started by event %s: its app does not act for the event's "
                     "department", spec.key, event.event_id)
            continue
        patient_id = payload.get("patient_id")
        encounter_id = payload.get("encounter_id")
        if spec.trigger.when is not None:
            names = ctxmod.build(session, patient_id=patient_id, encounter_id=encounter_id,
                                 context={}, event=payload)
            if not spec.trigger.when.evaluate(names):
                continue
        once_key = spec.trigger.once_key(spec.key, patient_id, encounter_id)
        run_id = _start_once(session, spec, event, once_key)
        if run_id is None:
            log.info("flow %s not started by event %s: already started (%s)", spec.key,
                     event.event_id, spec.trigger.once)
        else:
            log.info("flow %s run %s started by event %s", spec.key, run_id, event.event_id)


def _patient_runs(patient_id: str) -> Any:
    return (FlowRun.patient_id == patient_id) & (
        (FlowRun.status == "running") | FlowRun.once_key.is_not(None))


def _subject(session: Session, payload: dict[str, Any]) -> list[FlowRun] | None:
    """The event's patient, stay, department and tags, and the patient's running runs and runs
    holding a ``once`` key, in one query, kept for the transaction (engine/txcache.py pins
    the rows): the trigger's ``when``, the scope check, the ``once`` check and the first
    steps' messages then read none of them. ``None`` when the patient is not stored."""
    patient_id, encounter_id = payload.get("patient_id"), payload.get("encounter_id")
    department_id = payload.get("department_id")
    if not isinstance(patient_id, str) or not patient_id:
        return None
    if not encounter_id and not department_id and patient_id in without_runs(session) \
            and session.identity_map.get(identity_key(Patient, patient_id)) is not None:
        # a patient of the event group read already (engine/context.py prefetch), known to
        # have no run: nothing to read; the expression names find the patient and tags
        return []
    columns: list[Any] = [Patient, FlowRun, PatientTag.tag]
    joins: list[tuple[Any, Any]] = [(FlowRun, _patient_runs(patient_id)),
                                    (PatientTag, PatientTag.patient_id == Patient.id)]
    department: Any = None
    if isinstance(encounter_id, str) and encounter_id:
        columns.append(Encounter)
        joins.append((Encounter, Encounter.id == encounter_id))
        department = (func.coalesce(Encounter.department_id, department_id)
                      if isinstance(department_id, str) else Encounter.department_id)
    elif isinstance(department_id, str) and department_id:
        department = literal(department_id)
    if department is not None:
        columns.append(Department)
        joins.append((Department, Department.id == department))
    query = select(*columns).select_from(Patient)
    for target, on in joins:
        query = query.outerjoin(target, on)
    rows = session.execute(query.where(Patient.id == patient_id)).all()
    if not rows:
        return None
    runs: list[FlowRun] = []
    tags: set[str] = set()
    for row in rows:
        if row[1] is not None and row[1] not in runs:
            runs.append(row[1])
        if row[2] is not None:
            tags.add(row[2])
    held = sorted(tags)
    txcache.remember(session, ("context.tags", patient_id), lambda: held, (PatientTag,))
    return runs


def _held(session: Session, once_key: str, patient_id: str | None) -> bool:
    """Whether a run holds the key (the common case, answered without a failed insert).

    When this transaction read the patient's runs (:func:`_cancel_on`), those and the runs in
    the session answer without a query; a run holding the key that they miss (another
    patient's, or one started earlier in the transaction and no longer in the session) makes
    the start's insert fail on the unique index, inside its savepoint: no run is started."""
    known = session.info.get(_PATIENT_RUNS, {}).get(patient_id) if patient_id else None
    if known is not None:
        return any(isinstance(obj, FlowRun) and obj.once_key == once_key
                   for obj in (*known, *session.identity_map.values(), *session.new))
    return session.scalars(select(FlowRun.id).where(
        FlowRun.once_key == once_key)).first() is not None


def _start_once(session: Session, spec: FlowSpec, event: DomainEventRow,
                once_key: str | None) -> int | None:
    """Start a run unless a counted run holds ``once_key``; ``None`` when one does.

    The unique ``flow_runs.once_key`` is the guarantee: when another process inserted the same
    key between the check and the insert, the insert fails inside its savepoint and only this
    start is undone (on PostgreSQL the insert waits for the other transaction to decide).
    """
    if once_key is not None and _held(session, once_key, event.payload.get("patient_id")):
        return None
    payload = event.payload
    arguments: dict[str, Any] = dict(
        flow_key=spec.key, patient_id=payload.get("patient_id"),
        encounter_id=payload.get("encounter_id"), context={"_event": payload},
        idempotency_key=f"{spec.key}:{event.event_id}", once_key=once_key,
        new_key=True)  # the event was just stored: its handlers run once
    mark = txcache.deferred_mark(session)
    try:
        with session.begin_nested(), optimistic(session):
            return start(session, **arguments)
    except IntegrityError:
        txcache.drop_deferred_since(session, mark)
        return None
    except Exception:  # a step failed: again step by step, its failure a retry or incident
        txcache.drop_deferred_since(session, mark)
        log.info("flow %s: a step failed on start; starting again step by step", spec.key)
    try:
        with session.begin_nested():
            return start(session, **arguments)
    except IntegrityError:
        txcache.drop_deferred_since(session, mark)
        return None
