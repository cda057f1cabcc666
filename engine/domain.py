"""The hospital domain every engine shares: departments, staff and roles, patients, encounters,
patient tags, and tasks (the to-do items rules and flows create).

Personal data (name, phone, ID number, birth date) lives only in ``patients``; other tables and
every log line carry the patient's opaque ``id``. Use :mod:`careloop.engine.privacy` to show it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, String, Text, UniqueConstraint, event, false
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine import txcache
from careloop.engine.models import Base, utcnow


class Department(Base):
    """A department (科室) or a ward (病区, ``parent_id`` = its department)."""

    __tablename__ = "departments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[dict[str, Any]]
    kind: Mapped[str] = mapped_column(String(16), default="department")  # department | ward
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("departments.id"))
    active: Mapped[bool] = mapped_column(default=True)
    # a sensitive department's stays (psychiatry by default) are seen by its own staff only
    sensitive: Mapped[bool] = mapped_column(default=False, server_default=false())


class User(Base):
    """A staff member. Authentication columns are added by the web runtime."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    locale: Mapped[str] = mapped_column(String(16), default="zh-CN")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoleGrant(Base):
    """A role held by a user, scoped to one department/ward (or hospital-wide when null)."""

    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "role", "department_id",
                                       name="uq_role_grants_user_role_dept"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(32), index=True)
    department_id: Mapped[str | None] = mapped_column(ForeignKey("departments.id"), index=True)


class Patient(Base):
    """A patient. ``id`` is opaque (safe in references and logs); ``mrn`` is the HIS id."""

    __tablename__ = "patients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mrn: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    gender: Mapped[str | None] = mapped_column(String(16))
    birth_date: Mapped[date | None] = mapped_column(Date)
    phone: Mapped[str | None] = mapped_column(String(32))
    id_number: Mapped[str | None] = mapped_column(String(32))
    locale: Mapped[str] = mapped_column(String(16), default="zh-CN")
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    consents: Mapped[dict[str, Any]] = mapped_column(default=dict)  # channel -> bool
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


@event.listens_for(Patient, "load")
def _hide_in_logs(target: Patient, context: object) -> None:
    """A patient loaded while handling a request: their name, MRN and birth date are redacted
    from the request's log lines (:func:`careloop.engine.logs.hide`)."""
    from careloop.engine import logs

    logs.hide(target.name, target.mrn, target.birth_date)


class Encounter(Base):
    """A visit or stay: where the patient was, who was responsible, and when."""

    __tablename__ = "encounters"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))  # inpatient | outpatient | emergency
    department_id: Mapped[str] = mapped_column(ForeignKey("departments.id"), index=True)
    ward_id: Mapped[str | None] = mapped_column(ForeignKey("departments.id"), index=True)
    attending_doctor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    responsible_nurse_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(24), default="admitted")
    admitted_at: Mapped[datetime | None]
    discharged_at: Mapped[datetime | None] = mapped_column(index=True)
    diagnoses: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"codes": [...], ...}
    procedures: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PatientTag(Base):
    """A tag (segment) on a patient, e.g. ``after_pci`` or ``aged_70_plus``."""

    __tablename__ = "patient_tags"
    __table_args__ = (UniqueConstraint("patient_id", "tag", name="uq_patient_tags_patient_tag"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    """A to-do item for a user, or for a role within a department."""

    __tablename__ = "tasks"
    # one index per inbox view (migrations 0032, 0039): overdue, mine, my department, a role queue
    __table_args__ = (Index("ix_tasks_status_due", "status", "due_at"),
                      Index("ix_tasks_assignee_status_due", "assignee_user_id", "status",
                            "due_at"),
                      Index("ix_tasks_department_status_due", "department_id", "status",
                            "due_at"),
                      Index("ix_tasks_role_department_status_due", "assignee_role",
                            "department_id", "status", "due_at"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32), default="todo")  # todo | phone_followup | …
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[str | None] = mapped_column(ForeignKey("encounters.id"), index=True)
    department_id: Mapped[str | None] = mapped_column(ForeignKey("departments.id"), index=True)
    # the stay's department and ward, copied by the database (engine/task_stay.py, migration
    # 0040) so that the inbox's sensitive-stay check reads the task's row, not its encounter;
    # never set or read in Python (an object keeps None until reloaded)
    stay_department_id: Mapped[str | None] = mapped_column(String(64))
    stay_ward_id: Mapped[str | None] = mapped_column(String(64))
    assignee_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    assignee_role: Mapped[str | None] = mapped_column(String(32))
    priority: Mapped[str] = mapped_column(String(16), default="normal")  # urgent|high|normal|low
    # open | in_progress | done | cancelled
    status: Mapped[str] = mapped_column(String(16), default="open")
    due_at: Mapped[datetime | None]
    escalation: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"chain": [...], "level": 0}
    outcome: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(Text)
    source_type: Mapped[str | None] = mapped_column(String(16))  # rule | flow | manual
    source_ref: Mapped[str | None] = mapped_column(String(255))
    form_key: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class TaskHistory(Base):
    """Append-only history of a task (created, assigned, escalated, completed…)."""

    __tablename__ = "task_history"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


# Read by every expression context, template and scope check of a transaction: kept once read
# (engine/txcache.py), so a flow's steps and a rule's actions do not read them again.
for _cls in (Department, User, Patient, Encounter):
    txcache.pin_class(_cls)
