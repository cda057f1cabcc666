"""What the staff console shows: inbox queries, the patient record (masked), task actions.

Routes stay thin and call these; every function takes the :class:`Principal` and applies its
scope, so a list can never show a patient the user may not see.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any, SupportsIndex

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Executable,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.context import age_on, local_today
from careloop.engine.domain import Department, Encounter, Patient, PatientTag, Task, TaskHistory
from careloop.engine.privacy import mask_id_number, mask_phone
from careloop.engine.tasks import (
    MANUAL_ESCALATION,
    OUTCOMES,
    add_history,
    complete_task,
    escalate_task,
    sla_state,
)
from careloop.flows import approvals
from careloop.web import governance
from careloop.web.display import local_writer
from careloop.web.permissions import (
    HiddenStays,
    Principal,
    task_visibility,
    visible_patient_filter,
)

VIEWS = ("mine", "department", "overdue", "done")
REVEALABLE = ("phone", "id_number")


class ActionRefused(Exception):
    """Raised when a task action is not allowed in the task's state (e.g. completing it twice)."""


class DecideInstead(ActionRefused):
    """Raised when completing an approval task: it is approved or rejected (a decision), so that
    its flow resumes."""


class NotYours(Exception):
    """Raised when someone other than the task's assignee (or a holder of its role in its
    department) tries to decide an approval."""


class DecisionInvalid(Exception):
    """Raised for a decision that cannot apply: an unknown step to go back to, an unknown
    signer, or a missing signer."""


def assigned_to(principal: Principal, task: Task) -> bool:
    """The task is the user's, or waits in the queue of a role they hold in its department (or
    hospital-wide)."""
    if task.assignee_user_id is not None:
        return task.assignee_user_id == principal.user_id
    return any(g.role == task.assignee_role and g.department_id in (None, task.department_id)
               for g in principal.grants)


def may_open_task(session: Session, principal: Principal, value: str) -> bool:
    """``object_access`` for ``via="task"`` routes: the assignee (or their role's holders in the
    task's department) may open the task whoever the patient is."""
    task = session.get(Task, int(value)) if value.isdigit() and len(value) < 10 else None
    return task is not None and assigned_to(principal, task)


def _targets(session: Session, task: Task) -> list[dict[str, Any]]:
    labels = approvals.step_labels(session, task)
    return [{"key": k, "label": labels.get(k) or {}} for k in approvals.reject_targets(session,
                                                                                  task)]


def approval_view(session: Session, task: Task, principal: Principal) -> dict[str, Any] | None:
    """What the task page needs to show the decision form, or ``None`` for other tasks."""
    if not approvals.is_approval(session, task):
        return None
    step_run = approvals.approval_of(session, task)
    open_ = step_run is not None and task.status in ("open", "in_progress")
    return {"open": open_, "may_decide": open_ and assigned_to(principal, task),
            "targets": _targets(session, task) if open_ else [],
            "step": step_run.step_key if step_run is not None else None}


def _check_signer(session: Session, signer: dict[str, Any] | None) -> None:
    from careloop.engine.registry import loaded_registry

    if not signer or not (signer.get("user") or signer.get("role")):
        raise DecisionInvalid("a signer (a user, or a role) is needed")
    if signer.get("role") and signer["role"] not in loaded_registry().catalogue("role"):
        raise DecisionInvalid(f"no role '{signer['role']}'")
    if signer.get("department") and session.get(Department, signer["department"]) is None:
        raise DecisionInvalid(f"no department '{signer['department']}'")


def decide(session: Session, task: Task, principal: Principal, decision: str, *,
           notes: str | None = None, back_to: str | None = None,
           signer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Approve, reject (back to a step: 驳回) or add a signer (加签) on an approval task; the
    flow resumes in the same transaction. Returns ``{"result": …, "signer_task_id": …}``.

    Raises:
        ActionRefused: the task is closed or no open approval.
        NotYours: the user is not the task's assignee.
        DecisionInvalid: an unknown step or signer.
    """
    from careloop.engine.tasks import AssigneeError
    from careloop.flows.runtime import FlowError

    if task.status in ("done", "cancelled"):
        raise ActionRefused("task is closed")
    step_run = approvals.approval_of(session, task)
    if step_run is None:
        raise ActionRefused("no open approval")
    if not assigned_to(principal, task):
        raise NotYours(str(task.id))
    try:  # a definition's publication: never its author, only a hospital-wide editor
        governance.check_approver(session, task, principal)
    except governance.NotApprover as exc:
        raise NotYours(str(exc)) from exc
    text = (notes or "").strip()[:2000] or None
    if decision == "add_signer":
        _check_signer(session, signer)
        assert signer is not None  # checked above
        try:
            with session.begin_nested():
                new_id = approvals.add_signer(session, step_run.id, signer,
                                              actor=principal.username)
        except AssigneeError as exc:
            raise DecisionInvalid(str(exc)) from exc
        return {"result": "open", "signer_task_id": new_id}
    if back_to is not None and back_to not in approvals.reject_targets(session, task):
        raise DecisionInvalid(f"no step '{back_to}' to go back to")
    try:
        result = approvals.decide(session, task.id, decision, actor=principal.username,
                                  notes=text, back_to=back_to)
    except FlowError as exc:
        raise ActionRefused(str(exc)) from exc
    governance.on_decided(session, task, result, principal)
    return {"result": result, "signer_task_id": None}


def _scoped(query: Select[Any], principal: Principal) -> Select[Any]:
    """Tasks follow their assignment, not the patient's stays: a task is seen by the user it is
    assigned to and by the department (or ward) it was assigned within; a task assigned to no
    department is seen where its patient is."""
    condition = task_visibility(principal)
    return query if condition is None else query.where(condition)


SORTS = ("due", "priority", "created")
DUE_FILTERS = ("overdue", "today", "week")
ASSIGNEE_FILTERS = ("me", "queue")


@dataclass(frozen=True, slots=True)
class InboxFilter:
    """What the inbox narrows to and how it sorts (every field optional)."""

    priority: str | None = None
    status: str | None = None  # open | in_progress | done | cancelled
    assignee: str | None = None  # me | queue | a user id
    due: str | None = None  # overdue | today | week
    sort: str = "due"


#: rows a page of the inbox lists
PAGE = 200
#: a view's count stops here: past it the page reads "999+"
COUNT_CAP = 999
OPEN_STATUSES = ("open", "in_progress")


class AtLeast(int):
    """A capped count: more than :data:`COUNT_CAP` rows. Compares as ``COUNT_CAP + 1`` and
    reads "999+" wherever it is shown (``str``, the ``num`` filter's ``round``, templates), so
    the pages show it with no change."""

    def __str__(self) -> str:
        return f"{COUNT_CAP}+"

    def __round__(self, ndigits: SupportsIndex | None = None) -> AtLeast:
        return self

    def __html__(self) -> str:
        return str(self)


def task_query(principal: Principal, view: str, priority: str | None = None,
               filters: InboxFilter | None = None) -> Select[Any]:
    """The inbox's tasks for ``view`` (mine | department | overdue | done), narrowed by
    ``filters`` (status, priority, assignee, due) and sorted (due | priority | created)."""
    query = _scoped(select(Task), principal)
    open_ = Task.status.in_(("open", "in_progress"))
    if view == "mine":
        query = query.where(open_, _mine(principal))
    elif view == "overdue":
        query = query.where(open_, Task.due_at < _at_run(now_utc))
    elif view == "done":
        query = query.where(Task.status.in_(("done", "cancelled")))
    else:
        query = query.where(open_)
    f = filters or InboxFilter()
    priority = priority or f.priority
    if priority:
        query = query.where(Task.priority == priority)
    if f.status:
        query = query.where(Task.status == f.status)
    if f.assignee == "me":
        query = query.where(Task.assignee_user_id == principal.user_id)
    elif f.assignee == "queue":
        query = query.where(Task.assignee_user_id.is_(None))
    elif f.assignee and f.assignee.isdigit() and len(f.assignee) < 10:
        query = query.where(Task.assignee_user_id == int(f.assignee))
    if f.due:
        query = query.where(Task.due_at.is_not(None), *_due_window(f.due))
    if f.sort == "priority":
        rank = case({"urgent": 0, "high": 1, "normal": 2, "low": 3}, value=Task.priority,
                    else_=4)
        order: list[Any] = [rank, Task.due_at.asc().nulls_last()]
    elif f.sort == "created":
        order = [Task.created_at.desc()]
    else:
        order = [Task.completed_at.desc() if view == "done" else Task.due_at.asc().nulls_last()]
    return query.order_by(*order, Task.id).limit(PAGE)


def _mine(principal: Principal) -> ColumnElement[bool]:
    """The "mine" view's condition: the user's tasks and their roles' queues."""
    roles = {(g.role, g.department_id) for g in principal.grants}
    role_match = [and_(Task.assignee_role == role, Task.department_id == dept)
                  if dept else Task.assignee_role == role for role, dept in roles]
    return or_(Task.assignee_user_id == principal.user_id,
               and_(Task.assignee_user_id.is_(None), or_(*role_match))
               if role_match else Task.id.is_(None))


def _at_run(instant: Callable[[], datetime]) -> BindParameter[datetime]:
    """An instant read when the statement runs, not when it is built: the inbox's statements
    are built once per principal and view (:func:`_inbox_statement`) and run for hours."""
    return bindparam("instant", callable_=instant, type_=Task.due_at.type, unique=True)


def _end_of_today() -> datetime:
    from datetime import timedelta

    from careloop.engine.clock import hospital_tz

    local = now_utc().astimezone(hospital_tz())
    return local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def _in_a_week() -> datetime:
    from datetime import timedelta

    return now_utc() + timedelta(days=7)


def _due_window(due: str) -> list[Any]:
    """``overdue``: before now; ``today``: before the end of the hospital's day; ``week``:
    within seven days (each instant as the statement runs)."""
    until = {"overdue": now_utc, "today": _end_of_today, "week": _in_a_week}.get(due)
    return [Task.due_at < _at_run(until)] if until is not None else []


_LISTED = (Task.id, Task.title, Task.kind, Task.patient_id, Task.department_id,
           Task.assignee_user_id, Task.assignee_role, Task.priority, Task.status, Task.due_at,
           Task.outcome, Task.notes, Task.form_key, Task.source_type, Task.source_ref,
           Task.created_at, Task.completed_at)


def inbox(session: Session, principal: Principal, view: str,
          priority: str | None = None,
          filters: InboxFilter | None = None) -> list[dict[str, Any]]:
    """The view's tasks as :func:`task_json` rows with who they are about and who holds them:
    one query, the columns shown (no ORM objects), the patient and the assignee joined."""
    now, written = now_utc(), local_writer()
    rows = []
    for row in session.execute(_inbox_statement(principal, view, priority, filters)).all():
        item = _task_row(row, now, written)
        found = row.found_patient is not None
        item["patient_name"] = row.patient_name if found else None
        item["patient_mrn"] = row.patient_mrn if found else None
        item["assignee_name"] = row.assignee_name
        rows.append(item)
    return rows


@dataclass(frozen=True, slots=True)
class InboxPage:
    """What the inbox page shows: its rows (only the columns the list shows, ``due_at`` an
    aware datetime) and the names of the departments they name (for their labels)."""

    tasks: list[dict[str, Any]]
    departments: dict[str, dict[str, Any]]


def inbox_page(session: Session, principal: Principal, view: str,
               filters: InboxFilter | None = None) -> InboxPage:
    """The inbox page's rows: the same tasks, order and scoping as :func:`inbox`, in one
    statement that also reads the name of each row's department (no statement of its own for
    the page's labels), and only the columns ``_tasks.html`` shows (no JSON-only fields, no
    time written twice)."""
    now = now_utc()
    rows, names = [], {}
    for (task_id, title, kind, department_id, role, priority, status, due_at, source_type,
         patient_name, patient_mrn, assignee_name, department_name) in session.execute(
            _page_statement(principal, view, filters)):
        if status in ("done", "cancelled"):  # engine.tasks.sla_state, without the object
            sla = "done"
        elif due_at is None:
            sla = "no_due"
        elif due_at <= now:
            sla = "overdue"
        else:
            sla = "due_soon" if (due_at - now).total_seconds() <= 4 * 3600 else "on_track"
        rows.append({"id": task_id, "title": title, "kind": kind,
                     "department_id": department_id, "assignee_role": role,
                     "priority": priority, "status": status, "due_at": due_at, "sla": sla,
                     "source_type": source_type, "patient_name": patient_name,
                     "patient_mrn": patient_mrn, "assignee_name": assignee_name})
        if department_name is not None and department_id not in names:
            names[department_id] = json.loads(department_name)  # once per department
    return InboxPage(rows, names)


@lru_cache(maxsize=256)
def _page_statement(principal: Principal, view: str,
                    filters: InboxFilter | None) -> Executable:
    from careloop.engine.domain import User

    # an alias: the visibility condition's subqueries read ``departments`` and must stay
    # uncorrelated with the row's department
    named = Department.__table__.alias("task_department")
    return task_query(principal, view, None, filters).with_only_columns(
        Task.id, Task.title, Task.kind, Task.department_id, Task.assignee_role, Task.priority,
        Task.status, Task.due_at, Task.source_type, Patient.name.label("patient_name"),
        Patient.mrn.label("patient_mrn"), User.display_name.label("assignee_name"),
        # the name as its JSON text, read once per department, not once per row
        cast(named.c.name, Text).label("department_name"),
        maintain_column_froms=False).select_from(
        Task.__table__.outerjoin(Patient.__table__, Patient.id == Task.patient_id)
        .outerjoin(User.__table__, User.id == Task.assignee_user_id)
        .outerjoin(named, named.c.id == Task.department_id))


# The inbox's statements are built once per principal, view and filters (the last 256 of
# each): building one, and the cache key SQLAlchemy computes for it, cost more than running it.
# What they read changes nothing in them: the visibility condition is a function of the
# principal alone (web/permissions.task_visibility) and "now" is read as they run (_at_run).
@lru_cache(maxsize=256)
def _inbox_statement(principal: Principal, view: str, priority: str | None,
                     filters: InboxFilter | None) -> Executable:
    from careloop.engine.domain import User

    return task_query(principal, view, priority, filters).with_only_columns(
        *_LISTED, Patient.id.label("found_patient"), Patient.name.label("patient_name"),
        Patient.mrn.label("patient_mrn"), User.display_name.label("assignee_name"),
        maintain_column_froms=False).select_from(
        Task.__table__.outerjoin(Patient.__table__, Patient.id == Task.patient_id)
        .outerjoin(User.__table__, User.id == Task.assignee_user_id))


@lru_cache(maxsize=256)
def _counts_statement(principal: Principal) -> Executable:
    """The department view's first COUNT_CAP + 1 rows counted, and those of them in the mine
    and overdue views."""
    sub = (task_query(principal, "department")
           .with_only_columns(Task.id, _mine(principal).label("mine"),
                              (Task.due_at < _at_run(now_utc)).label("overdue"))
           .order_by(None).limit(COUNT_CAP + 1).subquery())
    return select(func.count(), func.count(case((sub.c.mine, 1))),
                  func.count(case((sub.c.overdue, 1)))).select_from(sub)


@lru_cache(maxsize=256)
def _view_count_statement(principal: Principal, view: str) -> Executable:
    sub = (task_query(principal, view).with_only_columns(Task.id).order_by(None)
           .limit(COUNT_CAP + 1).subquery())
    return select(func.count()).select_from(sub)


def with_people(session: Session, rows: list[dict[str, Any]],
                patient: Patient | None = None) -> list[dict[str, Any]]:
    """Add who the task is about and who holds it (``patient_name``, ``patient_mrn``,
    ``assignee_name``) for lists a person reads; one query each, not one per row (none for the
    patients when all the rows are ``patient``'s, the patient page's case)."""
    from careloop.engine.domain import User

    patient_ids = {r["patient_id"] for r in rows if r.get("patient_id")}
    user_ids = {r["assignee_user_id"] for r in rows if r.get("assignee_user_id")}
    known = patient is not None and patient_ids <= {patient.id}
    people: dict[str, tuple[str, str]] = (
        {patient.id: (patient.name, patient.mrn)} if known and patient is not None else
        {pid: (name, mrn) for pid, name, mrn in session.execute(
            select(Patient.id, Patient.name, Patient.mrn).where(Patient.id.in_(patient_ids)))}
        if patient_ids else {})
    users = ({uid: name for uid, name in session.execute(
        select(User.id, User.display_name).where(User.id.in_(user_ids)))}
        if user_ids else {})
    for row in rows:
        found = people.get(row.get("patient_id") or "")
        row["patient_name"] = found[0] if found is not None else None
        row["patient_mrn"] = found[1] if found is not None else None
        row["assignee_name"] = users.get(row.get("assignee_user_id") or 0)
    return rows


def counts(session: Session, principal: Principal) -> dict[str, int]:
    """How many open tasks each view holds, up to :data:`COUNT_CAP`; past it an
    :class:`AtLeast` ("999+"): a count reads at most ``COUNT_CAP + 1`` rows of its view, so
    a ward with a hundred thousand open tasks costs what one with a thousand does."""
    # One statement in the usual case: the department view holds the two others, so its
    # first COUNT_CAP + 1 rows, each marked mine and overdue or not, count all three when they
    # are not past the cap (the visibility condition is built, sent and run once, not thrice).
    n, n_mine, n_overdue = session.execute(_counts_statement(principal)).one()
    if n <= COUNT_CAP:
        return {"mine": int(n_mine), "department": int(n), "overdue": int(n_overdue)}
    found = {"department": int(n)}
    for view in ("mine", "overdue"):  # past the cap: each of the others counted alone
        found[view] = int(session.scalar(_view_count_statement(principal, view)) or 0)
    return {view: AtLeast(COUNT_CAP + 1) if found[view] > COUNT_CAP else found[view]
            for view in ("mine", "department", "overdue")}


def task_json(task: Task) -> dict[str, Any]:
    return _task_row(task, now_utc(), local_writer())


def _task_row(task: Any, now: datetime, written: Callable[[datetime | None], str]
              ) -> dict[str, Any]:
    """:func:`task_json` of a ``Task`` or of a row with its columns (``now`` and the hospital's
    time zone resolved once per list, not once per row)."""
    due, created, completed = task.due_at, task.created_at, task.completed_at
    return {
        "id": task.id, "title": task.title, "kind": task.kind, "patient_id": task.patient_id,
        "department_id": task.department_id, "assignee_user_id": task.assignee_user_id,
        "assignee_role": task.assignee_role, "priority": task.priority, "status": task.status,
        "due_at": due.isoformat() if due else None, "sla": sla_state(task, now),
        "outcome": task.outcome, "notes": task.notes, "form_key": task.form_key,
        "source_type": task.source_type, "source_ref": task.source_ref,
        "created_at": created.isoformat(),
        "completed_at": completed.isoformat() if completed else None,
        # the same instants in hospital time, as a person reads them
        "due_at_display": written(due), "created_at_display": written(created),
        "completed_at_display": written(completed),
    }


def history(session: Session, task_id: int) -> list[TaskHistory]:
    return list(session.scalars(select(TaskHistory).where(TaskHistory.task_id == task_id)
                                .order_by(TaskHistory.id)).all())


def complete(session: Session, task: Task, principal: Principal, outcome: str,
             notes: str | None) -> None:
    if task.status in ("done", "cancelled"):
        raise ActionRefused("task is closed")
    if approvals.is_approval(session, task):
        # Completing would leave the flow waiting for a decision that never comes.
        raise DecideInstead("an approval task is decided, not completed")
    if outcome not in OUTCOMES:
        raise ActionRefused("unknown outcome")
    complete_task(session, task, actor=principal.username, outcome=outcome,
                  notes=(notes or "").strip()[:2000] or None)


def reassign(session: Session, task: Task, principal: Principal, user_id: int) -> None:
    if task.status in ("done", "cancelled"):
        raise ActionRefused("task is closed")
    before = task.assignee_user_id
    task.assignee_user_id = user_id
    add_history(session, task, principal.username, "reassigned",
                {"from": before, "to": user_id})


def escalate(session: Session, task: Task, principal: Principal) -> None:
    """Escalate by hand: one level up the task's declared chain (or the director, then the
    patient-experience office, for a task that declares none)."""
    if task.status in ("done", "cancelled"):
        raise ActionRefused("task is closed")
    step = escalate_task(session, task, actor=principal.username,
                         chain=[dict(s) for s in MANUAL_ESCALATION])
    if step is None:
        raise ActionRefused("nothing left to escalate to")


@dataclass(frozen=True, slots=True)
class PatientView:
    """The patient record as a page or the API shows it (phone and ID masked unless revealed)."""

    data: dict[str, Any]
    encounters: list[dict[str, Any]]
    tags: list[str]
    tasks: list[dict[str, Any]]


def _age(birth: date | None) -> int | None:
    return age_on(birth, local_today())  # the hospital's date, as every engine counts age


def department_names(session: Session) -> dict[str, dict[str, Any]]:
    return {d_id: name for d_id, name in session.execute(select(Department.id, Department.name))}


def patient_view(session: Session, patient: Patient, *, reveal: tuple[str, ...] = (),
                 hidden: HiddenStays | None = None) -> PatientView:
    """The patient's card, stays, tags and tasks; ``hidden`` stays (sensitive, not the
    viewer's) and their tasks are left out, and ``hidden_stays`` counts them."""
    data = {
        "id": patient.id, "mrn": patient.mrn, "name": patient.name, "gender": patient.gender,
        "age": _age(patient.birth_date),
        "birth_year": patient.birth_date.year if patient.birth_date else None,
        "phone": patient.phone if "phone" in reveal else mask_phone(patient.phone),
        "id_number": (patient.id_number if "id_number" in reveal
                      else mask_id_number(patient.id_number)),
        "locale": patient.locale, "consents": patient.consents,
        "revealed": sorted(reveal),
    }
    encounters = session.scalars(select(Encounter).where(Encounter.patient_id == patient.id)
                                 .order_by(Encounter.admitted_at.desc().nulls_last())).all()
    tags = session.scalars(select(PatientTag.tag).where(PatientTag.patient_id == patient.id)
                           .order_by(PatientTag.tag)).all()
    tasks = session.scalars(select(Task).where(Task.patient_id == patient.id)
                            .order_by(Task.created_at.desc()).limit(50)).all()
    hide = hidden or HiddenStays()
    data["hidden_stays"] = len(hide.encounters)
    now, written = now_utc(), local_writer()
    return PatientView(data, [encounter_json(e) for e in encounters if not hide.hides(e.id)],
                       list(tags), with_people(session, [
                           _task_row(t, now, written) for t in tasks
                           if not hide.hides(t.encounter_id, t.department_id)], patient))


def encounter_json(e: Encounter) -> dict[str, Any]:
    return {"id": e.id, "type": e.type, "department_id": e.department_id, "ward_id": e.ward_id,
            "status": e.status,
            "admitted_at": e.admitted_at.isoformat() if e.admitted_at else None,
            "discharged_at": e.discharged_at.isoformat() if e.discharged_at else None,
            "diagnoses": e.diagnoses.get("codes", []), "procedures": e.procedures.get("codes", [])}


@dataclass(frozen=True, slots=True)
class PatientSearch:
    """What staff search patients by: a name or MRN (part of it), a full phone number or ID
    number (exact, normalised), and tags (all of them)."""

    q: str = ""
    phone: str = ""
    id_number: str = ""
    tags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.q or self.phone or self.id_number or self.tags)


def _digits(value: str) -> str:
    digits = "".join(ch for ch in value if ch.isdigit())
    return digits[2:] if len(digits) == 13 and digits.startswith("86") else digits


def _normalised_phone(column: Any) -> Any:
    """The stored phone without the separators people type (spaces, dashes, +86)."""
    for ch in (" ", "-", "(", ")"):
        column = func.replace(column, ch, "")
    return column


def search_patients(session: Session, principal: Principal, q: str | PatientSearch,
                    limit: int = 50) -> list[Patient]:
    """Patients in scope matching the search: ``q`` is part of a name or an MRN (or an id's
    start); the phone and the ID number match whole (normalised), never by prefix."""
    query = patient_search_query(principal, q, limit)
    return [] if query is None else list(session.scalars(query).all())


def patient_search_query(principal: Principal, q: str | PatientSearch,
                         limit: int = 50) -> Select[Any] | None:
    """The query :func:`search_patients` runs (``None``: nothing can match). On PostgreSQL
    the containment match uses the trigram indexes of migration 0032."""
    search = q if isinstance(q, PatientSearch) else PatientSearch(q=q)
    query = select(Patient)
    visible = visible_patient_filter(principal)
    if visible is not None:
        query = query.where(Patient.id.in_(visible))
    text = search.q.strip()
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(Patient.mrn.like(pattern, escape="\\"),
                                Patient.name.like(pattern, escape="\\"),
                                Patient.id.startswith(text, autoescape=True)))
    if search.phone:
        digits = _digits(search.phone)
        if not digits:
            return None
        query = query.where(_normalised_phone(Patient.phone).in_(
            (digits, "+86" + digits, "86" + digits)))
    if search.id_number:
        wanted = search.id_number.strip().replace(" ", "").upper()
        if not wanted:
            return None
        query = query.where(func.upper(Patient.id_number) == wanted)
    for tag in search.tags:
        query = query.where(Patient.id.in_(select(PatientTag.patient_id)
                                           .where(PatientTag.tag == tag)))
    return query.order_by(Patient.mrn).limit(limit)


def tags_of(session: Session, patient_ids: list[str]) -> dict[str, list[str]]:
    """Each patient's tags (one query)."""
    out: dict[str, list[str]] = {}
    if not patient_ids:
        return out
    for pid, tag in session.execute(select(PatientTag.patient_id, PatientTag.tag).where(
            PatientTag.patient_id.in_(patient_ids)).order_by(PatientTag.tag)).all():
        out.setdefault(pid, []).append(tag)
    return out


def known_tags(session: Session) -> list[str]:
    """The tags patients carry (for the search's tag filter)."""
    return list(session.scalars(select(PatientTag.tag).distinct().order_by(PatientTag.tag)
                                .limit(200)).all())
