"""Bundled flows travelling in time: PCI follow-up, hypertension, monthly chronic care,
before-surgery checklist and revisit reminder, complaint handling."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from careloop.engine import events
from careloop.engine.db import transaction
from careloop.flows.approvals import decide
from careloop.flows.models import FlowRun, StepRun

PCI = {"encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
       "department_id": "cardiology", "responsible_nurse": "nurse_li",
       "discharged_at": "2026-12-01T10:00:00+08:00", "procedures": ["PCI"]}


def _templates(engine: Engine, helpers: Any, since: int = 0) -> list[str]:
    return [m.template_key for m in helpers.messages(engine)[since:]]


def _of_flow(engine: Engine, helpers: Any, flow: str) -> list[Any]:
    with transaction(engine) as session:
        run_ids = session.scalars(select(FlowRun.id).where(FlowRun.flow_key == flow)).all()
    prefixes = tuple(f"flow_run:{run_id}:" for run_id in run_ids)
    return [m for m in helpers.messages(engine) if (m.source_ref or "").startswith(prefixes)]


def _answer(engine: Engine, flow: str, step: str) -> None:
    """Submit the form the waiting step asked for (as the forms engine would announce it)."""
    with transaction(engine) as session:
        step_run = session.scalars(select(StepRun).join(FlowRun, FlowRun.id == StepRun.run_id)
                                   .where(FlowRun.flow_key == flow, StepRun.step_key == step,
                                          StepRun.status == "waiting")).one()
        events.record(session, "form.submitted", {
            "submission_id": step_run.id, "form": step_run.state["form"], "patient_id": "P1",
            "request_id": step_run.state["request_id"], "answers": {"overall": 5},
            "scores": {}, "bands": {}, "status": "received"},
            event_id=f"form.submitted:{step_run.id}")


def test_pci_day7_30_90_with_reminder_and_phone_task(bundles: Engine, send: Any, sweep: Any,
                                                     nurse: int, helpers: Any) -> None:
    helpers.patient(send, birth="1980-01-01", consents={"wechat": False})
    send("enc-1", "encounter.discharged", PCI)
    sweep("2026-12-08T09:31:00+08:00")
    day7 = _of_flow(bundles, helpers, "pci_followup")
    assert [m.template_key for m in day7] == ["followup_form"]
    assert day7[0].channel == "sms"  # WeChat consent withdrawn → SMS
    sweep("2026-12-10T09:29:00+08:00")
    assert len(_of_flow(bundles, helpers, "pci_followup")) == 1  # reminder only after 48 hours
    sweep("2026-12-10T09:31:00+08:00")
    pci = [m.template_key for m in _of_flow(bundles, helpers, "pci_followup")]
    assert pci == ["followup_form", "form_reminder"]
    sweep("2026-12-12T09:31:00+08:00")  # still unanswered after 4 days → phone task
    phone = [t for t in helpers.tasks(bundles) if "支架" in t.title]
    assert len(phone) == 1 and phone[0].kind == "phone_followup"
    assert phone[0].assignee_user_id == nurse
    sweep("2026-12-31T09:31:00+08:00")  # day 30: answered this time → no task, no reminder
    _answer(bundles, "pci_followup", "form_day30")
    sweep("2027-01-05T09:31:00+08:00")
    assert len([t for t in helpers.tasks(bundles) if "支架" in t.title]) == 1
    pci = [m.template_key for m in _of_flow(bundles, helpers, "pci_followup")]
    assert pci == ["followup_form", "form_reminder", "followup_form"]
    sweep("2027-03-01T09:31:00+08:00")  # day 90
    pci = [m.template_key for m in _of_flow(bundles, helpers, "pci_followup")]
    assert pci == ["followup_form", "form_reminder", "followup_form", "followup_form"]


def test_hypertension_first_visit_days_1_3_7_14(bundles: Engine, send: Any, sweep: Any,
                                                helpers: Any) -> None:
    helpers.patient(send)
    send("adm-1", "encounter.admitted", {
        "encounter_id": "O1", "patient_id": "P1", "type": "outpatient",
        "department_id": "cardiology", "admitted_at": "2026-12-01T14:00:00+08:00",
        "diagnoses": ["I10"]})
    expected = [("2026-12-02T09:01:00+08:00", "diet_advice"),
                ("2026-12-04T09:01:00+08:00", "medication_reminder"),
                ("2026-12-08T09:01:00+08:00", "bp_upload"),
                ("2026-12-15T09:01:00+08:00", "revisit_reminder")]
    for at, template in expected:
        before = len(helpers.messages(bundles))
        sweep(at)
        assert _templates(bundles, helpers, before) == [template], at
    # Careloop has no booking page: the reminder carries no dead link
    assert "/booking/" not in helpers.messages(bundles)[-1].body


def test_monthly_chronic_until_the_patient_leaves_the_path(bundles: Engine, send: Any,
                                                           sweep: Any, helpers: Any) -> None:
    from datetime import UTC, datetime

    from careloop.engine.clock import frozen_now

    with frozen_now(datetime(2026, 12, 1, 2, tzinfo=UTC)):
        helpers.patient(send, tags=["chronic_path"])
    assert _templates(bundles, helpers) == ["medication_reminder", "bp_upload"]
    sweep("2027-01-05T11:00:00+08:00")  # form expiry (7 days) + 4 weeks
    assert _templates(bundles, helpers).count("medication_reminder") == 2
    with transaction(bundles) as session:
        from careloop.engine.domain import PatientTag

        session.execute(PatientTag.__table__.delete())
    sweep("2027-03-01T11:00:00+08:00")
    assert _templates(bundles, helpers).count("medication_reminder") == 2
    with transaction(bundles) as session:
        assert session.scalars(select(FlowRun.status)).one() == "completed"


def test_before_surgery_checklist_and_revisit_reminder(bundles: Engine, send: Any, sweep: Any,
                                                       helpers: Any) -> None:
    helpers.patient(send)
    send("s-1", "surgery.scheduled", {"surgery_id": "S1", "patient_id": "P1",
                                      "department_id": "orthopedics",
                                      "scheduled_at": "2026-12-10T08:00:00+08:00"})
    send("a-1", "appointment.booked", {"appointment_id": "A1", "patient_id": "P1",
                                       "department_id": "orthopedics",
                                       "scheduled_at": "2026-12-20T09:00:00+08:00"})
    sweep("2026-12-07T09:59:00+08:00")
    assert helpers.messages(bundles) == []
    sweep("2026-12-07T10:01:00+08:00")
    assert _templates(bundles, helpers) == ["surgery_checklist"]
    sweep("2026-12-19T10:01:00+08:00")
    assert _templates(bundles, helpers) == ["surgery_checklist", "revisit_reminder"]


def test_complaint_register_reply_review_reject_and_close(bundles: Engine, send: Any,
                                                         helpers: Any) -> None:
    head = helpers.grant(bundles, "head_wang", "head_nurse", "cardiology")
    helpers.grant(bundles, "px_zhao", "px_office", None)  # the PX office is hospital-wide
    helpers.patient(send)
    send("enc-1", "encounter.admitted", {"encounter_id": "E1", "patient_id": "P1",
                                         "type": "inpatient", "department_id": "cardiology"})
    with transaction(bundles) as session:
        events.record(session, "complaint.created", {
            "submission_id": 7, "form": "complaint", "patient_id": "P1", "encounter_id": "E1",
            "department_id": "cardiology", "answers": {"department": "cardiology"}},
            event_id="complaint.created:7")
    def approvals() -> list[Any]:
        return [t for t in helpers.tasks(bundles) if t.kind in ("approval", "complaint_response")]

    (reply,) = helpers.tasks(bundles)  # the one first-response task (the rules add none)
    assert reply.assignee_user_id == head and reply.kind == "complaint_response"
    assert reply.due_at is not None and reply.escalation["chain"] == [
        {"role": "dept_director", "department": "cardiology"},
        {"role": "px_office", "department": "cardiology"}]
    assert round((reply.due_at - reply.created_at).total_seconds()) == 24 * 3600
    with transaction(bundles) as session:
        decide(session, reply.id, "approve", actor="head_wang")
    review = approvals()[-1]
    assert (review.kind, review.assignee_role) == ("approval", "px_office")
    with transaction(bundles) as session:
        assert decide(session, review.id, "reject", actor="px_zhao") == "rejected"
    again = approvals()[-1]  # back to the department (驳回)
    assert again.assignee_user_id == head and again.id != reply.id
    with transaction(bundles) as session:
        decide(session, again.id, "approve", actor="head_wang")
    with transaction(bundles) as session:
        decide(session, approvals()[-1].id, "approve", actor="px_zhao")
    assert "complaint_satisfaction" in _templates(bundles, helpers)
    with transaction(bundles) as session:
        assert session.scalars(select(FlowRun.status)).one() == "completed"
