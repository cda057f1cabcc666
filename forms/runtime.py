"""Submitting answers: evaluate on the server, then store submission, answer rows and events in
the caller's transaction (all or nothing).

    submit(session, form_key="phq9", answers={"q1": "2", …}, patient_id="p1", channel="web")
    ──▶ Submission(id=7, scores={"total": 11.0}, bands={"severity": "moderate"})
        + submission_answers rows + event form.submitted (and the form's extra ``events``)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session, make_transient_to_detached

from careloop.engine import context as names
from careloop.engine import store, txcache
from careloop.engine.audit import append as audit_append
from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.domain import Encounter, Patient
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.events import record
from careloop.engine.events import store as store_event
from careloop.engine.models import DefinitionRow, DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.forms.logic import Evaluation, evaluate
from careloop.forms.models import FormRequest, Submission, SubmissionAnswer
from careloop.forms.scoring import SCORE_METHODS
from careloop.forms.spec import FormSpec

CHANNELS = ("web", "phone", "sms", "wechat", "kiosk", "import", "qr")
# Who may answer for a patient (the relation of the person answering to the patient); each has a
# label ``tp.proxy.<relation>`` (女儿, 儿子 …): "由 女儿 代答" on staff pages.
PROXY_RELATIONS = ("daughter", "son", "spouse", "grandchild", "relative", "carer")
STATUSES = ("received", "pending_dissatisfied", "in_review", "resolved", "archived")


class SubmissionInvalid(CareloopError):
    """Raised when answers fail the form's checks; ``errors`` lists every problem found."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} error(s) in the submitted answers")
        self.errors = errors


def load_form(session: Session, key: str,
              version: int | None = None) -> tuple[DefinitionRow, FormSpec]:
    """The stored row and compiled spec of a form version (current if ``version`` is None);
    a version a form link's read brought along (:func:`known_version`) is not read again."""
    if version is None:
        row = store.get_version(session, "form", key, version)
    else:
        row = txcache.remember(session, (_VERSION, key, version),
                               lambda: store.get_version(session, "form", key, version),
                               (DefinitionRow,))
    spec = store.compile_row(row, FormSpec)
    return row, spec


_VERSION = "forms.version"  # txcache key: a form version's stored row, read in this transaction


def known_version(session: Session, row: DefinitionRow) -> None:
    """Remember a form version's stored row read along with something else (a link's request),
    for :func:`load_form` in this transaction. Stored versions never change (only
    ``retired_at``, which a given version's read does not look at)."""
    txcache.remember(session, (_VERSION, row.key, row.version), lambda: row, (DefinitionRow,))


def expression_context(session: Session, patient_id: str | None, encounter_id: str | None,
                       spec: FormSpec | None = None) -> dict[str, Any]:
    """The ``patient`` and ``encounter`` names a form's expressions read (the form adds
    ``answers``, ``scores``, ``value`` and ``row`` itself), from the one builder every engine
    uses; with no encounter given, the patient's latest one. With ``spec``, ``patient`` is
    built only if the form reads it (:func:`reads_patient`): its tags are a query; the
    encounter is always built, a submission takes its department from it.

    Raises:
        NotFound: if there is no such patient, or the encounter is not the patient's.
    """
    if patient_id is None:  # an anonymous answer at a touchpoint: nobody to read
        return {"patient": None, "encounter": None}
    if session.get(Patient, patient_id) is None:
        raise NotFound(f"no patient '{patient_id}'")
    if encounter_id is not None:
        enc = session.get(Encounter, encounter_id)
        if enc is None or enc.patient_id != patient_id:
            raise NotFound(f"no encounter '{encounter_id}' for patient '{patient_id}'")
    encounter = names.encounter_names(names.pick_encounter(session, patient_id, encounter_id))
    if spec is not None and not reads_patient(spec):
        return {"encounter": encounter}  # no expression of this form names ``patient``
    return {"patient": names.patient_names(session, patient_id), "encounter": encounter}


def reads_patient(spec: FormSpec) -> bool:
    """Whether evaluating the form may read the ``patient`` name: one of its expressions names
    it, or a score's method is not a built-in (a plugin's method is given the whole context)."""
    return "patient" in spec.names or any(score.method not in SCORE_METHODS
                                          for score in spec.scores)


def submit(session: Session, *, form_key: str, answers: Mapping[str, Any],
           patient_id: str | None, encounter_id: str | None = None, channel: str = "web",
           entered_by: str | None = None, locale: str = "zh-CN", request_id: str | None = None,
           version: int | None = None, department_id: str | None = None,
           touchpoint: Mapping[str, Any] | None = None,
           proxy_relation: str | None = None, defer: bool = False,
           context: dict[str, Any] | None = None) -> tuple[Submission, Evaluation]:
    """Evaluate and store a submission; raises :class:`SubmissionInvalid` with every error.

    ``patient_id`` is None only with ``touchpoint`` (``{"key", "type", "title", "owner"}``:
    an anonymous answer at a place); ``proxy_relation`` says who answered for the patient.
    Its events (``form.submitted``, the form's own, readings) are handled in the same
    transaction, or — ``defer=True``, a patient's link — stored for the event queue
    (:mod:`careloop.engine.dispatcher`), so the patient's page does not wait for rules and
    flows. ``context``: :func:`expression_context` of this patient and encounter when the
    caller built it already in this transaction (the patient page)."""
    if channel not in CHANNELS:
        raise CareloopError(f"unknown submission channel {channel!r}")
    if (patient_id is None) != (touchpoint is not None):
        raise CareloopError("a submission names a patient, or a touchpoint without one")
    if proxy_relation is not None and proxy_relation not in PROXY_RELATIONS:
        raise CareloopError(f"unknown proxy relation {proxy_relation!r}; expected one of "
                            f"{', '.join(PROXY_RELATIONS)}")
    row, spec = load_form(session, form_key, version)
    if context is None:
        context = expression_context(session, patient_id, encounter_id, spec)
    result = evaluate(spec, answers, locale=locale, context=context)
    if not result.valid:
        raise SubmissionInvalid(result.errors)
    if department_id is None and context["encounter"] is not None:
        department_id = context["encounter"]["department"]
    columns = dict(
        form_key=form_key, form_version=row.version, content_hash=row.content_hash,
        patient_id=patient_id, encounter_id=encounter_id, department_id=department_id,
        request_id=request_id, channel=channel, entered_by=entered_by, locale=locale,
        status="received", answers=result.answers, scores=result.scores, bands=result.bands,
        submitted_at=now_utc(), touchpoint_key=touchpoint["key"] if touchpoint else None,
        proxy_relation=proxy_relation)
    if request_id is not None:  # before the flush: the request row is written once
        request = session.get(FormRequest, request_id)
        if request is not None:
            request.status, request.answered_at, request.draft = "answered", now_utc(), None
    if defer:
        # Nothing in this transaction reads submissions back before its commit: the row is
        # inserted by one statement built once, and the object joins the session as if read
        # (no flush of its own: the request's change is written with the first event's).
        new_id = session.connection().execute(_INSERT_SUBMISSION, columns).scalar_one()
        submission = Submission(id=new_id, **columns)
        make_transient_to_detached(submission)
        session.add(submission)
    else:  # this transaction's handlers may have read submissions: the unit of work knows
        submission = Submission(**columns)
        session.add(submission)
        session.flush()
    if defer:  # nothing reads them back before the commit: one INSERT of them all, then
        for values in _answer_rows(spec, submission):
            txcache.defer(session, SubmissionAnswer, values)
    else:  # this transaction's handlers may read them
        session.add_all(SubmissionAnswer(**values) for values in _answer_rows(spec, submission))
    if entered_by is not None:
        audit_append(session, actor=entered_by, action="forms.submit_on_behalf",
                     object_type="submission", object_id=str(submission.id),
                     patient_id=patient_id, details={"form": form_key, "channel": channel})
    payload = event_payload(submission)
    if touchpoint is not None:  # what a rule needs to route a low score to the place's owner
        payload["touchpoint_type"] = touchpoint["type"]
        payload["owner"] = dict(touchpoint["owner"])
        payload["touchpoint_title"] = dict(touchpoint.get("title") or {})
    events = [(event_type, payload, f"{event_type}:{submission.id}")
              for event_type in ("form.submitted", *spec.events)]
    events += [("reading.recorded", reading, f"reading.recorded:{reading['reading_id']}")
               for reading in (reading_payloads(spec, submission) if patient_id is not None
                               else [])]
    # Which of their ids are stored already, in one read: each new one is then recorded as
    # checked (no read of its own, no savepoint); an id stored before is not recorded again.
    known = set(session.connection().execute(
        _KNOWN_EVENTS, {"ids": [event_id for *_, event_id in events]}).scalars())
    for event_type, body, event_id in events:
        if event_id not in known:
            known.add(event_id)
            if defer:  # for the event queue: one Core INSERT, no ORM row to flush
                store_event(session, event_type, body, event_id=event_id)
            else:
                record(session, event_type, body, event_id=event_id, checked=True)
    return submission, result


_INSERT_SUBMISSION = insert(Submission).returning(Submission.id)
_KNOWN_EVENTS = select(DomainEventRow.event_id).where(
    DomainEventRow.event_id.in_(bindparam("ids", expanding=True)))


def reading_payloads(spec: FormSpec, submission: Submission) -> list[dict[str, Any]]:
    """The form's ``readings:`` as ``reading.recorded`` payloads, shaped like the HIS's: a blood
    pressure as ``{"systolic", "diastolic"}``, a measurement in its canonical unit."""
    out: list[dict[str, Any]] = []
    for reading_type, key, measured_key in spec.readings:
        answer = submission.answers.get(key)
        if answer in (None, "", {}):
            continue
        if reading_type == "blood_pressure":
            value = {"systolic": answer["systolic"], "diastolic": answer["diastolic"]}
        elif isinstance(answer, dict):  # a measurement: {"value", "unit", "canonical"}
            found = spec.field(key)
            value = {"value": answer["canonical"],
                     "unit": found.options.get("unit") if found is not None else None}
        else:
            value = {"value": answer}
        measured = submission.answers.get(measured_key) if measured_key else None
        at = _instant(measured) or submission.submitted_at
        out.append({"reading_id": f"submission-{submission.id}-{key}"[:64],
                    "patient_id": submission.patient_id, "type": reading_type, "value": value,
                    "measured_at": at.isoformat(), "source": "patient_form",
                    "submission_id": submission.id, "form": submission.form_key})
    return out


def _instant(value: Any) -> datetime | None:
    """A datetime answer as an aware instant (a naive one is hospital wall time)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=hospital_tz())


def event_payload(submission: Submission) -> dict[str, Any]:
    """The ``form.submitted`` payload (contract 3)."""
    return {"submission_id": submission.id, "form": submission.form_key,
            "form_version": submission.form_version, "patient_id": submission.patient_id,
            "encounter_id": submission.encounter_id, "department_id": submission.department_id,
            "channel": submission.channel, "request_id": submission.request_id,
            "entered_by": submission.entered_by, "answers": submission.answers,
            "scores": submission.scores, "bands": submission.bands, "status": submission.status,
            "touchpoint": submission.touchpoint_key, "proxy_relation": submission.proxy_relation}


def _answer_rows(spec: FormSpec, submission: Submission) -> list[dict[str, Any]]:
    """The ``submission_answers`` rows of a flushed submission, as column values."""
    types = loaded_registry().catalogue("field_type")
    rows: list[dict[str, Any]] = []

    def add(key: str, row_key: str | None, leaves: list[Any]) -> None:
        for leaf_row, number, text, code in leaves:
            rows.append({"submission_id": submission.id, "form_key": spec.key,
                         "field_key": key,
                         "row_key": row_key if row_key is not None else leaf_row,
                         "value_number": number, "value_text": text, "value_code": code})

    for field in spec.fields:
        value = submission.answers.get(field.key)
        if value is None:
            continue
        if types[field.type].group:
            for index, item in enumerate(value):
                for sub in field.fields:
                    if sub.key in item:
                        add(f"{field.key}.{sub.key}", str(index),
                            types[sub.type].leaves(sub, item[sub.key]))
            continue
        add(field.key, None, types[field.type].leaves(field, value))
    return rows


def set_status(session: Session, submission_id: int, status: str, *, actor: str) -> None:
    """Change a submission's status (service ``submission.set_status``), audited."""
    if status not in STATUSES:
        raise CareloopError(f"unknown submission status {status!r}; expected one of {STATUSES}")
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFound(f"no submission {submission_id}")
    before = submission.status
    submission.status = status
    audit_append(session, actor=actor, action="submission.set_status",
                 object_type="submission", object_id=str(submission_id),
                 patient_id=submission.patient_id, details={"from": before, "to": status})
