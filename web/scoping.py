"""Patient-level routes: declared once, enforced for every route by one app-wide dependency.

A route that shows or changes one patient's data says where the patient comes from::

    @router.get("/patients/{patient_id}")
    @patient_level("patient_id")                 # the path parameter is a patient id
    def patient_page(...): ...

    @router.post("/tasks/{task_id}/complete")
    @patient_level("task_id", via="task")        # the patient is the task's patient
    def complete(...): ...

:func:`enforce_patient_scope` runs before every route (it is an app dependency, so the engines'
routers get it too): for a marked route it resolves the patient id through the
``patient_resolver`` catalogue (``via`` → ``fn(session, value) -> patient id | None``) and refuses
(HTTP 403, audited) when the signed-in user may not see that patient — unless the
``object_access`` catalogue has ``fn(session, principal, value) -> bool`` for ``via`` and it
grants access to that object (a complaint for the staff of the department it is about).
Scope is per stay: when the ``object_stay`` catalogue has ``fn(session, value) -> (encounter id,
department id)`` for ``via`` and that stay is in a sensitive department the user does not
belong to (:func:`~careloop.web.permissions.hidden_stays`), the object is refused although its
patient is visible — unless the object itself is theirs (a task assigned to them) or they broke
the glass for the patient.
Engines register their resolvers (e.g. ``submission``) and mark their routes the same way;
``tests/web/test_scoping.py`` walks every marked route, so a new patient-level route cannot
forget its scope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from careloop.engine.db import transaction
from careloop.engine.domain import Encounter, Patient, Task
from careloop.engine.registry import Registry, loaded_registry
from careloop.web.deps import Forbidden, record, require_user
from careloop.web.permissions import (
    MAX_ID,
    Principal,
    can_see_patient,
    can_see_task,
    hidden_stays,
)

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__careloop_patient_level__"


@dataclass(frozen=True, slots=True)
class PatientParam:
    """Which path parameter identifies the patient, and how to turn it into a patient id."""

    param: str
    via: str


def patient_level(param: str = "patient_id", *, via: str = "patient") -> Callable[[F], F]:
    """Mark a route endpoint as patient-level (put it *below* the ``@router.get`` line)."""
    def mark(fn: F) -> F:
        setattr(fn, MARK, PatientParam(param, via))
        return fn
    return mark


def marker_of(endpoint: object) -> PatientParam | None:
    value = getattr(endpoint, MARK, None)
    return value if isinstance(value, PatientParam) else None


def _patient(session: Session, value: str) -> str | None:
    return value if session.get(Patient, value) is not None else None


def _task_id(value: str) -> int | None:
    return int(value) if value.isdigit() and 0 < int(value) <= MAX_ID else None


def _task(session: Session, value: str) -> str | None:
    task_id = _task_id(value)
    task = session.get(Task, task_id) if task_id is not None else None
    return task.patient_id if task is not None else None


def _encounter(session: Session, value: str) -> str | None:
    encounter = session.get(Encounter, value)
    return encounter.patient_id if encounter is not None else None


def _submission(session: Session, value: str) -> str | None:
    from careloop.forms.models import Submission

    sub_id = int(value) if value.isdigit() and 0 < int(value) <= MAX_ID else None
    submission = session.get(Submission, sub_id) if sub_id is not None else None
    return submission.patient_id if submission is not None else None


def register_resolvers(registry: Registry) -> None:
    resolvers = registry.catalogue("patient_resolver")
    resolvers.register("patient", _patient)
    resolvers.register("task", _task)
    resolvers.register("encounter", _encounter)
    resolvers.register("submission", _submission)
    resolvers.register("alert", _alert)
    from careloop.web import complaints

    # A complaint is the department's business as well as its patient's: staff of the
    # department it is about may open it although the patient never stayed there.
    resolvers.register("complaint", complaints.complaint_patient)
    # Objects whose own assignment lets a user act on them without the patient in their scope.
    access = registry.catalogue("object_access")
    access.register("complaint", complaints.may_open)
    access.register("task", _can_open_task)
    access.register("alert", _can_see_alert)
    # Which stay an object belongs to (a sensitive stay is seen by its department's staff only).
    stays = registry.catalogue("object_stay")
    stays.register("submission", _submission_stay)
    stays.register("task", _task_stay)
    stays.register("encounter", _encounter_stay)


Stay = tuple[str | None, str | None]


def _submission_stay(session: Session, value: str) -> Stay | None:
    from careloop.forms.models import Submission

    sub_id = _task_id(value)
    sub = session.get(Submission, sub_id) if sub_id is not None else None
    return (sub.encounter_id, sub.department_id) if sub is not None else None


def _task_stay(session: Session, value: str) -> Stay | None:
    task_id = _task_id(value)
    task = session.get(Task, task_id) if task_id is not None else None
    return (task.encounter_id, task.department_id) if task is not None else None


def _encounter_stay(session: Session, value: str) -> Stay | None:
    encounter = session.get(Encounter, value)
    return (encounter.id, encounter.department_id) if encounter is not None else None


def stay_hidden(session: Session, principal: Principal, via: str, value: str,
                patient_id: str) -> bool:
    """True when the object named by ``via``/``value`` belongs to a sensitive stay of this
    patient that ``principal`` may not see."""
    locate = loaded_registry().catalogue("object_stay").get(via)
    if locate is None:
        return False
    stay = locate(session, value)
    if stay is None:
        return False
    hidden = hidden_stays(session, principal, patient_id)
    return bool(hidden) and hidden.hides(stay[0], stay[1])


def resolve_patient(session: Session, via: str, value: str) -> str | None:
    resolver = loaded_registry().catalogue("patient_resolver").get(via)
    if resolver is None:
        raise LookupError(f"no patient resolver '{via}' is registered")
    result: str | None = resolver(session, value)
    return result


async def enforce_patient_scope(request: Request) -> None:
    """App-wide dependency; a no-op for routes that are not patient-level, decided on the event
    loop (no thread-pool hop for the events API, form links, the inbox…); the check of a
    patient-level route reads the database in the thread pool."""
    route = request.scope.get("route")
    endpoint = request.scope.get("endpoint") or getattr(route, "endpoint", None)
    mark = marker_of(endpoint)
    if mark is None:
        return
    await run_in_threadpool(_enforce, request, mark)


def _enforce(request: Request, mark: PatientParam) -> None:
    principal = require_user(request)
    value = str(request.path_params.get(mark.param, ""))
    with transaction() as session:
        patient_id = resolve_patient(session, mark.via, value)
        if patient_id is None:
            if mark.via != "patient" and value:
                # an object without a patient (e.g. a department task): not patient-level
                exists = loaded_registry().catalogue("patient_resolver").get(mark.via)
                if exists is not None and _object_exists(session, mark.via, value):
                    return
            raise HTTPException(status_code=404)
        allowed = can_see_patient(session, principal, patient_id)
        sensitive = allowed and stay_hidden(session, principal, mark.via, value, patient_id)
        allowed = allowed and not sensitive
        grant = loaded_registry().catalogue("object_access").get(mark.via)
        by_object = not allowed and grant is not None and bool(grant(session, principal, value))
        if by_object:
            # The object (a task, an alert, a complaint about their department) is theirs: they
            # may act on it with the minimum patient context it carries — and that is audited.
            record(request, principal, "patient.access", session=session,
                   outcome="success", object_type=mark.via, object_id=value[:128],
                   patient_id=patient_id,
                   details={"basis": f"{mark.via}_assignment",
                            "route": request.url.path[:200]})
    allowed = allowed or by_object
    request.state.patient_id = patient_id
    if not allowed:
        details: dict[str, Any] = {"route": request.url.path[:200]}
        if sensitive:
            details["sensitive_stay"] = True
        record(request, principal, "patient.access", outcome="denied", object_type=mark.via,
               object_id=value[:128], patient_id=patient_id, details=details)
        raise Forbidden()


def _object_exists(session: Session, via: str, value: str) -> bool:
    """An object that exists but belongs to no patient (a department task, a rule-set alert) is
    scoped by its own route, not by the patient scope."""
    object_id = _task_id(value)
    if object_id is None:
        return False
    if via == "task":
        return session.get(Task, object_id) is not None
    if via == "alert":
        from careloop.rules.models import RuleAlert

        return session.get(RuleAlert, object_id) is not None
    if via == "submission":  # an anonymous answer at a touchpoint: scoped by its department
        from careloop.forms.models import Submission

        return session.get(Submission, object_id) is not None
    return False


def _alert(session: Session, value: str) -> str | None:
    from careloop.rules.models import RuleAlert

    alert_id = _task_id(value)
    alert = session.get(RuleAlert, alert_id) if alert_id is not None else None
    return alert.patient_id if alert is not None else None


def _can_see_alert(session: Session, principal: Principal, value: str) -> bool:
    from careloop.web.alerts import can_see

    alert_id = _task_id(value)
    return alert_id is not None and can_see(session, principal, alert_id)


def _can_open_task(session: Session, principal: Principal, value: str) -> bool:
    task_id = _task_id(value)
    return task_id is not None and can_see_task(session, principal, task_id)


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One HTTP route of the app, flattened out of included routers."""

    path: str
    methods: frozenset[str]
    endpoint: Any

    @property
    def patient(self) -> PatientParam | None:
        return marker_of(self.endpoint)


def iter_routes(routes: Any, prefix: str = "") -> list[RouteInfo]:
    """Every route with its full path (recursing into included routers)."""
    found: list[RouteInfo] = []
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            context = getattr(route, "include_context", None)
            found += iter_routes(original.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif hasattr(route, "endpoint") and hasattr(route, "methods"):
            found.append(RouteInfo(prefix + route.path, frozenset(route.methods or ()),
                                   route.endpoint))
    return found
