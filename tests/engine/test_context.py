"""Forms, flows and rules see the same ``patient`` and ``encounter`` at the same instant.

One patient, born 1960-12-07, at 2026-12-06T17:00Z: already 7 December in Shanghai, so 66 years
old there, 65 by the UTC date. Each engine is asked through its own entry point (a form
submission, a started flow run, a rule set's dry run) what its expressions read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.context import pick_encounter
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, PatientTag
from careloop.flows.models import FlowRun
from careloop.flows.runtime import start
from careloop.forms import logic as form_logic
from careloop.forms import runtime as form_runtime
from careloop.rules.runtime import dry_run

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)  # 2026-12-07 01:00 in Shanghai

FORM = """\
kind: form
key: ctx_probe
title: {zh-CN: 上下文探针, en: Context probe}
default_locale: zh-CN
fields:
  - key: note
    type: short_text
    label: {zh-CN: 备注, en: Note}
  - key: age
    type: calculated
    label: {zh-CN: 年龄, en: Age}
    calculate: "patient.age"
  - key: stay
    type: calculated
    label: {zh-CN: 住院状态, en: Stay}
    calculate: "encounter.status"
  - key: senior_discharged
    type: short_text
    label: {zh-CN: 仅66岁出院患者可见, en: Only for discharged 66-year-olds}
    visible_if: "patient.age == 66 and encounter.status == 'discharged'"
"""

FLOW = """\
kind: flow
key: ctx_probe
title: {zh-CN: 上下文探针, en: Context probe}
trigger: {manual: true}
steps:
  - {key: seen, type: set, set: {patient: "patient", encounter: "encounter"}}
  - {key: check, type: decision, if: "patient.age == 66 and encounter.status == 'discharged'",
     then: yes, else: no}
  - {key: "yes", type: set, set: {decided: "'senior_discharged'"}, next: done}
  - {key: "no", type: set, set: {decided: "'other'"}, next: done}
  - {key: done, type: end}
"""

RULES = """\
kind: ruleset
key: ctx_probe
title: {zh-CN: 上下文探针, en: Context probe}
on: [form.submitted]
rules:
  - key: senior_discharged
    when: "patient.age == 66 and encounter.status == 'discharged'"
    then:
      - {do: raise_alert, level: info, message: "{{ patient | tojson }}"}
      - {do: raise_alert, level: info, message: "{{ encounter | tojson }}"}
  - key: no_stay
    when: "patient != None and encounter == None"
    then:
      - {do: raise_alert, level: info, message: "no stay"}
"""

EXPECTED_PATIENT = {"id": "p1", "age": 66, "gender": "female", "tags": ["hypertension"],
                    "attributes": {"bp_target": {"systolic": 130, "diastolic": 80}},
                    "locale": "zh-CN"}
EXPECTED_ENCOUNTER = {"id": "e1", "type": "inpatient", "status": "discharged",
                      "department": "cardiology", "ward": "cardio_w3",
                      "diagnoses": ["I10"], "procedures": ["00.66"],
                      "admitted_at": "2026-11-28T01:00:00+00:00",
                      "discharged_at": "2026-12-03T02:00:00+00:00"}


@pytest.fixture
def hospital(engine: Engine, tmp_path: Path) -> Engine:
    """The probe form, flow and rule set as one bundle; patient ``p1`` with an older outpatient
    visit ``e0`` and the discharged stay ``e1`` (the latest)."""
    import_bundle(APPS / "common", engine=engine)
    app = tmp_path / "ctx"
    for folder, text in (("forms", FORM), ("flows", FLOW), ("rules", RULES)):
        (app / folder).mkdir(parents=True)
        (app / folder / "ctx_probe.yaml").write_text(text, "utf-8")
    (app / "app.yaml").write_text(
        "id: ctx\nname: {zh-CN: 上下文, en: Context}\nversion: 0.1.0\nformat: 1\n"
        "default_locale: zh-CN\nrequires: [common]\n", "utf-8")
    with frozen_now(NOW):
        import_bundle(app, engine=engine)
    with transaction(engine) as session:
        for dept in ("cardiology", "cardio_w3", "neurology"):
            if session.get(Department, dept) is None:
                session.add(Department(id=dept, name={"zh-CN": dept, "en": dept}))
        session.add(Patient(id="p1", mrn="MRN-CTX-1", name="王芳", gender="female",
                            birth_date=date(1960, 12, 7), phone="13800138000",
                            id_number="110101196012070022", locale="zh-CN",
                            attributes={"bp_target": {"systolic": 130, "diastolic": 80}}))
        session.flush()
        session.add(PatientTag(patient_id="p1", tag="hypertension", source="test"))
        session.add(Encounter(id="e0", patient_id="p1", type="outpatient",
                              department_id="neurology", status="admitted",
                              admitted_at=datetime(2025, 3, 1, 1, 0, tzinfo=UTC),
                              diagnoses={"codes": ["G43"]}))
        session.add(Encounter(id="e1", patient_id="p1", type="inpatient",
                              department_id="cardiology", ward_id="cardio_w3",
                              status="discharged",
                              admitted_at=datetime(2026, 11, 28, 1, 0, tzinfo=UTC),
                              discharged_at=datetime(2026, 12, 3, 2, 0, tzinfo=UTC),
                              diagnoses={"codes": ["I10"]}, procedures={"codes": ["00.66"]}))
    return engine


@pytest.fixture
def form_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The names the form engine hands to its evaluator on each submission."""
    seen: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> form_logic.Evaluation:
        seen.append(dict(kwargs.get("context") or {}))
        return form_logic.evaluate(*args, **kwargs)

    monkeypatch.setattr(form_runtime, "evaluate", spy)
    yield seen


def _form(engine: Engine, encounter_id: str | None
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit the probe form; its stored answers and its ``form.submitted`` payload."""
    with frozen_now(NOW), transaction(engine) as session:
        submission, _ = form_runtime.submit(
            session, form_key="ctx_probe", patient_id="p1", encounter_id=encounter_id,
            answers={"note": "ok", "senior_discharged": "是"})
        return dict(submission.answers), form_runtime.event_payload(submission)


def _flow(engine: Engine, encounter_id: str | None, key: str) -> dict[str, Any]:
    """Run the probe flow to its end; the run's context (what its expressions read)."""
    with frozen_now(NOW), transaction(engine) as session:
        run_id = start(session, flow_key="ctx_probe", patient_id="p1",
                       encounter_id=encounter_id, idempotency_key=key)
        run = session.get(FlowRun, run_id)
        assert run is not None and run.status == "completed"
        return dict(run.context)


def _rules(engine: Engine, payload: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Dry-run the probe rule set on a ``form.submitted`` payload: what the matched rule read
    (its trace) and the ``patient`` and ``encounter`` it rendered."""
    with frozen_now(NOW), transaction(engine) as session:
        outcome = dry_run(session, "ctx_probe", {"type": "form.submitted", "payload": payload})
    assert [m["rule"] for m in outcome.matched] == ["senior_discharged"]
    rendered = [json.loads(action["would"]["message"]) for action in outcome.actions]
    return outcome.matched[0]["values"], rendered


def test_every_engine_sees_the_same_patient_and_encounter(
        hospital: Engine, form_names: list[dict[str, Any]]) -> None:
    answers, payload = _form(hospital, "e1")
    flow = _flow(hospital, "e1", "probe-e1")
    trace, (rule_patient, rule_encounter) = _rules(hospital, payload)

    # the form: what its expressions were given, and what they computed from it
    assert form_names[-1]["patient"] == EXPECTED_PATIENT
    assert form_names[-1]["encounter"] == EXPECTED_ENCOUNTER
    assert answers["age"] == 66 and answers["stay"] == "discharged"
    assert answers["senior_discharged"] == "是"  # visible_if held, so the answer was kept
    # the flow: the names as its `set` step read them, and its decision
    assert flow["patient"] == EXPECTED_PATIENT
    assert flow["encounter"] == EXPECTED_ENCOUNTER
    assert flow["decided"] == "senior_discharged"
    # the rules: the names rendered by the matched rule, and what its condition read
    assert rule_patient == EXPECTED_PATIENT
    assert rule_encounter == EXPECTED_ENCOUNTER
    assert trace == {"patient.age": 66, "encounter.status": "discharged"}


def test_without_an_encounter_every_engine_picks_the_latest_stay(
        hospital: Engine, form_names: list[dict[str, Any]]) -> None:
    answers, payload = _form(hospital, None)
    assert payload["encounter_id"] is None
    flow = _flow(hospital, None, "probe-none")
    _trace, (rule_patient, rule_encounter) = _rules(hospital, payload)

    assert form_names[-1]["encounter"] == EXPECTED_ENCOUNTER
    assert flow["encounter"] == EXPECTED_ENCOUNTER
    assert rule_encounter == EXPECTED_ENCOUNTER
    assert form_names[-1]["patient"] == flow["patient"] == rule_patient == EXPECTED_PATIENT
    assert answers["stay"] == "discharged"
    assert payload["department_id"] == "cardiology"  # attributed to the stay it was read with


def test_no_engine_sees_identifying_patient_data(
        hospital: Engine, form_names: list[dict[str, Any]]) -> None:
    _answers, payload = _form(hospital, "e1")
    flow = _flow(hospital, "e1", "probe-private")
    _trace, (rule_patient, _enc) = _rules(hospital, payload)

    for patient in (form_names[-1]["patient"], flow["patient"], rule_patient):
        text = json.dumps(patient, ensure_ascii=False)
        for secret in ("王芳", "13800138000", "110101196012070022", "MRN-CTX-1", "1960"):
            assert secret not in text


def test_another_patients_encounter_is_not_read(hospital: Engine) -> None:
    """An encounter id of someone else is no encounter (not a fallback to the latest stay)."""
    with transaction(hospital) as session:
        session.add(Patient(id="p2", mrn="MRN-CTX-2", name="李雷", gender="male"))
        session.flush()
        session.add(Encounter(id="e2", patient_id="p2", type="outpatient",
                              department_id="neurology", status="admitted"))
    with frozen_now(NOW), transaction(hospital) as session:
        outcome = dry_run(session, "ctx_probe", {"type": "form.submitted", "payload": {
            "patient_id": "p1", "encounter_id": "e2"}})
        assert [m["rule"] for m in outcome.matched] == ["no_stay"]
        assert pick_encounter(session, "p1", "e2") is None
        theirs, mine = pick_encounter(session, "p2", None), pick_encounter(session, "p1", None)
        assert theirs is not None and theirs.id == "e2"
        assert mine is not None and mine.id == "e1"
