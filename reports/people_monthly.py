"""The monthly people report: once a month, each department's PDF for the month before, linked
from a message to each of the department's heads (科主任).

Runs on the ticker (``reports.people_monthly`` in the tick catalogue), like the daily
``scheduled`` event: once the hospital-local clock has passed the daily time
(:func:`careloop.engine.events.daily_at`) on any day of a month, every department with a head
and no PDF yet for the month before gets one. ``people_report_files`` is unique per (department,
month), so however many processes tick, a month's PDF is made and sent once; a month missed while
the server was down is made on the next tick.

    tick at 2027-01-01 08:00 ──▶ people_report_files (cardiology, 2026-12)
                             ──▶ outbox: people_report_monthly to 李主任 (wecom)
                                 "心内科2026-12医护服务质量报告…：https://…/people-reports/files/7"

The message carries an absolute link to the PDF, which opens only for a signed-in person allowed
to read that department's report (the PDF itself never leaves in the message).
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import links
from careloop.engine.clock import now_utc, to_local
from careloop.engine.db import transaction
from careloop.engine.domain import Department, User
from careloop.engine.events import daily_at
from careloop.engine.registry import loaded_registry
from careloop.engine.services import OUTBOX_ENQUEUE, find_service
from careloop.reports import people
from careloop.reports.people_models import PeopleReportFile
from careloop.reports.people_pdf import pdf_bytes

log = logging.getLogger("careloop.reports.people")

TEMPLATE = "people_report_monthly"
HEAD_ROLES = ("dept_director",)
CHANNEL_ENV = "CARELOOP_PEOPLE_REPORT_CHANNEL"
DEFAULT_CHANNEL = "wecom"  # the staff channel (staff_addresses); the log channel where unset


def channel() -> str:
    """The channel the monthly message goes on (``CARELOOP_PEOPLE_REPORT_CHANNEL``)."""
    return os.environ.get(CHANNEL_ENV, "").strip() or DEFAULT_CHANNEL


def file_path(file_id: int) -> str:
    return f"/people-reports/files/{file_id}"


def _departments(session: Session) -> list[Department]:
    return list(session.scalars(select(Department).where(
        Department.kind == "department", Department.active.is_(True)).order_by(Department.id)))


def make_month(session: Session, department: Department, month: str) -> PeopleReportFile | None:
    """Make and send one department's PDF for ``month``; ``None`` when it exists already or the
    department has no head to send it to."""
    heads = people.heads_of(session, department.id, HEAD_ROLES)
    if not heads or session.scalars(select(PeopleReportFile.id).where(
            PeopleReportFile.department_id == department.id,
            PeopleReportFile.month == month)).first() is not None:
        return None
    start, end = people.month_bounds(month)
    report = people.people_report(session, department.id, start, end, "zh-CN",
                                  frozenset({department.id}))
    row = PeopleReportFile(department_id=department.id, month=month,
                           min_sample=report.min_sample, pdf=pdf_bytes(report, "zh-CN"),
                           created_at=now_utc())
    session.add(row)
    session.flush()
    enqueue = find_service(loaded_registry(), OUTBOX_ENQUEUE)
    if enqueue is None:
        return row  # no flow engine installed: the PDF waits on the page
    for user_id in heads:
        user = session.get(User, user_id)
        locale = user.locale if user is not None else "zh-CN"
        name = people.department_name(session, department.id, locale)
        enqueue(session, template_key=TEMPLATE, channel=channel(), user_id=user_id,
                values={"department": name, "month": month,
                        "link": links.absolute(file_path(row.id))},
                locale=locale, idempotency_key=f"people-report:{department.id}:{month}:{user_id}",
                source_ref=f"people_report:{row.id}")
    return row


def run_monthly(engine: Engine) -> int:
    """The tick: make last month's PDFs still missing; returns how many were made."""
    local = to_local(now_utc())
    if local.time() < daily_at():
        return 0
    month = people.previous_month(local.date())
    made = 0
    with transaction(engine) as session:
        if not people.installed(session) or store_missing_template(session):
            return 0
        ids = [d.id for d in _departments(session)]
    for department_id in ids:  # one transaction per department: one failing stops no other
        try:
            with transaction(engine) as session:
                department = session.get(Department, department_id)
                if department is not None and make_month(session, department, month):
                    made += 1
        except IntegrityError:  # another process made it between our check and our insert
            continue
    if made:
        log.info("people reports made for %s: %d department(s)", month, made)
    return made


def store_missing_template(session: Session) -> bool:
    from careloop.engine import store

    return store.current(session, "template", TEMPLATE) is None
