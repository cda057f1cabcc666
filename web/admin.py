"""Administration logic: users and role grants, departments and wards, the audit log query.

Separation of duties (三权分立, docs/security.md):

- the system, security and audit administrators' roles exclude one another and every role with
  patient data (:func:`grant` refuses the mix, whoever asks — the command line and the demo too);
- nobody grants or revokes their own roles, nor deactivates themselves (:func:`request_grant`,
  :func:`request_revoke`, :func:`request_status`);
- granting an administrative role, and deactivating (or revoking the role of) the last active
  auditor, is a pending :class:`~careloop.web.models.AdminRequest` until a second security
  administrator — not the requester, not the person concerned — approves it (:func:`decide`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, RoleGrant, User
from careloop.engine.models import AuditRow
from careloop.engine.registry import loaded_registry
from careloop.web import auth
from careloop.web.models import AdminRequest
from careloop.web.passwords import PasswordProblem, check_password
from careloop.web.permissions import (
    ADMIN_USERS,
    Principal,
    has_patient_data,
    is_admin_role,
)

AUDITOR = "auditor"
SENSITIVE_BY_DEFAULT = frozenset({"psychiatry"})

USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
ID = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


class AdminError(Exception):
    """Raised with an i18n key when an administration request is refused."""

    def __init__(self, key: str, **params: object) -> None:
        super().__init__(key)
        self.key, self.params = key, params


def create_user(session: Session, *, username: str, display_name: str, password: str,
                locale: str = "zh-CN", check: bool = True,
                password_hash: str | None = None) -> User:
    """Create a user with a password (policy-checked unless ``check=False``)."""
    if not USERNAME.match(username):
        raise AdminError("web.admin.bad_username")
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise AdminError("web.admin.username_taken")
    problems: list[PasswordProblem] = check_password(password, username=username) if check \
        else []
    if problems:
        raise AdminError(problems[0].code, **dict(problems[0].params))
    user = User(username=username, display_name=display_name or username, locale=locale)
    session.add(user)
    session.flush()
    auth.set_password(session, user, password, hashed=password_hash)
    return user


def _roles_of(session: Session, user_id: int) -> set[str]:
    return set(session.scalars(select(RoleGrant.role).where(RoleGrant.user_id == user_id)))


def check_compatible(session: Session, user: User, role: str) -> None:
    """Refuse a role that mixes administrative duties with each other or with patient data."""
    held = _roles_of(session, user.id) - {role}
    if is_admin_role(role):
        clash = any(is_admin_role(r) or has_patient_data(r) for r in held)
    else:
        clash = has_patient_data(role) and any(is_admin_role(r) for r in held)
    if clash:
        raise AdminError("web.sod.conflict")


def _check_target(role: str, department_id: str | None, session: Session) -> None:
    if role not in loaded_registry().catalogue("role"):
        raise AdminError("web.admin.unknown_role")
    if department_id and session.get(Department, department_id) is None:
        raise AdminError("web.admin.unknown_department")


def grant(session: Session, user: User, role: str, department_id: str | None) -> RoleGrant:
    """Give ``user`` the role (within a department, or hospital-wide); refuses a grant that
    breaks the separation of duties. Approval rules are the callers' (:func:`request_grant`)."""
    _check_target(role, department_id, session)
    check_compatible(session, user, role)
    existing = session.scalars(select(RoleGrant).where(
        RoleGrant.user_id == user.id, RoleGrant.role == role,
        RoleGrant.department_id.is_(None) if department_id is None
        else RoleGrant.department_id == department_id)).first()
    if existing is not None:
        return existing
    row = RoleGrant(user_id=user.id, role=role, department_id=department_id)
    session.add(row)
    session.flush()
    return row


def _active_auditors(session: Session) -> int:
    return int(session.scalar(select(func.count(func.distinct(RoleGrant.user_id)))
                              .join(User, User.id == RoleGrant.user_id)
                              .where(RoleGrant.role == AUDITOR, User.active.is_(True))) or 0)


def _is_last_auditor(session: Session, user: User) -> bool:
    return user.active and AUDITOR in _roles_of(session, user.id) \
        and _active_auditors(session) <= 1


def _pending(session: Session, me: Principal, action: str, user: User, role: str | None = None,
             department_id: str | None = None) -> AdminRequest:
    existing = session.scalars(select(AdminRequest).where(
        AdminRequest.status == "pending", AdminRequest.action == action,
        AdminRequest.user_id == user.id, AdminRequest.role.is_(None) if role is None
        else AdminRequest.role == role)).first()
    if existing is not None:
        return existing
    row = AdminRequest(action=action, user_id=user.id, role=role, department_id=department_id,
                       requested_by=me.username, requested_at=now_utc(), status="pending")
    session.add(row)
    session.flush()
    return row


def _not_yourself(me: Principal, user: User) -> None:
    if user.id == me.user_id:
        raise AdminError("web.sod.own_roles")


def request_grant(session: Session, me: Principal, user: User, role: str,
                  department_id: str | None) -> RoleGrant | AdminRequest:
    """A grant asked for on the users page: never to oneself; an administrative role waits for
    a second administrator (returns the pending request)."""
    _not_yourself(me, user)
    _check_target(role, department_id, session)
    check_compatible(session, user, role)
    if is_admin_role(role):
        return _pending(session, me, "grant", user, role, department_id)
    return grant(session, user, role, department_id)


def request_revoke(session: Session, me: Principal, row: RoleGrant) -> AdminRequest | None:
    """Revoke a grant (not one's own); the last active auditor's role waits for a second
    administrator (returns the pending request)."""
    user = session.get(User, row.user_id)
    assert user is not None
    _not_yourself(me, user)
    if row.role == AUDITOR and _is_last_auditor(session, user):
        return _pending(session, me, "revoke", user, row.role, row.department_id)
    session.delete(row)
    session.flush()
    return None


def request_status(session: Session, me: Principal, user: User,
                   action: str) -> AdminRequest | None:
    """Activate, deactivate or unlock a user; nobody deactivates themselves, and the last active
    auditor's deactivation waits for a second administrator (returns the pending request)."""
    if action == "deactivate":
        _not_yourself(me, user)
        if _is_last_auditor(session, user):
            return _pending(session, me, "deactivate", user)
    if action == "unlock":
        auth.unlock(session, user)
        return None
    user.active = action == "activate"
    if not user.active:
        auth.destroy_user_sessions(session, user.id)
    return None


def pending_requests(session: Session) -> list[AdminRequest]:
    return list(session.scalars(select(AdminRequest).where(AdminRequest.status == "pending")
                                .order_by(AdminRequest.id)).all())


def decide(session: Session, me: Principal, request_id: int, approve: bool) -> AdminRequest:
    """Approve or reject a pending request: by a second security administrator — neither the
    one who asked nor the person concerned."""
    row = session.get(AdminRequest, request_id)
    if row is None or row.status != "pending":
        raise AdminError("web.sod.no_request")
    if row.requested_by == me.username or row.user_id == me.user_id:
        raise AdminError("web.sod.second_admin")
    if not me.can(ADMIN_USERS):
        raise AdminError("web.sod.second_admin")
    user = session.get(User, row.user_id)
    assert user is not None
    if approve:
        if row.action == "grant" and row.role is not None:
            grant(session, user, row.role, row.department_id)
        elif row.action == "revoke":
            for found in session.scalars(select(RoleGrant).where(
                    RoleGrant.user_id == user.id, RoleGrant.role == row.role)).all():
                session.delete(found)
        elif row.action == "deactivate":
            user.active = False
            auth.destroy_user_sessions(session, user.id)
    row.status = "approved" if approve else "rejected"
    row.decided_by, row.decided_at = me.username, now_utc()
    session.flush()
    return row


def create_department(session: Session, *, id: str, name_zh: str, name_en: str,
                      parent_id: str | None, sensitive: bool | None = None) -> Department:
    """Create a department or ward. ``sensitive`` defaults to True for psychiatry (and a ward
    of a sensitive department is covered by its department)."""
    if not ID.match(id):
        raise AdminError("web.admin.bad_id")
    if session.get(Department, id) is not None:
        raise AdminError("web.admin.id_taken")
    if parent_id and session.get(Department, parent_id) is None:
        raise AdminError("web.admin.unknown_department")
    row = Department(id=id, name={"zh-CN": name_zh or id, "en": name_en or name_zh or id},
                     kind="ward" if parent_id else "department", parent_id=parent_id or None,
                     active=True,
                     sensitive=(id in SENSITIVE_BY_DEFAULT) if sensitive is None else sensitive)
    session.add(row)
    session.flush()
    return row


AUDIT_FILTERS = ("actor", "action", "patient_id", "outcome", "object_id")


def audit_query(filters: dict[str, Any], *, before_id: int | None = None,
                since: datetime | None = None, until: datetime | None = None,
                limit: int = 100) -> Select[AuditRow]:
    query = select(AuditRow)
    for name in AUDIT_FILTERS:
        value = filters.get(name)
        if value:
            query = query.where(getattr(AuditRow, name) == value)
    if since is not None:
        query = query.where(AuditRow.at >= since)
    if until is not None:
        query = query.where(AuditRow.at < until)
    if before_id:
        query = query.where(AuditRow.id < before_id)
    return query.order_by(AuditRow.id.desc()).limit(limit)


def audit_json(row: AuditRow) -> dict[str, Any]:
    return {"id": row.id, "at": row.at.isoformat(), "actor": row.actor,
            "actor_role": row.actor_role, "ip": row.ip, "action": row.action,
            "object_type": row.object_type, "object_id": row.object_id,
            "patient_id": row.patient_id, "outcome": row.outcome, "request_id": row.request_id,
            "details": row.details}
