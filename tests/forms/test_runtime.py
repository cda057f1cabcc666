"""Submitting: server-authoritative evaluation, storage in one transaction, events, versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.forms.models import Submission, SubmissionAnswer
from careloop.forms.runtime import SubmissionInvalid, load_form, submit

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
INPATIENT = "satisfaction/forms/inpatient_satisfaction.yaml"


def test_submit_stores_answers_scores_rows_and_event(engine: Engine, patient: str,
                                                     publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    with transaction(engine) as session:
        sub, _result = submit(session, form_key="inpatient_satisfaction", patient_id=patient,
                             encounter_id="e1", channel="web", answers={
                                 "overall": 2, "nps": 6, "low_reasons": ["waiting"],
                                 "touchpoints": {"food": "2", "nursing": "4"},
                                 "comment": "饭菜凉"})
        sub_id = sub.id
    with transaction(engine) as session:
        stored = session.get(Submission, sub_id)
        assert stored is not None
        assert stored.department_id == "cardio" and stored.form_version == 1
        assert stored.content_hash.startswith("sha256:")
        assert stored.scores["csat_top_box"] == 0.0
        assert stored.bands == {"nps_category": "detractor"}
        rows = session.scalars(select(SubmissionAnswer).where(
            SubmissionAnswer.submission_id == sub_id)).all()
        by_key = {(r.field_key, r.row_key): r for r in rows}
        assert by_key[("touchpoints", "food")].value_number == 2.0
        assert by_key[("low_reasons", None)].value_code == "waiting"
        assert by_key[("comment", None)].value_text == "饭菜凉"
        event = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == f"form.submitted:{sub_id}")).one()
        assert event.payload["form"] == "inpatient_satisfaction"
        assert event.payload["bands"] == {"nps_category": "detractor"}
        assert set(event.payload) == {"submission_id", "form", "form_version", "patient_id",
                                      "encounter_id", "department_id", "channel", "request_id",
                                      "entered_by", "answers", "scores", "bands", "status",
                                      "touchpoint", "proxy_relation"}


def test_tampered_hidden_answers_and_scores_are_corrected(engine: Engine, patient: str,
                                                          publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    with transaction(engine) as session:
        sub, _ = submit(session, form_key="inpatient_satisfaction", patient_id=patient,
                        answers={"overall": 5, "nps": 10,
                                 "low_reasons": ["cost"],          # hidden: overall > 2
                                 "nps_category": "detractor",      # not a field
                                 "scores": {"csat_top_box": 0}})   # client scores ignored
        assert "low_reasons" not in sub.answers and "scores" not in sub.answers
        assert sub.scores["csat_top_box"] == 1.0
        assert sub.bands["nps_category"] == "promoter"


def test_errors_come_all_at_once_and_nothing_is_stored(engine: Engine, patient: str,
                                                       publish) -> None:  # type: ignore[no-untyped-def]
    publish("cardiology/forms/cardiac_stent_followup.yaml")
    with pytest.raises(SubmissionInvalid) as exc, transaction(engine) as session:
        submit(session, form_key="cardiac_stent_followup", patient_id=patient, locale="en",
               answers={"chest_pain": "yes", "symptoms": ["bleeding", "none"],
                        "medications": [{"name": "aspirin"}, {"dose": "5 mg"}]})
    paths = {e["path"]: e["message"] for e in exc.value.errors}
    assert paths == {
        "chest_pain_score": "This question needs an answer",
        "taking_antiplatelet": "This question needs an answer",
        "symptoms": "This option cannot be combined with others",
        "medications[1].name": "This question needs an answer",
        "overall": "This question needs an answer",
    }
    with transaction(engine) as session:
        assert session.scalars(select(Submission)).first() is None


def test_extra_events_and_staff_entry(engine: Engine, patient: str,
                                      publish) -> None:  # type: ignore[no-untyped-def]
    publish("complaints/forms/complaint.yaml")
    with transaction(engine) as session:
        sub, _ = submit(session, form_key="complaint", patient_id=patient, channel="phone",
                        entered_by="nurse_li", answers={
                            "channel_of_complaint": "phone", "category": "waiting",
                            "description": "候诊等了三个小时", "wants_contact": "no"})
        sub_id = sub.id
    with transaction(engine) as session:
        types = set(session.scalars(select(DomainEventRow.type)))
        assert {"form.submitted", "complaint.created"} <= types
        stored = session.get(Submission, sub_id)
        assert stored is not None and (stored.channel, stored.entered_by) == ("phone", "nurse_li")


def test_new_version_keeps_old_submissions_readable(engine: Engine, patient: str,
                                                    publish) -> None:  # type: ignore[no-untyped-def]
    text = (APPS / "discharge/forms/discharge_day3.yaml").read_text()
    v1 = publish(text)
    assert v1.version == 1 and publish(text).version == 1  # unchanged: no new version
    with transaction(engine) as session:
        old, _ = submit(session, form_key="discharge_day3", patient_id=patient, answers={
            "recovery": "good", "medication_clear": "yes", "overall": 5})
    edited = text.replace("出院后您的恢复情况如何？", "出院后您感觉怎么样？").replace(
        "How is your recovery since discharge?", "How do you feel since discharge?")
    assert publish(edited).version == 2
    with transaction(engine) as session:
        new, _ = submit(session, form_key="discharge_day3", patient_id=patient, answers={
            "recovery": "good", "medication_clear": "no", "overall": 4})
        _, spec_old = load_form(session, "discharge_day3", old.form_version)
        _, spec_new = load_form(session, "discharge_day3", new.form_version)
    assert (old.form_version, new.form_version) == (1, 2)
    assert old.content_hash != new.content_hash
    assert spec_old.fields[0].label["en"] == "How is your recovery since discharge?"
    assert spec_new.fields[0].label["en"] == "How do you feel since discharge?"


def test_set_status_service(engine: Engine, patient: str, publish) -> None:  # type: ignore[no-untyped-def]
    publish("discharge/forms/discharge_day3.yaml")
    set_status = loaded_registry().catalogue("service")["submission.set_status"]
    with transaction(engine) as session:
        sub, _ = submit(session, form_key="discharge_day3", patient_id=patient, answers={
            "recovery": "poor", "symptoms": "头晕", "medication_clear": "no", "overall": 1})
        set_status(session, sub.id, "pending_dissatisfied", actor="rules")
        assert sub.status == "pending_dissatisfied"
