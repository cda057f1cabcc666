"""The names every engine's expressions read (contract 5), built in one place.

A form's ``visible_if``, a flow's decision and a rule's ``when`` evaluated for the same patient at
the same instant see the same values, because forms, flows and rules all build their names here::

    build(session, patient_id="p1", encounter_id=None, event={"form": "day3"})
    ──▶ {"patient": {"id": "p1", "age": 66, "gender": "female", "tags": ["hypertension"],
                     "attributes": {"bp_target": {...}}, "locale": "zh-CN"},
         "encounter": {"id": "e1", "type": "inpatient", "status": "discharged",
                       "department": "cardiology", "ward": "cardio_w3", "diagnoses": ["I10"],
                       "procedures": [], "admitted_at": "2026-11-28T01:00:00+00:00",
                       "discharged_at": "2026-12-03T02:00:00+00:00"},
         "event": {"form": "day3"}, "reading": None, "task": None,
         "answers": {}, "scores": {}, "bands": {}, "context": {}}

Rules that hold for every engine:

- ``patient.age`` is counted on the hospital's local date (``CARELOOP_TIMEZONE``), not the UTC
  date: at 01:00 on a birthday in Shanghai the patient is already a year older.
- Only derived, non-identifying patient data goes in: never the name, phone, ID number or MRN.
- The encounter is the one given, if it is the patient's; with none given, the patient's latest
  encounter (:func:`pick_encounter`). A form answered from a link without an encounter, a flow
  started by ``patient.upserted`` and a rule on a reading all see the same stay.
- Something absent (no patient, no encounter, no task, no reading) is ``None``; ``answers``,
  ``scores``, ``bands``, ``event`` and ``context`` are always objects. Expressions read both
  null-safely, and ``encounter != None`` means the same thing everywhere.
- Date-times are ISO text in UTC (``…+00:00``); the date functions convert them to local time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from careloop.engine import txcache
from careloop.engine.clock import now_utc, to_local
from careloop.engine.domain import Encounter, Patient, PatientTag, Task

# The names the engines provide. An engine may add its own (a form adds ``value`` and ``row``,
# the rule engine ``classification`` and ``readings``), never build these differently.
NAMES = ("answers", "scores", "bands", "patient", "encounter", "event", "reading", "task",
         "context")


def local_today() -> date:
    """Today in the hospital's time zone: the date ages are counted on."""
    return to_local(now_utc()).date()


def age_on(birth: date | None, today: date) -> int | None:
    """Whole years from ``birth`` to ``today``.

    >>> age_on(date(1960, 12, 7), date(2026, 12, 6)), age_on(date(1960, 12, 7), date(2026, 12, 7))
    (65, 66)
    """
    if birth is None:
        return None
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def iso(value: datetime | None) -> str | None:
    """A stored instant as ISO text in UTC (stored values are UTC; a naive one is read as UTC).

    >>> from datetime import timedelta, timezone
    >>> iso(datetime(2026, 12, 3, 10, 0, tzinfo=timezone(timedelta(hours=8))))
    '2026-12-03T02:00:00+00:00'
    """
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def patient_names(session: Session, patient_id: str | None) -> dict[str, Any] | None:
    """``patient``: derived data of the patient, or ``None`` if there is none."""
    patient = session.get(Patient, patient_id) if patient_id else None
    if patient is None:
        return None
    pid = patient.id
    tags = txcache.remember(session, ("context.tags", pid), lambda: _read_tags(session, pid),
                            (PatientTag,))
    return {"id": patient.id, "age": age_on(patient.birth_date, local_today()),
            "gender": patient.gender, "tags": sorted(set(tags)),
            "attributes": dict(patient.attributes or {}), "locale": patient.locale}


def latest_encounter(session: Session, patient_id: str) -> Encounter | None:
    """The patient's latest encounter: the latest admission, then the latest recorded (read
    once per transaction while no encounter is written; :func:`prefetch` reads a group's)."""
    return txcache.remember(session, ("context.latest_encounter", patient_id),
                            lambda: session.scalars(
                                select(Encounter).where(Encounter.patient_id == patient_id)
                                .order_by(Encounter.admitted_at.desc().nulls_last(),
                                          Encounter.created_at.desc()).limit(1)).first(),
                            (Encounter,))


def pick_encounter(session: Session, patient_id: str | None,
                   encounter_id: str | None) -> Encounter | None:
    """The encounter expressions see: the given one if it belongs to the patient, else (none
    given) the patient's latest encounter; ``None`` for an unknown or another patient's one."""
    if encounter_id:
        encounter = session.get(Encounter, encounter_id)
        if encounter is None or (patient_id and encounter.patient_id != patient_id):
            return None
        return encounter
    return latest_encounter(session, patient_id) if patient_id else None


def encounter_names(encounter: Encounter | None) -> dict[str, Any] | None:
    """``encounter``: the stay's fields, or ``None``."""
    if encounter is None:
        return None
    return {"id": encounter.id, "type": encounter.type, "status": encounter.status,
            "department": encounter.department_id, "ward": encounter.ward_id,
            "diagnoses": list((encounter.diagnoses or {}).get("codes", [])),
            "procedures": list((encounter.procedures or {}).get("codes", [])),
            "admitted_at": iso(encounter.admitted_at),
            "discharged_at": iso(encounter.discharged_at)}


def task_names(task: Task | None) -> dict[str, Any] | None:
    """``task``: the task an event is about (e.g. ``task.overdue``), or ``None``."""
    if task is None:
        return None
    return {"id": task.id, "title": task.title, "kind": task.kind, "priority": task.priority,
            "status": task.status, "source_ref": task.source_ref,
            "department": task.department_id, "role": task.assignee_role,
            "escalation": dict(task.escalation or {}), "due_at": iso(task.due_at)}


def _object(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def build(session: Session, *, patient_id: str | None, encounter_id: str | None = None,
          event: Mapping[str, Any] | None = None, answers: Mapping[str, Any] | None = None,
          scores: Mapping[str, Any] | None = None, bands: Mapping[str, Any] | None = None,
          reading: Mapping[str, Any] | None = None, task: Task | None = None,
          context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every name of :data:`NAMES` for one patient at the current instant (see the module)."""
    return {"patient": patient_names(session, patient_id),
            "encounter": encounter_names(pick_encounter(session, patient_id, encounter_id)),
            "event": _object(event), "reading": dict(reading) if reading else None,
            "task": task_names(task), "answers": _object(answers), "scores": _object(scores),
            "bands": _object(bands), "context": _object(context)}


# --- a group of events' patients, read at once ----------------------------------------------

_GROUP_TAGS = "careloop.context.group_tags"  # session.info: patient id -> tags read by prefetch
_GROUP_DONE = "careloop.context.group_done"  # session.info: patient ids prefetched
_IN_CHUNK = 500


def _read_tags(session: Session, patient_id: str) -> list[str]:
    """The patient's tags: as :func:`prefetch` read them while no flush wrote one of them."""
    known: dict[str, list[str]] | None = session.info.get(_GROUP_TAGS)
    if known and patient_id in known and not _changing(session, (PatientTag,)):
        return known[patient_id]
    return list(session.scalars(select(PatientTag.tag).where(
        PatientTag.patient_id == patient_id).order_by(PatientTag.tag)).all())


def prefetch(session: Session, patient_ids: set[str], *, latest: bool = True) -> None:
    """Read what :func:`build` and the scope check (``engine/scope.py``) ask per patient for
    a group of events' patients, a few statements for all of them instead of a few each: the
    patients (pinned for the transaction), their tags (kept per patient until a flush writes
    one of that patient's tags), the departments of their stays and, with ``latest``, their
    latest encounter (both forgotten when an encounter is written). A patient no longer stored
    reads nothing more."""
    done: set[str] = session.info.setdefault(_GROUP_DONE, set())
    ids = sorted(p for p in patient_ids if p and p not in done)
    if not ids or _changing(session, (Patient, Encounter, PatientTag)):
        return
    done.update(ids)
    tags: dict[str, list[str]] = {}
    stays: dict[str, list[tuple[Any, ...]]] = {}
    for first in range(0, len(ids), _IN_CHUNK):
        chunk = ids[first:first + _IN_CHUNK]
        for patient in session.scalars(select(Patient).where(Patient.id.in_(chunk))):
            tags[patient.id] = []
        for pid, tag in session.execute(select(PatientTag.patient_id, PatientTag.tag).where(
                PatientTag.patient_id.in_(chunk))):
            tags.setdefault(pid, []).append(tag)
        for row in session.execute(select(Encounter.patient_id, Encounter.department_id,
                                          Encounter.id, Encounter.admitted_at,
                                          Encounter.created_at).where(
                Encounter.patient_id.in_(chunk))):
            stays.setdefault(row[0], []).append(tuple(row))
    known = session.info.setdefault(_GROUP_TAGS, {})
    for pid in ids:
        if pid in tags:
            known[pid] = sorted(set(tags[pid]))
        mine = stays.get(pid, [])
        departments = frozenset(row[1] for row in mine if row[1])
        txcache.remember(session, ("scope.patient_departments", pid),
                         lambda d=departments: d, (Encounter,))  # type: ignore[misc]
    if not latest:
        return
    newest = {pid: max(rows, key=_newest)[2] for pid, rows in stays.items()}
    loaded = {e.id: e for e in session.scalars(select(Encounter).where(
        Encounter.id.in_(sorted(newest.values()))))} if newest else {}
    for pid in ids:
        if pid in tags:  # stored: its latest encounter (or none)
            found = loaded.get(newest[pid]) if pid in newest else None
            txcache.remember(session, ("context.latest_encounter", pid),
                             lambda e=found: e, (Encounter,))  # type: ignore[misc]


def _newest(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """:func:`latest_encounter`'s order (admitted last first, nulls last; then created)."""
    admitted, created = _aware(row[3]), _aware(row[4])
    return (admitted is not None, admitted or created, created)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        return value.replace(tzinfo=UTC)
    return value


def _changing(session: Session, classes: tuple[type, ...]) -> bool:
    return any(isinstance(obj, classes)
               for obj in (*session.new, *session.dirty, *session.deleted))


@event.listens_for(Session, "before_flush")
def _follow_group_tags(session: Session, flush_context: Any, instances: Any) -> None:
    # a tag added (the ``tag`` action) is added to its patient's list; any other change of a
    # tag row makes every patient's tags be read again
    known: dict[str, list[str]] | None = session.info.get(_GROUP_TAGS)
    if known:
        for obj in session.new:
            if isinstance(obj, PatientTag) and obj.patient_id in known:
                known[obj.patient_id] = sorted({*known[obj.patient_id], obj.tag})
        if any(isinstance(obj, PatientTag) for obj in (*session.dirty, *session.deleted)):
            known.clear()


@event.listens_for(Session, "after_soft_rollback")
def _forget_group_tags(session: Session, previous_transaction: Any) -> None:
    # a savepoint rolled back may have undone a tag the lists were given
    session.info.pop(_GROUP_TAGS, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_group(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_GROUP_TAGS, None)
        session.info.pop(_GROUP_DONE, None)
