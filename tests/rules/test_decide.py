"""The ``decide`` action: a rule looks up a decision table and the actions after it use the
outputs — start the chosen flow (``flow_from``), keep the first-call day as a patient attribute."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.events import record
from careloop.rules.models import RuleAlert, RuleEvaluation
from careloop.rules.runtime import dry_run

from .conftest import Recorder

TABLE = """kind: decision_table
key: discharge_path
title: {zh-CN: 出院路径, en: Discharge path}
hit_policy: first
inputs:
  - {key: department, expression: "encounter.department"}
  - {key: pci, expression: "'PCI' in encounter.procedures"}
outputs: [{key: flow}, {key: first_call_days}]
rows:
  - when: {department: cardiology, pci: true}
    then: {flow: pci_followup, first_call_days: 7}
  - when: {department: cardiology}
    then: {flow: discharge, first_call_days: 3}
  - when: {department: psychiatry}
    then: {flow: no_such_flow, first_call_days: 1}
"""

RULES = """kind: ruleset
key: discharge_routing
title: {zh-CN: 出院分流, en: Discharge routing}
on: [encounter.discharged]
rules:
  - key: route
    title: {zh-CN: 按决策表选路径, en: Path from the table}
    when: "encounter != None"
    then:
      - {do: decide, table: discharge_path}
      - {do: start_flow, flow_from: decision.flow}
      - {do: set_attribute, name: first_call_days, value_from: decision.first_call_days}
"""


def test_outputs_drive_the_following_actions(
        engine: Engine, hospital: dict[str, int], install_yaml: Callable[..., None],
        recording_services: dict[str, Recorder]) -> None:
    install_yaml(TABLE, RULES, requires=("common", "cardiology", "discharge"))
    with transaction(engine) as session:
        record(session, "encounter.discharged", {"patient_id": "p1", "encounter_id": "e1"},
               event_id="d1")
        record(session, "encounter.discharged", {"patient_id": "p2", "encounter_id": "e3"},
               event_id="d2")
    starts = recording_services["flows.start"].calls
    assert [(c["flow_key"], c["patient_id"]) for c in starts] == [("pci_followup", "p1"),
                                                                  ("discharge", "p2")]
    with transaction(engine) as session:
        assert session.get(Patient, "p1").attributes["first_call_days"] == 7  # type: ignore
        assert session.get(Patient, "p2").attributes["first_call_days"] == 3  # type: ignore
        trace = session.scalars(select(RuleEvaluation).where(
            RuleEvaluation.event_id == "d1",
            RuleEvaluation.ruleset_key == "discharge_routing")).one().actions
    assert trace[0] == {"rule": "route", "do": "decide", "result": {
        "table": "discharge_path", "outputs": {"flow": "pci_followup", "first_call_days": 7}}}
    assert trace[1]["result"]["flow"] == "pci_followup"


def test_a_flow_the_table_names_but_nobody_defined_fails_loudly(
        engine: Engine, hospital: dict[str, int], install_yaml: Callable[..., None],
        recording_services: dict[str, Recorder]) -> None:
    install_yaml(TABLE, RULES, requires=("common", "cardiology", "discharge"))
    with transaction(engine) as session:
        record(session, "encounter.discharged", {"patient_id": "p2", "encounter_id": "e2"},
               event_id="d3")
    assert recording_services["flows.start"].calls == []
    with transaction(engine) as session:
        alert = session.scalars(select(RuleAlert).where(
            RuleAlert.ruleset_key == "discharge_routing", RuleAlert.level == "critical")).one()
        assert "decision.flow names no flow ('no_such_flow')" in alert.message
        assert "first_call_days" not in (session.get(Patient, "p2").attributes or {})  # type: ignore


def test_a_dry_run_looks_the_table_up_and_changes_nothing(
        engine: Engine, hospital: dict[str, int], install_yaml: Callable[..., None],
        recording_services: dict[str, Recorder]) -> None:
    install_yaml(TABLE, RULES, requires=("common", "cardiology", "discharge"))
    with transaction(engine) as session:
        outcome = dry_run(session, "discharge_routing", {
            "type": "encounter.discharged", "payload": {"patient_id": "p1", "encounter_id": "e1"}})
    assert outcome.actions[0]["result"]["outputs"] == {"flow": "pci_followup",
                                                       "first_call_days": 7}
    assert outcome.actions[1]["would"] == {"flow_from": "decision.flow"}
    assert recording_services["flows.start"].calls == []
    with transaction(engine) as session:
        assert "first_call_days" not in (session.get(Patient, "p1").attributes or {})  # type: ignore
