"""What a patient's submission reads and writes (issue 18): only the names the form's expressions
use, the link's request with its patient and encounter in one statement, the answer rows in one
insert at commit. Counted statements, not time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from careloop.engine import events, store
from careloop.engine.db import transaction
from careloop.engine.domain import PatientTag
from careloop.engine.models import DomainEventRow
from careloop.forms import pages
from careloop.forms.models import FormRequest, Submission, SubmissionAnswer
from careloop.forms.runtime import reads_patient
from careloop.forms.spec import FormSpec
from careloop.web.app import create_app
from tests.forms.test_web import _request

from ..statements import counted

PLAIN = """kind: form
key: plain_check
title: {zh-CN: 出院回访, en: Discharge check}
default_locale: zh-CN
fields:
  - {key: ok, type: yes_no, label: {zh-CN: 还好吗？, en: "All well?"}}
  - key: note
    type: long_text
    label: {zh-CN: 想说的话, en: Anything to add}
    visible_if: "answers.ok == 'no'"
"""
TAGGED = """kind: form
key: tagged_check
title: {zh-CN: 随访, en: Follow-up}
default_locale: zh-CN
fields:
  - {key: ok, type: yes_no, label: {zh-CN: 还好吗？, en: "All well?"}}
  - key: vip_note
    type: long_text
    label: {zh-CN: 专属意见, en: VIP note}
    visible_if: "'vip' in patient.tags"
"""
NESTED = """kind: form
key: nested_check
title: {zh-CN: 随访, en: Follow-up}
default_locale: zh-CN
fields:
  - key: mood
    type: single_choice
    label: {zh-CN: 心情, en: Mood}
    choices:
      - {code: good, label: {zh-CN: 好, en: Good}, score: 1}
      - {code: bad, label: {zh-CN: 差, en: Bad}, score: 0, visible_if: "encounter is not None"}
  - key: meds
    type: repeat_group
    label: {zh-CN: 用药, en: Medicines}
    fields:
      - key: dose
        type: integer
        label: {zh-CN: 剂量, en: Dose}
        validations:
          - {expression: "value < patient.age", message: {zh-CN: 太多, en: Too much}}
scores:
  - {key: first, method: sum, fields: [mood]}
  - {key: total, method: expression, expression: "scores.first + 1"}
"""


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    sent: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def _spec(publish: Any, text: str) -> FormSpec:
    return store.compile_row(publish(text), FormSpec)


def _link(engine: Engine, form_key: str) -> str:
    return _request(engine, form_key)["url"]  # patient p1, encounter e1


def test_a_form_knows_the_names_its_expressions_read(publish: Any) -> None:
    assert _spec(publish, PLAIN).names == {"answers"}
    assert not reads_patient(_spec(publish, PLAIN))
    assert reads_patient(_spec(publish, TAGGED))
    nested = _spec(publish, NESTED)  # choices, sub-fields' validations, scores
    assert {"encounter", "patient", "value", "scores"} <= nested.names
    assert reads_patient(nested)


def test_a_plain_form_is_submitted_without_reading_the_patients_tags(
        engine: Engine, patient: str, publish: Any) -> None:
    publish(PLAIN)
    url = _link(engine, "plain_check")
    client = TestClient(create_app())
    with statements(engine) as sent:
        answer = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                        "ok": "no", "note": "头晕"})
    assert answer.status_code == 200 and "Thank you" in answer.text, answer.text
    listing = "\n".join(sent)
    assert "patient_tags" not in listing, listing
    # the request, its patient and its encounter: one statement
    reads = [s for s in sent if s.startswith("SELECT") and " form_requests" in s]
    assert len(reads) == 1 and "patients" in reads[0] and "encounters" in reads[0], listing
    assert sum(s.startswith("INSERT INTO submission_answers") for s in sent) == 1, listing
    with transaction(engine) as session:
        sub = session.scalars(select(Submission)).one()
        assert sub.department_id == "cardio" and sub.answers == {"ok": "no", "note": "头晕"}
        rows = session.scalars(select(SubmissionAnswer).where(
            SubmissionAnswer.submission_id == sub.id)).all()
        assert sorted((r.field_key, r.value_code, r.value_text) for r in rows) == [
            ("note", None, "头晕"), ("ok", "no", None)]


def test_a_form_that_reads_the_patient_still_sees_the_tags(
        engine: Engine, patient: str, publish: Any) -> None:
    publish(TAGGED)
    with transaction(engine) as session:
        session.add(PatientTag(patient_id="p1", tag="vip"))
    url = _link(engine, "tagged_check")
    client = TestClient(create_app())
    with statements(engine) as sent:
        answer = client.post(url, data={"_page": "0", "_lang": "zh-CN", "_action": "submit",
                                        "ok": "yes", "vip_note": "很好"})
    assert answer.status_code == 200, answer.text
    assert any("patient_tags" in s for s in sent)
    with transaction(engine) as session:
        assert session.scalars(select(Submission)).one().answers == {"ok": "yes",
                                                                     "vip_note": "很好"}


def test_a_patient_submission_is_six_statements(engine: Engine, patient: str,
                                                publish: Any) -> None:
    """The link's request with its patient, encounter and form version (one read, no read of
    ``definitions`` of its own); the submission's row by one insert (no flush of its own); its
    event ids checked in one read and the event stored without a savepoint; the request's
    change; the answer rows at commit."""
    publish(PLAIN)
    url = _link(engine, "plain_check")
    client = TestClient(create_app())
    assert client.get(url).status_code == 200  # opened first, as a patient does
    flushed: list[str] = []

    def before_flush(session: Any, *_args: Any) -> None:
        flushed.extend(type(row).__name__ for row in session.new)

    event.listen(Session, "before_flush", before_flush)
    try:
        with counted(engine) as counter:
            answer = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                            "ok": "no", "note": "头晕"})
    finally:
        event.remove(Session, "before_flush", before_flush)
    assert answer.status_code == 200 and "Thank you" in answer.text, answer.text
    listing = "\n".join(counter.statements)
    assert len(counter.statements) <= 6, listing
    # the submission and its events go in by Core inserts: no new row through the unit of work
    assert "DomainEventRow" not in flushed and "Submission" not in flushed, flushed
    reads = [s for s in counter.statements if s.startswith("SELECT")]
    assert len(reads) == 2, listing  # the request (with its form version), the event ids
    assert "FROM definitions" not in listing, listing
    assert not any("SAVEPOINT" in s for s in counter.statements), listing
    assert client.post(url, data={"_page": "0", "_action": "submit", "ok": "no"}
                       ).status_code == 410  # answered once: the link is used
    with transaction(engine) as session:
        sub = session.scalars(select(Submission)).one()
        assert sub.answers == {"ok": "no", "note": "头晕"} and sub.request_id is not None
        assert session.scalars(select(DomainEventRow.event_id).where(
            DomainEventRow.type == "form.submitted")).all() == [f"form.submitted:{sub.id}"]
        request = session.get(FormRequest, sub.request_id)
        assert request is not None and request.status == "answered"
        assert request.answered_at is not None and request.draft is None


def test_an_event_id_stored_before_is_not_recorded_again(engine: Engine, patient: str,
                                                         publish: Any) -> None:
    """A submission's event ids are read first: one stored already is kept, not stored twice
    (no failed insert), as ``events.record`` does for an id it knows."""
    publish(PLAIN)
    client = TestClient(create_app())
    data = {"_page": "0", "_lang": "en", "_action": "submit", "ok": "yes"}
    assert client.post(_link(engine, "plain_check"), data=data).status_code == 200
    with transaction(engine) as session:
        last = max(session.scalars(select(Submission.id)))  # the next ids follow it
        for n in range(last + 1, last + 31):
            events.record(session, "test.placeholder", {}, event_id=f"form.submitted:{n}",
                          dispatch=False)
    answer = client.post(_link(engine, "plain_check"), data=data)
    assert answer.status_code == 200, answer.text
    with transaction(engine) as session:
        sub = session.scalars(select(Submission).order_by(Submission.id.desc())).first()
        assert sub is not None and last < sub.id <= last + 30
        kept = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == f"form.submitted:{sub.id}")).one()
        assert kept.type == "test.placeholder"


def test_the_thank_you_page_is_rendered_once_per_form_and_locale(
        engine: Engine, patient: str, publish: Any) -> None:
    publish(PLAIN)
    client = TestClient(create_app())
    pages._thanks.cache_clear()
    texts = []
    for _ in range(3):
        answer = client.post(_link(engine, "plain_check"), data={
            "_page": "0", "_lang": "en", "_action": "submit", "ok": "yes"})
        assert answer.status_code == 200
        texts.append(answer.text)
    assert texts[0] == texts[1] == texts[2] and "Thank you" in texts[0]
    assert pages._thanks.cache_info().misses == 1  # rendered once, not per submission
