"""What a patient's submission reads and writes (issue 18): only the names the form's expressions
use, the link's request with its patient and encounter in one statement, the answer rows in one
insert at commit. Counted statements, not time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.domain import PatientTag
from careloop.forms.models import Submission, SubmissionAnswer
from careloop.forms.runtime import reads_patient
from careloop.forms.spec import FormSpec
from careloop.web.app import create_app
from tests.forms.test_web import _request

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
