"""Administration logic: users and role grants, departments and wards, the audit log query."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from careloop.engine.domain import Department, RoleGrant, User
from careloop.engine.models import AuditRow
from careloop.engine.registry import loaded_registry
from careloop.web import auth
from careloop.web.passwords import PasswordProblem, check_password

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


def grant(session: Session, user: User, role: str, department_id: str | None) -> RoleGrant:
    if role not in loaded_registry().catalogue("role"):
        raise AdminError("web.admin.unknown_role")
    if department_id and session.get(Department, department_id) is None:
        raise AdminError("web.admin.unknown_department")
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


def create_department(session: Session, *, id: str, name_zh: str, name_en: str,
                      parent_id: str | None) -> Department:
    if not ID.match(id):
        raise AdminError("web.admin.bad_id")
    if session.get(Department, id) is not None:
        raise AdminError("web.admin.id_taken")
    if parent_id and session.get(Department, parent_id) is None:
        raise AdminError("web.admin.unknown_department")
    row = Department(id=id, name={"zh-CN": name_zh or id, "en": name_en or name_zh or id},
                     kind="ward" if parent_id else "department", parent_id=parent_id or None,
                     active=True)
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
