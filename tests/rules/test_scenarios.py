"""End-to-end scenarios of the bundled rule sets, with the real form engine and services.

``test_followup_routing_end_to_end`` is the issue's acceptance scenario: a real submission through
``careloop.forms.runtime.submit`` (whose ``form.submitted`` event runs the rules in the same
transaction), the real ``submission.set_status`` service, then the same event delivered again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import PatientTag, Task, TaskHistory
from careloop.engine.events import dispatch_event, record
from careloop.engine.models import DomainEventRow
from careloop.rules.models import Classification, RuleAlert, RuleEvaluation
from careloop.rules.runtime import trace_for_patient, trace_for_submission, trace_for_task

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai

COMMENT = "出院时用药指导不清楚"


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {model.__tablename__: int(conn.execute(
            select(func.count()).select_from(model)).scalar_one())
            for model in (Task, TaskHistory, PatientTag, RuleEvaluation, Classification,
                          RuleAlert)}


def _submit(engine: Engine, answers: dict[str, object], *, patient: str = "p1",
            encounter: str = "e1", form: str = "inpatient_satisfaction") -> int:
    from careloop.forms.runtime import submit

    with transaction(engine) as session:
        submission, _ = submit(session, form_key=form, answers=answers, patient_id=patient,
                               encounter_id=encounter)
        return int(submission.id)


def test_followup_routing_end_to_end(engine: Engine, install: Callable[..., None],
                                     hospital: dict[str, int]) -> None:
    from careloop.forms.models import Submission

    install("common", "discharge", "cardiology", "satisfaction")
    with frozen_now(NOW):
        submission_id = _submit(engine, {"overall": 2, "low_reasons": ["explanation"], "nps": 3,
                                         "comment": COMMENT})
    with transaction(engine) as session:
        tasks = session.scalars(select(Task).order_by(Task.id)).all()
        urgent = [t for t in tasks if t.priority == "urgent"]
        assert len(urgent) == 1
        task = urgent[0]
        assert (task.assignee_user_id, task.department_id) == (hospital["hn_cardio"],
                                                                 "cardiology")
        assert task.due_at == NOW + timedelta(hours=24)
        assert [s["role"] for s in task.escalation["chain"]] == ["dept_director", "px_office"]
        copies = [t for t in tasks if t.kind == "cc"]
        assert [(t.assignee_user_id, t.department_id) for t in copies] == [
            (hospital["pharm_head"], "pharmacy")]
        assert copies[0].due_at == NOW + timedelta(days=2)  # two working days from a Tuesday
        assert session.get(Submission, submission_id).status == "pending_dissatisfied"
        tags = set(session.scalars(select(PatientTag.tag).where(PatientTag.patient_id == "p1")))
        assert {"feedback_medication_guidance", "dissatisfied"} <= tags
        classes = session.scalars(select(Classification)).all()
        assert [(c.category, c.negative) for c in classes] == [("medication_guidance", True)]
        assert classes[0].words[0]["word"] == "用药指导"
        trace = trace_for_submission(session, submission_id)
        assert [m["rule"] for m in trace[0]["matched"]] == ["dissatisfied", "medication_guidance"]
        assert trace[0]["matched"][0]["values"] == {"answers.overall": 2}
        assert [a["do"] for a in trace[0]["actions"]] == [
            "create_task", "set_status", "tag", "untag", "tag", "cc"]
        assert trace_for_task(session, task.id)[0]["id"] == trace[0]["id"]
        assert len(trace_for_patient(session, "p1")) == 1
    before = _counts(engine)
    with transaction(engine) as session:  # the same event delivered again
        event = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == f"form.submitted:{submission_id}")).one()
        assert record(session, event.type, event.payload, event_id=event.event_id)[1] is False
        dispatch_event(session, event)  # even a forced re-dispatch repeats nothing
    assert _counts(engine) == before


def test_satisfied_patient_is_archived_and_tagged(engine: Engine, install: Callable[..., None],
                                                  hospital: dict[str, int]) -> None:
    from careloop.forms.models import Submission

    install("common", "discharge", "cardiology", "satisfaction")
    submission_id = _submit(engine, {"overall": 5, "nps": 10, "comment": "护士态度很好"})
    with transaction(engine) as session:
        assert session.get(Submission, submission_id).status == "archived"
        assert session.scalars(select(func.count()).select_from(Task)).one() == 0
        tags = set(session.scalars(select(PatientTag.tag)))
        assert tags == {"satisfied"}
        from careloop.engine.domain import Patient

        assert session.get(Patient, "p1").attributes["last_satisfaction"] == 5


def test_phq9_item9_makes_an_urgent_task_for_the_attending_doctor(
        engine: Engine, install: Callable[..., None], hospital: dict[str, int]) -> None:
    install("common", "mental_health")
    answers = {f"q{i}": "0" for i in range(1, 10)} | {"q9": "1"}
    with frozen_now(NOW):
        _submit(engine, answers, patient="p2", encounter="e2", form="phq9")
    with transaction(engine) as session:
        task = session.scalars(select(Task)).one()
        assert (task.priority, task.assignee_user_id) == ("urgent", hospital["dr_psych"])
        assert task.due_at == NOW + timedelta(hours=1)
        alert = session.scalars(select(RuleAlert)).one()
        assert (alert.level, alert.patient_id) == ("critical", "p2")


def test_phq9_without_item9_creates_nothing(engine: Engine, install: Callable[..., None],
                                            hospital: dict[str, int]) -> None:
    install("common", "mental_health")
    _submit(engine, {f"q{i}": "0" for i in range(1, 10)}, patient="p2", encounter="e2",
            form="phq9")
    assert _counts(engine)["tasks"] == 0


NOTIFY_AND_FLOW = """\
kind: ruleset
key: callback
title: {zh-CN: 回访, en: Call back}
on: [form.submitted]
rules:
  - key: low
    when: "answers.overall < 3"
    then:
      - {do: notify, template: survey_invitation, channel: sms, urgent: true,
         values: {patient_name: "患者", form_link: "/f/x", hospital_name: "医院",
                  expires_days: "7"}}
      - {do: start_flow, flow: discharge}
"""


def test_notify_and_start_flow_through_the_real_flow_engine(
        engine: Engine, hospital: dict[str, int], install_yaml: Callable[..., None]) -> None:
    from careloop.flows.models import FlowRun, OutboxMessage

    install_yaml(NOTIFY_AND_FLOW, requires=("common", "discharge"))
    payload = {"submission_id": 3, "form": "x", "patient_id": "p1", "encounter_id": "e1",
               "answers": {"overall": 1}}
    for _ in range(2):  # the second delivery repeats nothing
        with frozen_now(NOW), transaction(engine) as session:
            record(session, "form.submitted", payload, event_id="evt_real")
    with transaction(engine) as session:
        message = session.scalars(select(OutboxMessage).where(
            OutboxMessage.idempotency_key.startswith("rule:"))).one()
        assert (message.patient_id, message.channel) == ("p1", "sms")
        run = session.scalars(select(FlowRun).where(FlowRun.flow_key == "discharge")).one()
        assert run.patient_id == "p1"
