"""Consult / Q&A at run time: a patient asks, the desk's named doctor or health manager answers,
the answer goes back through the patient's channel.

    /d/{token}/ask (any patient link)  ──ask──▶ Consult + Task(kind="consult",
        due = asked_at + working hours of the desk's calendar, escalation chain of the desk)
        + ConsultLink → the patient sees their question at /q/{token}
    staff answer (free text or a canned answer) ──answer──▶ Task done, Consult answered,
        outbox "consult_answer" on the patient's channel with an absolute /q/{token} link
    the patient opens it ──open_thread──▶ the thread; the first reading is recorded

An unanswered question's task is overdue at its due time and the flow sweep moves it up the
desk's ``escalate_to`` (:func:`careloop.engine.tasks.escalate_overdue`), like any task deadline.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import audit, links
from careloop.engine.clock import now_utc
from careloop.engine.context import latest_encounter
from careloop.engine.domain import Patient, Task, User
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.tasks import (
    Assignee,
    AssigneeError,
    add_history,
    complete_task,
    create_task,
    resolve_assignee,
)
from careloop.flows import consult as desks
from careloop.flows.calendar import get_calendar
from careloop.flows.consult_models import Consult, ConsultLink
from careloop.flows.outbox import enqueue

TEMPLATE = "consult_answer"
LINK_DAYS = 30
MAX_QUESTION = 1000
MAX_ANSWER = 2000
ENTRY_KINDS = ("d", "r", "q")  # the patient links a question may be asked from


class ConsultError(CareloopError):
    """Raised for a question or an answer that cannot be taken: ``key`` is the i18n key of the
    message the person reads, ``field`` the form field it is about."""

    def __init__(self, key: str, field: str) -> None:
        super().__init__(f"{field}: {key}")
        self.key, self.field = key, field


class LinkExpired(CareloopError):
    """Raised when a consult link is past its expiry."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def patient_of_link(session: Session, kind: str, token: str) -> str:
    """The patient a patient link opens (a document, results or consult link).

    Raises:
        NotFound: for an unknown kind or token; ``LinkExpired`` of that link's module when
            it is past its expiry.
    """
    if kind == "d":
        from careloop.flows.documents import open_link as open_document

        return open_document(session, token).patient_id
    if kind == "r":
        from careloop.flows.results import open_link as open_results

        return open_results(session, token)[0]
    if kind == "q":
        return _link(session, token)[1].patient_id
    raise NotFound("no such patient link")


def suggested_desk(session: Session, patient_id: str,
                   found: list[desks.ConsultDeskSpec]) -> str | None:
    """The desk of the patient's latest stay's department, if there is one."""
    encounter = latest_encounter(session, patient_id)
    department = encounter.department_id if encounter is not None else None
    return next((d.key for d in found if d.department == department), None)


def _new_link(session: Session, consult: Consult) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(24)  # 192 bits
    expires = now_utc() + timedelta(days=LINK_DAYS)
    session.add(ConsultLink(token_hash=_hash(token), consult_id=consult.id,
                            created_at=now_utc(), expires_at=expires))
    session.flush()
    return token, expires


def _assignee(session: Session, desk: desks.ConsultDeskSpec, patient_id: str) -> Assignee:
    """The desk's answerer; a named user who left falls back to the first escalation level."""
    try:
        return resolve_assignee(session, desk.assignee_rule(), patient_id=patient_id)
    except AssigneeError:
        return resolve_assignee(session, desk.chain()[0], patient_id=patient_id)


def ask(session: Session, *, patient_id: str, desk_key: str, question: str, via: str,
        locale: str) -> tuple[Consult, str]:
    """Take a patient's question; returns the consult and the token of its thread link.

    Raises:
        ConsultError: for an empty or too long question (``question``) or an unknown desk
            (``desk``); nothing is written then.
    """
    text = (question or "").strip()
    if not text:
        raise ConsultError("consult.error.question_empty", "question")
    if len(text) > MAX_QUESTION:
        raise ConsultError("consult.error.question_long", "question")
    try:
        desk = desks.load(session, desk_key)
    except NotFound:
        raise ConsultError("consult.error.desk", "desk") from None
    now = now_utc()
    due = get_calendar(session, desk.calendar).add_working_hours(now, desk.working_hours)
    consult = Consult(patient_id=patient_id, desk_key=desk.key, department_id=desk.department,
                      question=text, locale=locale, via=via, status="open", asked_at=now,
                      due_at=due)
    session.add(consult)
    session.flush()
    task, _ = create_task(
        session, title=f"在线咨询 · {desk.title_in('zh-CN')}", kind="consult",
        assignee=_assignee(session, desk, patient_id), actor="patient", patient_id=patient_id,
        due_at=due, source_type="consult", source_ref=f"consult:{consult.id}",
        idempotency_key=f"consult:{consult.id}",
        escalation={"chain": desk.chain(), "level": 0},
        details={"consult_id": consult.id, "desk": desk.key})
    consult.task_id = task.id
    token, _ = _new_link(session, consult)
    audit.append(session, actor="patient", action="consult.asked", object_type="consult",
                 object_id=str(consult.id), patient_id=patient_id,
                 details={"desk": desk.key, "via": via})
    return consult, token


def answer(session: Session, consult: Consult, *, user: User, text: str | None,
           canned_key: str | None) -> int:
    """Answer a question (free text, or a canned answer chosen by title: the text staff typed
    wins over the canned one); returns the id of the message to the patient.

    Raises:
        ConsultError: already answered (``answer``), an unknown canned answer (``canned``), an
            empty or too long answer (``answer``); nothing is written then.
    """
    if consult.status == "answered":
        raise ConsultError("consult.error.answered", "answer")
    desk = desks.load(session, consult.desk_key)
    body = (text or "").strip()
    if canned_key:
        canned = desk.canned_answer(canned_key)
        if canned is None:
            raise ConsultError("consult.error.canned", "canned")
        body = body or canned.text_in(consult.locale)
    if not body:
        raise ConsultError("consult.error.answer_empty", "answer")
    if len(body) > MAX_ANSWER:
        raise ConsultError("consult.error.answer_long", "answer")
    consult.status, consult.answer = "answered", body
    consult.canned_key = canned_key or None
    consult.answered_by, consult.answered_at = user.id, now_utc()
    task = session.get(Task, consult.task_id) if consult.task_id else None
    if task is not None and task.status in ("open", "in_progress"):
        complete_task(session, task, actor=user.username, notes=None)
        add_history(session, task, user.username, "consult_answered", {"consult": consult.id})
    token, expires = _new_link(session, consult)
    patient = session.get(Patient, consult.patient_id)
    if patient is None:
        raise NotFound(f"no patient {consult.patient_id!r}")
    from careloop.flows.results import patient_channel

    return enqueue(session, template_key=TEMPLATE, channel=patient_channel(patient),
                   patient_id=patient.id, locale=consult.locale, values={
                       "patient_name": patient.name, "desk": desk.title_in(consult.locale),
                       "answered_by": user.display_name,
                       "answer_link": links.absolute(f"/q/{token}")},
                   idempotency_key=f"consult-answer:{consult.id}",
                   source_ref=f"consult:{consult.id}", link_expires_at=expires)


def _link(session: Session, token: str) -> tuple[ConsultLink, Consult]:
    if not token or len(token) > 128:
        raise NotFound("no such consult link")
    link = session.scalars(select(ConsultLink).where(
        ConsultLink.token_hash == _hash(token))).first()
    consult = session.get(Consult, link.consult_id) if link is not None else None
    if link is None or consult is None:
        raise NotFound("no such consult link")
    if link.expires_at <= now_utc():
        raise LinkExpired("consult link expired")
    return link, consult


def open_thread(session: Session, token: str) -> Consult:
    """The consult a patient's link opens; the first reading of an answer is recorded (and
    audited as the patient's).

    Raises:
        NotFound: an unknown token. LinkExpired: past its expiry.
    """
    link, consult = _link(session, token)
    now = now_utc()
    if link.opened_at is None:
        link.opened_at = now
    if consult.status == "answered" and consult.read_at is None:
        consult.read_at = now
        audit.append(session, actor="patient", action="consult.answer_read",
                     object_type="consult", object_id=str(consult.id),
                     patient_id=consult.patient_id, details={"desk": consult.desk_key})
    return consult


@dataclass(frozen=True, slots=True)
class Thread:
    """A consult as a person reads it (times aware UTC; the page shows them in local time)."""

    id: int
    patient_id: str
    desk: str
    question: str
    asked_at: datetime
    due_at: datetime
    status: str
    answer: str | None
    answered_by: str | None
    answered_at: datetime | None
    read_at: datetime | None
    canned_title: str | None
    task_id: int | None


def thread(session: Session, consult: Consult, locale: str) -> Thread:
    """The consult in ``locale``: the desk's title, who answered by name."""
    try:
        desk: desks.ConsultDeskSpec | None = desks.load(session, consult.desk_key)
    except NotFound:
        desk = None
    user = session.get(User, consult.answered_by) if consult.answered_by else None
    canned = desk.canned_answer(consult.canned_key) if desk and consult.canned_key else None
    return Thread(id=consult.id, patient_id=consult.patient_id,
                  desk=desk.title_in(locale) if desk else consult.desk_key,
                  question=consult.question, asked_at=consult.asked_at, due_at=consult.due_at,
                  status=consult.status, answer=consult.answer,
                  answered_by=user.display_name if user else None,
                  answered_at=consult.answered_at, read_at=consult.read_at,
                  canned_title=canned.title_in(locale) if canned else None,
                  task_id=consult.task_id)


def of_patient(session: Session, patient_id: str) -> list[Consult]:
    """The patient's consults, newest first."""
    return list(session.scalars(select(Consult).where(Consult.patient_id == patient_id)
                                .order_by(Consult.asked_at.desc(), Consult.id.desc())
                                .limit(100)).all())
