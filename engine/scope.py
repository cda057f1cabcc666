"""Which departments an app acts for, and which departments an event is about.

An app's manifest declares its reach (``app.yaml``)::

    departments: [cardiology]     # its triggers, rules and flows see only these departments
    scope: hospital               # hospital-wide: sees every event (and only hospital-wide
                                  # roles edit it in the builder)

An app that declares neither is hospital-wide (as before) — and so, like any hospital-wide app,
edited only by hospital-wide roles. A definition with no app (``app_id`` null) is hospital-wide.

An event's departments (:func:`event_departments`), first that applies: the payload's
``department_id`` (a submission's, an encounter's), the encounter's, the task's, else every
department the patient has an encounter in. An event about no department (the daily
``scheduled`` event, a patient with no encounter) is seen by hospital-wide apps only — and a
form's submissions always by the app that owns the form (:func:`form_owner`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import txcache
from careloop.engine.domain import Encounter, Task
from careloop.engine.models import BundleRow

HOSPITAL = "hospital"


def manifest_departments(manifest: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The departments a manifest declares, ``None`` for a hospital-wide app."""
    if not manifest or manifest.get("scope") == HOSPITAL:
        return None
    departments = manifest.get("departments")
    if not isinstance(departments, list) or not departments:
        return None
    return frozenset(str(d) for d in departments)


def app_departments(session: Session, app_id: str | None) -> frozenset[str] | None:
    """The departments app ``app_id`` acts for; ``None``: hospital-wide."""
    if app_id is None:
        return None
    # every app's reach in one query for the transaction (a start asks for each app whose
    # flow the event triggers)
    reach = txcache.remember(session, ("scope.app_departments",), lambda: {
        bundle_id: manifest_departments(manifest) for bundle_id, manifest in
        session.execute(select(BundleRow.id, BundleRow.manifest)).all()}, (BundleRow,))
    if app_id in reach:
        return reach[app_id]
    return manifest_departments(None)


def is_hospital_wide(session: Session, app_id: str | None) -> bool:
    return app_departments(session, app_id) is None


def event_departments(session: Session, payload: Mapping[str, Any]) -> frozenset[str]:
    """The departments an event is about (see the module's docstring)."""
    department = payload.get("department_id")
    if isinstance(department, str) and department:
        return frozenset({department})
    encounter_id = payload.get("encounter_id")
    if isinstance(encounter_id, str) and encounter_id:
        encounter = session.get(Encounter, encounter_id)
        if encounter is not None and encounter.department_id:
            return frozenset({encounter.department_id})
    task_id = payload.get("task_id")
    if isinstance(task_id, int):
        task = session.get(Task, task_id)
        if task is not None and task.department_id:
            return frozenset({task.department_id})
    patient_id = payload.get("patient_id")
    if isinstance(patient_id, str) and patient_id:  # asked by the rules and the flows handler
        return txcache.remember(session, ("scope.patient_departments", patient_id),
                                lambda: frozenset(d for d in session.scalars(select(
                                    Encounter.department_id).where(
                                    Encounter.patient_id == patient_id).distinct()) if d),
                                (Encounter,))
    return frozenset()


def form_owner(session: Session, payload: Mapping[str, Any]) -> str | None:
    """The app that owns the form an event is about (``payload.form``), if any."""
    from careloop.engine import store

    form = payload.get("form")
    if not isinstance(form, str) or not form:
        return None
    row = store.current(session, "form", form)
    return row.app_id if row is not None else None


def sees(session: Session, app_id: str | None, departments: frozenset[str],
         owner: str | None = None) -> bool:
    """Whether a definition of ``app_id`` may see an event about ``departments``; ``owner``,
    the app owning the event's form, always sees its own form's submissions (a PHQ-9 answered
    outside psychiatry still reaches psychiatry's safety rules)."""
    reach = app_departments(session, app_id)
    return reach is None or bool(reach & departments) or (owner is not None and owner == app_id)
