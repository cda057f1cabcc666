"""Roles → permissions, and the departments/wards a user may see.

Roles come from ``registry.catalogue("role")``; :data:`ROLE_PERMISSIONS` maps each built-in role
to permissions, and a plugin that registers a new role adds its permissions with
``registry.catalogue("role_permissions").register(role, frozenset({...}))``.

Scope: a :class:`~careloop.engine.domain.RoleGrant` with ``department_id=None`` is hospital-wide;
one naming a department covers it and its wards; one naming a ward covers that ward only. A patient
is visible when one of their encounters is in the user's scope (department or ward).

Separation of duties (三权分立): the administrative roles (:data:`ADMIN_ROLES`) exclude one
another and every role with patient-data permissions; a user holding one gets no patient-data
permission whatever else the table says (see :mod:`careloop.web.admin` for who may grant them).

Sensitive stays: an encounter in a sensitive department (``departments.sensitive``, psychiatry
by default) — with its submissions, scores, flow runs and tasks — is seen only by staff whose own
grants name that department (or its ward), or after break-the-glass (:func:`hidden_stays`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache, lru_cache

from sqlalchemy import ColumnElement, Executable, Select, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Encounter, RoleGrant, Task, User
from careloop.engine.models import AuditRow
from careloop.engine.registry import loaded_registry

MAX_ID = 2**31 - 1  # the largest integer id PostgreSQL's INTEGER holds

PATIENT_VIEW = "patient.view"
PATIENT_REVEAL = "patient.reveal"
PATIENT_EXPORT = "patient.export"
TASK_WORK = "task.work"
TASK_REASSIGN = "task.reassign"
ADMIN_USERS = "admin.users"
ADMIN_DEPARTMENTS = "admin.departments"
BUNDLE_IMPORT = "bundle.import"
BUNDLE_EXPORT = "bundle.export"
AUDIT_VIEW = "audit.view"
DEFINITIONS_VIEW = "definitions.view"
REPORTS_VIEW = "reports.view"
COMPLAINTS_MANAGE = "complaints.manage"
BUILDER_EDIT = "builder.edit"

PERMISSIONS = (PATIENT_VIEW, PATIENT_REVEAL, PATIENT_EXPORT, TASK_WORK, TASK_REASSIGN,
               ADMIN_USERS, ADMIN_DEPARTMENTS, BUNDLE_IMPORT, BUNDLE_EXPORT, AUDIT_VIEW,
               DEFINITIONS_VIEW, REPORTS_VIEW, COMPLAINTS_MANAGE, BUILDER_EDIT)

_CLINICAL = frozenset({PATIENT_VIEW, TASK_WORK, DEFINITIONS_VIEW, REPORTS_VIEW})
PATIENT_DATA = frozenset({PATIENT_VIEW, PATIENT_REVEAL, PATIENT_EXPORT, TASK_WORK,
                          COMPLAINTS_MANAGE})
# the system, security and audit administrators: mutually exclusive, no patient data
ADMIN_ROLES = frozenset({"system_admin", "security_admin", "auditor"})
BREAK_GLASS = "patient.break_glass"
BREAK_GLASS_HOURS = 4

# Separation of duties (等保三级 三权分立): the system, security and audit administrators see no
# patient data.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "system_admin": frozenset({ADMIN_DEPARTMENTS, BUNDLE_IMPORT, BUNDLE_EXPORT,
                               DEFINITIONS_VIEW}),
    "security_admin": frozenset({ADMIN_USERS}),
    "auditor": frozenset({AUDIT_VIEW}),
    "leadership": frozenset({PATIENT_VIEW, DEFINITIONS_VIEW, REPORTS_VIEW}),
    "px_office": _CLINICAL | {PATIENT_REVEAL, PATIENT_EXPORT, TASK_REASSIGN, COMPLAINTS_MANAGE,
                               BUILDER_EDIT},
    "dept_director": _CLINICAL | {PATIENT_REVEAL, PATIENT_EXPORT, TASK_REASSIGN,
                                  BUILDER_EDIT, COMPLAINTS_MANAGE},
    "head_nurse": _CLINICAL | {PATIENT_REVEAL, TASK_REASSIGN, COMPLAINTS_MANAGE},
    "doctor": _CLINICAL | {PATIENT_REVEAL},
    "nurse": _CLINICAL,
    "followup_agent": _CLINICAL | {PATIENT_REVEAL},
    "pharmacist": _CLINICAL,
    "pharmacy_head": _CLINICAL | {TASK_REASSIGN},
}


def permissions_of(role: str) -> frozenset[str]:
    extra = loaded_registry().catalogue("role_permissions").get(role)
    perms = frozenset(extra) if extra is not None else ROLE_PERMISSIONS.get(role, frozenset())
    return perms - PATIENT_DATA if is_admin_role(role) else perms


def is_admin_role(role: str) -> bool:
    """An administrative role: a built-in one, or one a plugin registered ``administrative``."""
    info = loaded_registry().catalogue("role").get(role)
    return role in ADMIN_ROLES or bool(getattr(info, "administrative", False))


def has_patient_data(role: str) -> bool:
    """True when the role carries any permission over patients' data."""
    return bool(permissions_of(role) & PATIENT_DATA)


@dataclass(frozen=True, slots=True)
class Grant:
    role: str
    department_id: str | None


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user as authorisation sees them."""

    user_id: int
    username: str
    display_name: str
    grants: tuple[Grant, ...]
    scope: frozenset[str] | None  # None = hospital-wide; else department and ward ids
    permissions: frozenset[str] = field(default_factory=frozenset)

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def role_label(self) -> str:
        """The roles as one string for the audit log's ``actor_role``."""
        return ",".join(sorted({g.role for g in self.grants}))[:64]

    @property
    def primary_department(self) -> str | None:
        return next((g.department_id for g in self.grants if g.department_id), None)


def _expand(session: Session, department_ids: Iterable[str]) -> set[str]:
    ids = set(department_ids)
    wards = session.scalars(select(Department.id).where(Department.parent_id.in_(ids))).all()
    return ids | set(wards)


@cache
def _grants_statement() -> Executable:
    """A user's grants, each with the wards under its department: built once (every page's
    principal reads it), the user bound when it runs."""
    return (select(RoleGrant.id, RoleGrant.role, RoleGrant.department_id, Department.id)
            .outerjoin(Department, and_(RoleGrant.department_id.is_not(None),
                                        Department.parent_id == RoleGrant.department_id))
            .where(RoleGrant.user_id == bindparam("user_id")).order_by(RoleGrant.id))


def load_principal(session: Session, user: User) -> Principal:
    """Build the user's grants, permissions and scope from ``role_grants`` (one query: each
    grant with the wards under its department)."""
    rows = session.execute(_grants_statement(), {"user_id": user.id}).all()
    by_id: dict[int, Grant] = {}
    wards: dict[str, set[str]] = {}
    for grant_id, role, department_id, ward in rows:
        by_id.setdefault(grant_id, Grant(role, department_id))
        if department_id is not None and ward is not None:
            wards.setdefault(department_id, set()).add(ward)
    grants = tuple(by_id.values())
    perms: set[str] = set()
    for grant in grants:
        perms |= permissions_of(grant.role)
    if any(is_admin_role(g.role) for g in grants):
        perms -= PATIENT_DATA  # an administrator sees no patient data, whatever else they hold
    patient_grants = [g for g in grants if PATIENT_VIEW in perms
                      and PATIENT_VIEW in permissions_of(g.role)]
    scope: frozenset[str] | None
    if any(g.department_id is None for g in patient_grants):
        scope = None
    else:
        named = {g.department_id for g in patient_grants if g.department_id}
        scope = frozenset(named.union(*(wards.get(d, set()) for d in named)))
    return Principal(user.id, user.username, user.display_name, grants, scope, frozenset(perms))


def can_see_patient(session: Session, principal: Principal, patient_id: str) -> bool:
    """True when ``principal`` may see this patient (needs ``patient.view`` and scope)."""
    if not principal.can(PATIENT_VIEW):
        return False
    if principal.scope is None:
        return True
    if not principal.scope:
        return False
    hit = session.scalars(select(Encounter.id).where(
        Encounter.patient_id == patient_id,
        or_(Encounter.department_id.in_(principal.scope),
            Encounter.ward_id.in_(principal.scope))).limit(1)).first()
    return hit is not None


def visible_patient_filter(principal: Principal) -> Select[str] | None:
    """A SQL condition on ``patient_id`` columns for lists, or None for hospital-wide users.

    Use as ``query.where(Task.patient_id.in_(visible_patient_filter(principal)))``.
    """
    if principal.scope is None:
        return None
    return select(Encounter.patient_id).where(or_(
        Encounter.department_id.in_(principal.scope), Encounter.ward_id.in_(principal.scope)))


def sensitive_departments() -> Select[str]:
    """Sensitive departments and the wards under them (a SQL subquery of ids)."""
    sensitive = select(Department.id).where(Department.sensitive.is_(True))
    return select(Department.id).where(or_(Department.sensitive.is_(True),
                                           Department.parent_id.in_(sensitive)))


def own_departments(session: Session, principal: Principal) -> frozenset[str]:
    """The departments and wards the principal's grants name (hospital-wide grants name none)."""
    named = [g.department_id for g in principal.grants if g.department_id]
    return frozenset(_expand(session, named)) if named else frozenset()


def _own(principal: Principal) -> Select[str] | None:
    named = [g.department_id for g in principal.grants if g.department_id]
    if not named:
        return None
    return select(Department.id).where(or_(Department.id.in_(named),
                                           Department.parent_id.in_(named)))


def _hidden_departments(principal: Principal) -> Select[str]:
    """Sensitive departments (and wards) not named by one of the principal's own grants."""
    query = sensitive_departments()
    own = _own(principal)
    return query if own is None else query.where(Department.id.not_in(own))


def hidden_encounters(principal: Principal) -> Select[str]:
    """Encounters in a sensitive department, in none of the principal's own departments or
    wards (a SQL subquery). A ward's staff keep their ward's stays of a sensitive department."""
    hidden = _hidden_departments(principal)
    query = select(Encounter.id).where(or_(Encounter.department_id.in_(hidden),
                                           Encounter.ward_id.in_(hidden)))
    own = _own(principal)
    if own is not None:
        query = query.where(Encounter.department_id.not_in(own),
                            or_(Encounter.ward_id.is_(None), Encounter.ward_id.not_in(own)))
    return query


@dataclass(frozen=True, slots=True)
class HiddenStays:
    """One patient's sensitive stays a principal may not see: encounter and department ids."""

    encounters: frozenset[str] = frozenset()
    departments: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.encounters)

    def hides(self, encounter_id: str | None, department_id: str | None = None) -> bool:
        """A row of a hidden stay; a row without a stay is judged by its department."""
        if encounter_id is not None:
            return encounter_id in self.encounters
        return department_id is not None and department_id in self.departments


def broke_glass(session: Session, principal: Principal, patient_id: str) -> bool:
    """True when the principal broke the glass for this patient within the last hours."""
    since = now_utc() - timedelta(hours=BREAK_GLASS_HOURS)
    return session.scalars(select(AuditRow.id).where(
        AuditRow.action == BREAK_GLASS, AuditRow.actor == principal.username,
        AuditRow.patient_id == patient_id, AuditRow.outcome == "success",
        AuditRow.at >= since).limit(1)).first() is not None


def hidden_stays(session: Session, principal: Principal, patient_id: str) -> HiddenStays:
    """The patient's stays in sensitive departments that are not the principal's own, unless
    the principal broke the glass for this patient (audited ``patient.break_glass``).

    Read once per transaction (the patient page's panels each ask): forgotten when the
    transaction writes a department, a stay or an audit row (a break-the-glass)."""
    from careloop.engine import txcache

    return txcache.remember(session, ("web.hidden_stays", principal, patient_id),
                            lambda: _hidden_stays(session, principal, patient_id),
                            depends_on=(Department, Encounter, AuditRow))


def _hidden_stays(session: Session, principal: Principal, patient_id: str) -> HiddenStays:
    departments = frozenset(session.scalars(_hidden_departments(principal)).all())
    if not departments:
        return HiddenStays()
    encounters = frozenset(session.scalars(hidden_encounters(principal).where(
        Encounter.patient_id == patient_id)).all())
    if not encounters or broke_glass(session, principal, patient_id):
        return HiddenStays()
    return HiddenStays(encounters, departments)


def _not_hidden_stay(principal: Principal) -> ColumnElement[bool]:
    """The task's stay is not one of :func:`hidden_encounters`, read from the task's copy of its
    stay's department and ward (``tasks.stay_department_id`` / ``stay_ward_id``, kept by the
    database: :mod:`careloop.engine.task_stay`): per task two probes of the (small, hashed)
    set of hidden departments, where looking the stay up in ``encounters`` for every task of a
    view cost seconds at 100,000 open tasks. Written positively and NULL-safe (a ward-less
    stay has ``stay_ward_id`` NULL): neither column is hidden, or one is the principal's own."""
    hidden = _hidden_departments(principal)
    shown = and_(*(or_(column.is_(None), column.not_in(hidden))
                   for column in (Task.stay_department_id, Task.stay_ward_id)))
    own = _own(principal)
    if own is None:
        return shown
    return or_(shown, *(and_(column.is_not(None), column.in_(own))
                        for column in (Task.stay_department_id, Task.stay_ward_id)))


@lru_cache(maxsize=256)
def task_visibility(principal: Principal) -> ColumnElement[bool] | None:
    """A SQL condition on ``tasks`` for the tasks ``principal`` may see.

    A task is seen by the user it is assigned to, by the holders of its role queue, and within
    the department (or ward) it was assigned to — whatever the patient's own stays; a task with
    no department is seen where its patient is. The pharmacy head sees the pharmacy's copy of a
    cardiology patient's complaint; cardiology does not see the pharmacy's task. A task of a
    sensitive stay (or of a sensitive department) outside the principal's own departments is seen
    only when assigned to them or to their role queue.

    Built once per principal (remembered for the last 256): the condition is a pure function of
    the principal's value (user, grants, scope) — every fact it depends on in the database
    (sensitive departments, wards, stays) is read by the SQL when it runs — so a grant or a
    department changed elsewhere is seen by the next query, in this process or another. A task's
    stay is judged by the task's copy of its department and ward, which the database keeps
    (:mod:`careloop.engine.task_stay`), not by a look-up of the stay for each task.
    """
    hidden = _hidden_departments(principal)
    not_sensitive = or_(
        and_(Task.encounter_id.is_not(None), _not_hidden_stay(principal)),
        and_(Task.encounter_id.is_(None),
             or_(Task.department_id.is_(None), Task.department_id.not_in(hidden))))
    roles = [and_(Task.assignee_role == g.role, Task.department_id == g.department_id)
             if g.department_id else Task.assignee_role == g.role for g in principal.grants]
    if principal.scope is None:
        return or_(Task.assignee_user_id == principal.user_id, *roles, not_sensitive)
    visible = visible_patient_filter(principal)
    assert visible is not None  # scoped principals always have a patient filter
    return or_(Task.assignee_user_id == principal.user_id, *roles,
               and_(not_sensitive, or_(
                   Task.department_id.in_(principal.scope or frozenset()),
                   and_(Task.department_id.is_(None), Task.patient_id.in_(visible)))))


def can_see_task(session: Session, principal: Principal, task_id: int) -> bool:
    """True when the task is in ``principal``'s lists (see :func:`task_visibility`)."""
    condition = task_visibility(principal)
    query = select(Task.id).where(Task.id == task_id)
    if condition is not None:
        query = query.where(condition)
    return session.scalars(query.limit(1)).first() is not None
