"""Scenario vocabulary for the alert centre and the doctor's console: a task's ``due`` time,
alerts as a person sees them (``seen_by`` / ``not_seen_by``), who acknowledged one, ``{alert}``
in a path (acknowledging from the alert centre), and ``post: {json}`` (a form entered by staff
through the console's API)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from careloop.engine.cli import validate
from careloop.web.scenarios.cli import scenario

APPS = Path(__file__).resolve().parents[2] / "app_definitions"

HEAD = """kind: scenario
key: {key}
title: {{zh-CN: 测试, en: Test}}
start: "2026-12-03T10:00:00+08:00"
steps:
  - setup:
      departments:
        - {{id: psychiatry, name: {{zh-CN: 精神科, en: Psychiatry}}}}
        - {{id: cardiology, name: {{zh-CN: 心内科, en: Cardiology}}}}
      users:
        - {{username: psy_doc, role: doctor, department: psychiatry}}
        - {{username: cardio_doc, role: doctor, department: cardiology}}
  - his:
      - type: patient.upserted
        payload: {{patient_id: P9, mrn: M9, name: 测试, birth_date: "1990-01-01"}}
      - type: encounter.admitted
        payload: {{encounter_id: E9, patient_id: P9, type: outpatient, department_id: psychiatry,
                  attending_doctor: psy_doc, admitted_at: "2026-12-03T09:30:00+08:00"}}
  - staff:
      as: psy_doc
      post:
        path: /api/v1/forms/phq9/submissions
        json: {{patient_id: P9, encounter_id: E9, channel: phone,
               answers: {{q1: "0", q2: "0", q3: "0", q4: "0", q5: "0", q6: "0", q7: "0",
                         q8: "0", q9: "1"}}}}
"""


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    """A copy of the mental-health app and the app it requires, to add scenarios to."""
    for name in ("common", "mental_health"):
        shutil.copytree(APPS / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("scenarios"))
    (tmp_path / "mental_health" / "scenarios").mkdir()
    return tmp_path


def _write(apps: Path, key: str, steps: str) -> Path:
    path = apps / "mental_health" / "scenarios" / f"{key}.yaml"
    path.write_text(HEAD.format(key=key) + steps, "utf-8")
    return path


def _run(path: Path) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    return result.exit_code, json.loads(result.stdout)


def test_staff_entry_through_the_api_and_acknowledging_the_newest_alert(
        apps: Path, engine: object) -> None:
    path = _write(apps, "acknowledged", """    expect:
      - submissions: {form: phq9, patient: P9, count: 1}
      - tasks: {user: psy_doc, priority: urgent, due: "2026-12-03T11:00", count: 1}
      - alerts: {level: critical, status: open, rule: self_harm, seen_by: psy_doc,
                 not_seen_by: cardio_doc, count: 1}
  - staff:
      as: psy_doc
      visit: /alerts
      post: {path: "/alerts/{alert}/acknowledge", fields: {note: 已联系患者}}
    expect:
      - alerts: {status: acknowledged, acknowledged_by: psy_doc, seen_by: psy_doc, count: 1}
      - page: {as: psy_doc, path: "/alerts?status=acknowledged", contains: [已联系患者]}
""")
    code, report = _run(path)
    assert code == 0, report
    steps = report["scenarios"][0]["steps"]  # type: ignore[index]
    assert "posted /api/v1/forms/phq9/submissions → 201" in steps[2]["done"]
    assert "/acknowledge → 303" in steps[3]["done"]


def test_a_wrong_due_time_and_a_wrong_viewer_fail_with_what_was_seen(
        apps: Path, engine: object) -> None:
    path = _write(apps, "wrong_viewer", """    expect:
      - tasks: {user: psy_doc, priority: urgent, due: "2026-12-03T12:00", count: 1}
      - alerts: {level: critical, seen_by: cardio_doc}
      - alerts: {level: critical, not_seen_by: psy_doc}
      - alerts: {acknowledged_by: psy_doc}
""")
    code, report = _run(path)
    assert code == 1
    failures = [f["message"] for f in
                report["scenarios"][0]["steps"][2]["failures"]]  # type: ignore[index]
    assert failures[0].startswith(
        "expected 1 task (user psy_doc, priority urgent, due 2026-12-03T12:00), saw 0 (tasks: "
        "【紧急】PHQ-9 第9题阳性（1），请立即联系患者 [psychiatry user psy_doc, open, urgent, "
        "due 2026-12-03 11:00]")
    assert failures[1:3] == [
        "expected cardio_doc to see the critical alert self_harm of patient P9 in the alert "
        "centre; it lists 0 alert(s)",
        "expected psy_doc not to see the critical alert self_harm of patient P9 in the alert "
        "centre; it lists 1 alert(s)"]
    assert failures[3].startswith("expected at least 1 alerts (acknowledged_by psy_doc), saw 0")


def test_the_alert_placeholder_without_an_alert_fails_the_step(apps: Path,
                                                               engine: object) -> None:
    path = apps / "mental_health" / "scenarios" / "no_alert.yaml"
    path.write_text("""kind: scenario
key: no_alert
title: {zh-CN: 测试, en: Test}
start: "2026-12-03T10:00:00+08:00"
steps:
  - setup:
      departments: [{id: psychiatry, name: {zh-CN: 精神科, en: Psychiatry}}]
      users: [{username: psy_doc, role: doctor, department: psychiatry}]
  - staff: {as: psy_doc, post: {path: "/alerts/{alert}/acknowledge", fields: {note: x}}}
""", "utf-8")
    code, report = _run(path)
    step = report["scenarios"][0]["steps"][1]  # type: ignore[index]
    assert code == 1
    assert step["failures"][0]["message"] == (
        "/alerts/{alert}/acknowledge: no alert has been raised yet")


def test_the_new_options_are_checked_when_validating(apps: Path) -> None:
    _write(apps, "malformed", """    expect:
      - tasks: {due: "next tuesday"}
      - alerts: {seen_by: nobody}
  - staff: {as: psy_doc, post: {path: /x, fields: {a: b}, json: {a: b}}}
""")
    result = CliRunner().invoke(validate, [str(apps / "mental_health")])
    assert result.exit_code == 1
    assert "scenario.bad-instant at $.steps[2].expect[0].tasks.due" in result.output
    assert "scenario.unknown-user at $.steps[2].expect[1].alerts.seen_by" in result.output
    assert "scenario.post-body at $.steps[3].staff.post" in result.output
