"""The runtime: actions through service doubles, atomicity, idempotency, escalation, readings,
segments, dry run. Services of other engines are recorded by ``recording_services`` here; the
end-to-end tests with the real services are in test_scenarios.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient, PatientTag, Task, TaskHistory
from careloop.engine.events import record
from careloop.rules.models import RuleAlert, RuleEvaluation
from careloop.rules.runtime import dry_run, trace_for_task

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)

ACTIONS = """\
kind: ruleset
key: everything
title: {zh-CN: 全部动作, en: Every action}
on: [form.submitted]
rules:
  - key: low
    when: "answers.overall < 3"
    then:
      - {do: notify, template: survey_invitation, channel: sms, urgent: true,
         values: {patient_name: "患者", form_link: "/f/{{ event.submission_id }}",
                  hospital_name: "医院", expires_days: "7"}}
      - {do: start_flow, flow: discharge, context: {score: answers.overall}}
      - {do: set_status, status: in_review}
      - {do: cc, role: dept_director, via: notification, template: survey_invitation,
         channel: app, values: {patient_name: "x", form_link: "y", hospital_name: "h",
                                 expires_days: "7"}}
      - {do: raise_alert, level: warning, message: "低分 {{ answers.overall }}"}
      - {do: set_attribute, name: last_score, value_from: answers.overall}
"""


def _event(engine: Engine, answers: dict[str, Any], event_id: str = "evt_1",
           type: str = "form.submitted", **extra: Any) -> None:
    payload = {"submission_id": 7, "form": "x", "patient_id": "p1", "encounter_id": "e1",
               "answers": answers, **extra}
    with transaction(engine) as session:
        record(session, type, payload, event_id=event_id)


def _count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_actions_call_the_registered_services(engine: Engine, hospital: dict[str, int],
                                              install_yaml: Callable[..., None],
                                              recording_services: dict[str, Any]) -> None:
    install_yaml(ACTIONS, requires=("common", "discharge"))
    _event(engine, {"overall": 1})
    [notify, cc] = recording_services["outbox.enqueue"].calls
    assert (notify["patient_id"], notify["channel"], notify["urgent"]) == ("p1", "sms", True)
    assert notify["values"]["form_link"] == "/f/7"
    assert notify["idempotency_key"] == "rule:everything:low:evt_1:0"
    assert cc["user_id"] == hospital["dir_cardio"]
    [flow] = recording_services["flows.start"].calls
    assert (flow["flow_key"], flow["context"], flow["encounter_id"]) == ("discharge",
                                                                       {"score": 1}, "e1")
    [status] = recording_services["submission.set_status"].calls
    assert status["args"] == (7, "in_review") and status["actor"] == "rule:everything/low"
    with transaction(engine) as session:
        alert = session.scalars(select(RuleAlert)).one()
        assert (alert.message, alert.department_id) == ("低分 1", "cardiology")
        assert session.get(Patient, "p1").attributes == {"last_score": 1}
    _event(engine, {"overall": 1})  # same event id again
    assert len(recording_services["outbox.enqueue"].calls) == 2


def test_a_failing_action_keeps_no_effect_records_the_error_and_alerts(
        engine: Engine, hospital: dict[str, int], install_yaml: Callable[..., None]) -> None:
    from careloop.engine.registry import loaded_registry

    services = loaded_registry().catalogue("service")
    saved = services.get("flows.start")
    services._items.pop("flows.start", None)
    try:
        text = ACTIONS.replace("{do: notify", "{do: tag, tag: seen}\n      - {do: notify")
        text = text.split("      - {do: notify")[0] + "      - {do: start_flow, flow: discharge}\n"
        install_yaml(text, requires=("common", "discharge"))
        _event(engine, {"overall": 1})  # the event (e.g. a submission) is still stored
    finally:
        if saved is not None:
            services.register("flows.start", saved)
    assert _count(engine, PatientTag) == 0  # the tag before the failing action is rolled back
    with transaction(engine) as session:
        evaluation = session.scalars(select(RuleEvaluation)).one()
        assert evaluation.error is not None and "flows.start" in evaluation.error
        assert evaluation.actions == [] and evaluation.matched[0]["rule"] == "low"
        alert = session.scalars(select(RuleAlert)).one()
        assert alert.level == "critical" and "everything" in alert.message
    _event(engine, {"overall": 1})  # re-delivery does not retry or repeat the alert
    assert _count(engine, RuleAlert) == 1


def test_an_unresolvable_assignee_does_not_lose_the_submission(
        engine: Engine, install: Callable[..., None]) -> None:
    from careloop.engine.domain import Patient

    install("common", "mental_health")
    with transaction(engine) as session:
        session.add(Patient(id="p9", mrn="M9", name="无就诊患者"))
    with transaction(engine) as session:  # no encounter: 'attending_doctor' cannot be resolved
        record(session, "form.submitted", {"form": "phq9", "patient_id": "p9", "submission_id": 5,
                                           "answers": {"q9": "2"}, "scores": {"total": 2}},
               event_id="phq")
    with transaction(engine) as session:
        assert session.scalars(select(RuleEvaluation.error)).one() is not None
        assert session.scalars(select(RuleAlert.level)).one() == "critical"


TWO_SETS = """\
kind: ruleset
key: tags
title: {zh-CN: 标签, en: Tags}
on: [form.submitted]
rules:
  - key: low
    when: "answers.overall < 3"
    then:
      - {do: tag, tag: low}
      - {do: create_task, title: "回访", assignee: {role: head_nurse}, priority: urgent}
"""


def test_effects_and_evaluation_commit_together(engine: Engine, hospital: dict[str, int],
                                                install_yaml: Callable[..., None]) -> None:
    install_yaml(TWO_SETS)
    _event(engine, {"overall": 1})
    with transaction(engine) as session:
        [evaluation] = session.scalars(select(RuleEvaluation)).all()
        task = session.scalars(select(Task)).one()
        assert evaluation.task_id == task.id
        assert [a["do"] for a in evaluation.actions] == ["tag", "create_task"]
        assert trace_for_task(session, task.id)[0]["matched"][0]["rule"] == "low"
    _event(engine, {"overall": 1}, event_id="evt_2")  # another event: new effects
    assert _count(engine, Task) == 2 and _count(engine, RuleEvaluation) == 2


COMPLAINT = {"submission_id": 9, "form": "complaint", "patient_id": "p1", "encounter_id": "e1",
             "answers": {"description": "等太久"}}


def test_complaint_has_one_first_response_task_escalated_by_the_sla_rules(
        engine: Engine, hospital: dict[str, int], install: Callable[..., None]) -> None:
    """The complaint_handling flow owns the one first-response task; the complaint_sla rule set
    only escalates it when the flow engine's sweep reports it overdue (director, then PX office)."""
    from careloop.flows.scheduler import emit_overdue

    install("common", "complaints")
    with frozen_now(NOW), transaction(engine) as session:
        record(session, "complaint.created", COMPLAINT, event_id="complaint.created:9")
    with transaction(engine) as session:
        task = session.scalars(select(Task)).one()  # exactly one task for the complaint
        assert (task.source_type, task.kind) == ("flow", "complaint_response")
        assert (task.assignee_user_id, task.due_at) == (hospital["hn_cardio"],
                                                        NOW + timedelta(hours=24))
        assert [step["role"] for step in task.escalation["chain"]] == ["dept_director",
                                                                       "px_office"]
        task_id = task.id
    assert emit_overdue(engine, NOW + timedelta(hours=23)) == 0  # not due yet
    for n, (user, role) in enumerate([(hospital["dir_cardio"], "dept_director"),
                                      (hospital["px_lead"], "px_office")], start=1):
        at = NOW + timedelta(hours=24 * n + 1)
        with frozen_now(at):
            assert emit_overdue(engine, at) == 1
        with transaction(engine) as session:
            task = session.get(Task, task_id)
            assert task is not None
            assert task.escalation["level"] == n and task.priority == "urgent"
            assert (task.assignee_user_id, task.assignee_role) == (user, role)
            assert task.due_at == at + timedelta(hours=24)
            assert session.scalar(select(func.count()).select_from(Task)) == 1
    at = NOW + timedelta(hours=24 * 3 + 1)
    with frozen_now(at):  # a third overdue finds the chain exhausted and changes nothing
        assert emit_overdue(engine, at) == 1
    with transaction(engine) as session:
        history = session.scalars(select(TaskHistory.action).where(
            TaskHistory.task_id == task_id).order_by(TaskHistory.id)).all()
        assert history == ["created", "escalated", "escalated"]
        task = session.get(Task, task_id)
        assert task is not None and task.escalation["level"] == 2
        assert task.due_at == NOW + timedelta(hours=49 + 24)


def test_sla_rules_leave_other_overdue_tasks_alone(
        engine: Engine, hospital: dict[str, int], install: Callable[..., None]) -> None:
    from careloop.engine.tasks import create_task, resolve_assignee

    install("common", "complaints")
    with frozen_now(NOW), transaction(engine) as session:
        assignee = resolve_assignee(session, {"role": "head_nurse"}, patient_id="p1",
                                    encounter_id="e1")
        task, _ = create_task(session, title="回访", assignee=assignee, actor="test",
                              patient_id="p1", encounter_id="e1", kind="approval",
                              due_at=NOW + timedelta(hours=1), idempotency_key="t1")
        task_id = task.id
    with frozen_now(NOW + timedelta(hours=2)), transaction(engine) as session:
        record(session, "task.overdue", {"task_id": task_id}, event_id="overdue:1")
    with transaction(engine) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.assignee_role == "head_nurse"
        assert task.due_at == NOW + timedelta(hours=1) and task.priority != "urgent"


def test_blood_pressure_crisis_and_repeated_readings(
        engine: Engine, hospital: dict[str, int], install: Callable[..., None]) -> None:
    install("common", "chronic_care")
    base = {"patient_id": "p1", "type": "blood_pressure",
            "measured_at": "2026-11-24T10:00:00+08:00"}
    with frozen_now(NOW), transaction(engine) as session:
        record(session, "reading.recorded", {**base, "value": {"systolic": 185, "diastolic": 100}},
               event_id="r1")
    with transaction(engine) as session:
        task = session.scalars(select(Task)).one()
        assert (task.priority, task.assignee_user_id) == ("urgent", hospital["dr_li"])
        assert session.scalars(select(RuleAlert.level)).one() == "critical"
    for day, event_id in ((1, "r2"), (2, "r3")):
        with frozen_now(NOW + timedelta(days=day)), transaction(engine) as session:
            record(session, "reading.recorded",
                   {**base, "value": {"systolic": 150, "diastolic": 85}}, event_id=event_id)
    with transaction(engine) as session:  # r1 (crisis) + r2 + r3 are three above 140/90
        tasks = session.scalars(select(Task).order_by(Task.id)).all()
        assert [t.priority for t in tasks] == ["urgent", "high"]
    with frozen_now(NOW + timedelta(days=8)), transaction(engine) as session:
        record(session, "reading.recorded", {**base, "value": {"systolic": 150, "diastolic": 85}},
               event_id="r4")  # r1 is now older than 7 days: only r2, r3, r4
    assert _count(engine, Task) == 3


def test_segments_tag_patients(engine: Engine, hospital: dict[str, int],
                               install: Callable[..., None]) -> None:
    install("common")
    with frozen_now(NOW), transaction(engine) as session:
        record(session, "encounter.discharged", {"patient_id": "p1", "encounter_id": "e1"},
               event_id="d1")
    with transaction(engine) as session:
        tags = set(session.scalars(select(PatientTag.tag).where(PatientTag.patient_id == "p1")))
        assert tags == {"aged_70_plus", "after_pci"}


def test_dry_run_shows_matches_and_changes_nothing(
        engine: Engine, hospital: dict[str, int], install: Callable[..., None]) -> None:
    install("common", "discharge", "cardiology", "satisfaction")
    event = {"type": "form.submitted", "payload": {
        "submission_id": 1, "form": "inpatient_satisfaction", "patient_id": "p1",
        "encounter_id": "e1", "answers": {"overall": 2, "comment": "出院时用药指导不清楚"}}}
    with transaction(engine) as session:
        outcome = dry_run(session, "followup_routing", event)
    assert [m["rule"] for m in outcome.matched] == ["dissatisfied", "medication_guidance"]
    first = outcome.actions[0]
    assert first["do"] == "create_task" and first["would"]["title"] == "不满意回访：总体满意度 2 分"
    assert _count(engine, RuleEvaluation) == 0 and _count(engine, Task) == 0


def test_the_evaluation_row_is_written_once_finished(engine: Engine, hospital: dict[str, int],
                                                     install_yaml: Callable[..., None]) -> None:
    """One INSERT of the evaluation with its matches and actions, no UPDATE after it."""
    from sqlalchemy import event

    install_yaml(TWO_SETS)
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "rule_evaluations" in statement and not statement.lstrip().startswith("SELECT"):
            sent.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        _event(engine, {"overall": 1})
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert sent == ["INSERT"]
    with transaction(engine) as session:
        [evaluation] = session.scalars(select(RuleEvaluation)).all()
        assert [a["do"] for a in evaluation.actions] == ["tag", "create_task"]
