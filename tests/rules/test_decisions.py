"""Decision tables: cells, every hit policy, overlap and coverage analysis."""

from __future__ import annotations

import pytest

from careloop.engine.check import check_documents
from careloop.engine.sources import load_text
from careloop.rules.decisions import CellError, parse_cell
from careloop.rules.spec import RuleRuntimeError


@pytest.mark.parametrize(("cell", "value", "expected"), [
    ("-", "x", True), (None, 3, True), (70, 70, True), (70, 71, False),
    (">= 70", 70, True), ("> 70", 70, False), ("< 18", 17.5, True), ("!= 3", 3, False),
    ("[18..64]", 64, True), ("[18..64)", 64, False), ("(0..10]", 0, False),
    ("cardiology", "cardiology", True), ("a | b", "b", True), ("a | b", "c", False),
    ("not a | b", "c", True), (">= 70", "seventy", False), (True, True, True),
])
def test_cells(cell: object, value: object, expected: bool) -> None:
    assert parse_cell(cell).test(value) is expected


@pytest.mark.parametrize("cell", ["[9..1]", ">= x", "<<3"])
def test_bad_cells_are_refused(cell: str) -> None:
    with pytest.raises(CellError):
        parse_cell(cell)


TABLE = """\
kind: decision_table
key: t
title: {zh-CN: 表, en: Table}
hit_policy: %s
%s
inputs:
  - {key: age, expression: "patient.age"}
outputs:
  - {key: points}
rows:
  - when: {age: ">= 70"}
    then: {points: 2}
    priority: 1
  - when: {age: ">= 80"}
    then: {points: 5}
    priority: 9
  - when: {age: "< 50"}
    then: {points: 0}
"""


def _table(policy: str, extra: str = "") -> object:
    result = check_documents([load_text(TABLE % (policy, extra), "t.yaml")])
    assert result.ok, [p.render() for p in result.problems]
    return result.specs[("decision_table", "t")]


@pytest.mark.parametrize(("policy", "extra", "age", "expected"), [
    ("first", "", 85, {"points": 2}),
    ("priority", "", 85, {"points": 5}),
    ("first", "", 60, None),
    ("rule_order", "", 85, [{"points": 2}, {"points": 5}]),
    ("collect", "", 85, [{"points": 2}, {"points": 5}]),
    ("collect", "aggregate: sum", 85, 7),
    ("collect", "aggregate: max", 85, 5),
    ("collect", "aggregate: min", 85, 2),
    ("collect", "aggregate: count", 85, 2),
    ("collect", "aggregate: min", 60, None),
])
def test_hit_policies(policy: str, extra: str, age: int, expected: object) -> None:
    spec = _table(policy, extra)
    assert spec.decide({"patient": {"age": age}}) == expected  # type: ignore[attr-defined]


def test_any_requires_agreement_at_run_time() -> None:
    spec = _table("any")
    assert spec.decide({"patient": {"age": 40}}) == {"points": 0}  # type: ignore[attr-defined]
    with pytest.raises(RuleRuntimeError):
        spec.decide({"patient": {"age": 85}})  # type: ignore[attr-defined]


def test_unique_reports_overlaps_at_validation() -> None:
    result = check_documents([load_text(TABLE % ("unique", ""), "t.yaml")])
    assert [(p.code, p.line) for p in result.errors] == [("rules.overlapping-rows", 14)]


def test_the_bundled_followup_plan_table() -> None:
    from pathlib import Path

    from careloop.engine.sources import load_file

    path = Path(__file__).resolve().parents[2] / "app_definitions/common/rules/followup_plan.yaml"
    result = check_documents([load_file(path)])
    assert result.problems == []
    spec = result.specs[("decision_table", "followup_plan")]
    ctx = {"encounter": {"department": "cardiology"}, "patient": {"age": 75, "tags": []}}
    assert spec.decide(ctx) == {"plan": "cardiology_elderly", "first_call_days": 3}
    ctx["patient"] = {"age": 75, "tags": ["after_pci"]}
    assert spec.decide(ctx)["plan"] == "cardiac_stent"
