"""The runner reports what it saw: a wrong expectation fails at its file:line:col with the observed
value, a malformed scenario fails ``careloop validate`` located, and the CLI's exit codes."""

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
start: "2026-12-01T10:05:00+08:00"
steps:
  - setup:
      departments: [{{id: cardiology, name: {{zh-CN: 心内科, en: Cardiology}}}}]
      users:
        - {{username: nurse_li, role: nurse, department: cardiology}}
  - his:
      - type: patient.upserted
        payload: {{patient_id: P1, mrn: M1, name: 张三, birth_date: "1950-03-01"}}
      - type: encounter.discharged
        payload: {{encounter_id: E1, patient_id: P1, type: inpatient, department_id: cardiology,
                  responsible_nurse: nurse_li, discharged_at: "2026-12-01T10:00:00+08:00"}}
"""


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    """A copy of the discharge app and the app it requires, to add scenarios to."""
    for name in ("common", "discharge"):
        shutil.copytree(APPS / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("scenarios"))
    (tmp_path / "discharge" / "scenarios").mkdir()
    return tmp_path


def _write(apps: Path, key: str, steps: str) -> Path:
    path = apps / "discharge" / "scenarios" / f"{key}.yaml"
    path.write_text(HEAD.format(key=key) + steps, "utf-8")
    return path


def _at(path: Path, text: str) -> str:
    """``file:line:col`` of the first occurrence of ``text`` in the file."""
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if text in line:
            return f"{path}:{number}:{line.index(text) + 1}"
    raise AssertionError(f"{text!r} not in {path}")


def test_a_wrong_expectation_fails_at_its_place_with_what_was_seen(
        apps: Path, engine: object) -> None:
    path = _write(apps, "wrong_count", """    expect:
      - messages: {template: discharge_settlement, patient: P1, count: 2}
  - travel: 1d
""")
    result = CliRunner().invoke(scenario, ["run", str(path)])
    assert result.exit_code == 1, result.output
    where = _at(path, "messages: {template: discharge_settlement")
    assert (f"{where}: expected 2 messages (template discharge_settlement, patient P1), saw 1 "
            "(messages: discharge_settlement wechat pending; medication_guidance wechat pending)"
            ) in result.output
    assert "travel 1d" not in result.output  # a failed step stops the journey
    assert result.output.rstrip().endswith("1 scenario(s): 0 passed, 1 failed")


def test_an_inbox_expectation_shows_what_the_person_sees(apps: Path, engine: object) -> None:
    path = _write(apps, "inbox_seen", """  - travel: {to: "2026-12-08T09:31:00+08:00"}
    expect:
      - inbox: {of: nurse_li, kind: phone_followup, count: 2}
""")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    failure = report["scenarios"][0]["steps"][-1]["failures"][0]
    assert f"{failure['file']}:{failure['line']}:{failure['column']}" == _at(path, "inbox:")
    assert failure["path"] == "$.steps[2].expect[0]"
    assert failure["message"] == ("expected 2 tasks (kind phone_followup), saw 1 "
                                  "(nurse_li's mine inbox: 出院第7天电话随访 [normal])")


def test_approving_a_task_that_is_no_approval_fails_clearly(apps: Path, engine: object) -> None:
    path = _write(apps, "approve_phone", """  - travel: {to: "2026-12-08T09:31:00+08:00"}
  - staff: {as: nurse_li, task: {kind: phone_followup}, action: approve}
""")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    assert result.exit_code == 1, result.output
    step = json.loads(result.stdout)["scenarios"][0]["steps"][-1]
    message = step["failures"][0]["message"]
    assert step["type"] == "staff" and step["failures"][0]["path"] == "$.steps[3]"
    # the decision API refuses: a phone task is no approval
    assert message.startswith("approve of task 1 by nurse_li answered 409: "), message
    assert "no open approval" in message


def test_a_passing_run_prints_each_step_and_a_summary(apps: Path, engine: object) -> None:
    path = _write(apps, "passing", """    expect:
      - flow_runs: {flow: discharge, patient: P1, count: 1}
      - messages: {template: medication_guidance, channel: wechat, delivered: false}
  - travel: 3d
    expect:
      - messages: {template: discharge_care_day3, delivered: true, count: 1,
                   after: "2026-12-04T09:30", before: "2026-12-04T09:30:01"}
      - messages: {template: discharge_care_day3, before: "2026-12-04T09:30", count: 0}
  - travel: {to: "2026-12-09T09:29"}
    expect:
      - tasks: {kind: phone_followup, user: nurse_li, overdue: false, count: 1}
  - travel: 1h
    expect:
      - tasks: {kind: phone_followup, user: nurse_li, overdue: true, count: 1}
""")
    result = CliRunner().invoke(scenario, ["run", str(apps / "discharge")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"scenario passing ({path})"
    assert lines[1].startswith("  ✓ [2026-12-01 10:05] #1 setup")
    assert lines[3].startswith("  ✓ [2026-12-04 10:05] #3 travel 3d: to 2026-12-04 10:05 (")
    assert lines[-1] == "1 scenario(s): 1 passed, 0 failed"


def test_usage_errors_exit_2(apps: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(scenario, ["run", "no_such_app"]).exit_code == 2
    loose = apps / "loose.yaml"
    loose.write_text("kind: scenario\n", "utf-8")
    assert runner.invoke(scenario, ["run", str(loose)]).exit_code == 2


def test_a_malformed_scenario_fails_validate_located(apps: Path) -> None:
    path = _write(apps, "malformed", """  - travel: 3d
  - patient_opens_link: {patient: P1, form: discharge_day3, template: no_such_template}
  - answer: {recovery: good, overal: 5}
    expect:
      - submissions: {form: discharge_day33}
""")
    result = CliRunner().invoke(validate, [str(apps / "discharge")])
    assert result.exit_code == 1
    assert result.output.splitlines()[:3] == [
        f"{_at(path, 'no_such_template')}: scenario.unknown-reference at "
        "$.steps[3].patient_opens_link.template — no template with key 'no_such_template'",
        f"{_at(path, 'overal')}: scenario.unknown-field at $.steps[4].answer.overal — "
        "form 'discharge_day3' has no field 'overal' (did you mean 'overall'?)",
        f"{_at(path, 'discharge_day33')}: scenario.unknown-reference at "
        "$.steps[4].expect[0].submissions.form — no form with key 'discharge_day33' "
        "(did you mean 'discharge_day3'?)"]
    run = CliRunner().invoke(scenario, ["run", str(path)])
    assert run.exit_code == 1 and "0 scenario(s)" in run.output
    assert "scenario.unknown-field" in run.output


def test_answers_the_page_refuses_fail_with_the_pages_own_errors(apps: Path,
                                                                 engine: object) -> None:
    path = _write(apps, "missing_answer", """  - travel: 3d
  - patient_opens_link: {patient: P1, template: discharge_care_day3}
  - answer: {recovery: good, medication_clear: "yes"}
""")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    step = json.loads(result.stdout)["scenarios"][0]["steps"][-1]
    assert step["type"] == "answer" and result.exit_code == 1
    assert step["failures"][0]["message"].startswith(
        "the patient page refused the answers (422): ")


def test_travel_ticks_wherever_something_falls_due(engine: object) -> None:
    """Three days of travel: the daily event once per day, the day-3 timer at its minute."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from careloop.engine.bundles import import_bundle
    from careloop.engine.db import transaction
    from careloop.engine.models import DomainEventRow
    from careloop.web.scenarios.journey import Journey
    from careloop.web.scenarios.runner import bundles_for, isolated_database

    start = datetime(2026, 12, 1, 2, 5, tzinfo=UTC)
    with isolated_database() as db:
        for bundle in bundles_for(APPS / "discharge"):
            import_bundle(bundle, engine=db)
        journey = Journey(db, start)
        assert journey.travel("3d").startswith("to 2026-12-04 10:05 (")
        with transaction(db) as session:
            days = session.scalars(select(DomainEventRow.event_id).where(
                DomainEventRow.type == "scheduled").order_by(DomainEventRow.id)).all()
    assert journey.clock == datetime(2026, 12, 4, 2, 5, tzinfo=UTC)
    assert list(days) == ["scheduled:2026-12-02", "scheduled:2026-12-03", "scheduled:2026-12-04"]


def test_other_apps_taking_part_are_imported_with_what_they_require(apps: Path) -> None:
    from careloop.engine.bundles import requires_of
    from careloop.web.scenarios.runner import bundles_for

    paths = bundles_for(APPS / "discharge", ("satisfaction", "complaints"))
    order = [p.name for p in paths]
    assert order[0] == "common"
    assert {"common", "discharge", "satisfaction", "complaints"} <= set(order)
    for position, bundle in enumerate(paths):  # every app after the apps it requires
        assert set(requires_of(bundle)[1]) <= set(order[:position])
    path = _write(apps, "missing_app", "")
    text = path.read_text("utf-8").replace("steps:\n", "apps: [no_such_app]\nsteps:\n", 1)
    path.write_text(text, "utf-8")
    result = CliRunner().invoke(scenario, ["run", str(path)])
    assert result.exit_code == 1
    assert (f"{path}:1:1: the apps could not be imported: app 'no_such_app' named in 'apps' is "
            "not beside discharge") in result.output


def test_setup_refuses_a_user_of_a_department_that_does_not_exist(apps: Path,
                                                                   engine: object) -> None:
    path = apps / "discharge" / "scenarios" / "no_department.yaml"
    path.write_text("""kind: scenario
key: no_department
title: {zh-CN: 测试, en: Test}
start: "2026-12-01T10:05"
steps:
  - setup:
      users: [{username: hn_ortho, role: head_nurse, department: orthopedics}]
""", "utf-8")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    assert result.exit_code == 1
    failure = json.loads(result.stdout)["scenarios"][0]["steps"][0]["failures"][0]
    assert (failure["line"], failure["column"]) == (6, 5)
    assert failure["message"] == ("cannot set up user hn_ortho: web.admin.unknown_department "
                                  "(department 'orthopedics' must exist: list it under "
                                  "setup.departments)")


def test_invalid_scenarios_are_listed_in_the_json_report(apps: Path) -> None:
    _write(apps, "bad_user", "  - staff: {as: nobody}\n")
    result = CliRunner().invoke(scenario, ["run", "--format", "json", str(apps / "discharge")])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["scenarios"] == []
    assert [(e["code"], e["path"]) for e in report["errors"]] == [
        ("scenario.unknown-user", "$.steps[2].staff.as")]


def test_a_message_expected_without_a_link_shows_the_links_it_has(apps: Path,
                                                                  engine: object) -> None:
    path = _write(apps, "no_link", """  - travel: 3d
    expect:
      - messages: {template: discharge_care_day3, link: none}
""")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    failure = json.loads(result.stdout)["scenarios"][0]["steps"][-1]["failures"][0]
    assert result.exit_code == 1
    assert failure["message"].startswith(
        "expected message discharge_care_day3 to carry no link, it has {")


def test_a_tasks_due_time_is_bounded_and_shown_when_it_is_not_as_expected(
        apps: Path, engine: object) -> None:
    path = _write(apps, "due_bounds", """  - travel: {to: "2026-12-08T09:31:00+08:00"}
    expect:
      - tasks: {kind: phone_followup, user: nurse_li, count: 1,
                due_after: "2026-12-09T09:30", due_before: "2026-12-09T09:31"}
  - travel: 1m
    expect:
      - tasks: {kind: phone_followup, due_before: "2026-12-09T09:30", count: 1}
""")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    assert result.exit_code == 1, result.output
    steps = json.loads(result.stdout)["scenarios"][0]["steps"]
    assert steps[2]["failures"] == []  # due a day after the task was made, at 09:30
    failure = steps[3]["failures"][0]
    assert f"{failure['file']}:{failure['line']}:{failure['column']}" == _at(
        path, "tasks: {kind: phone_followup, due_before")
    assert failure["message"] == (
        "expected 1 task (kind phone_followup, due_before 2026-12-09T09:30), saw 0 (tasks: "
        "出院第7天电话随访 [cardiology user nurse_li, open, normal, due 2026-12-09 09:30])")


def test_a_due_bound_that_is_no_instant_fails_validate(apps: Path) -> None:
    path = _write(apps, "bad_due", """    expect:
      - tasks: {kind: phone_followup, due_after: next week}
""")
    result = CliRunner().invoke(validate, [str(apps / "discharge")])
    assert result.exit_code == 1
    assert f"{_at(path, 'next week')}: scenario.bad-instant at " \
           "$.steps[1].expect[0].tasks.due_after" in result.output


COMPLAINT = """kind: scenario
key: {key}
title: {{zh-CN: 测试, en: Test}}
start: "2026-12-02T14:00:00+08:00"
steps:
  - setup:
      departments: [{{id: cardiology, name: {{zh-CN: 心内科, en: Cardiology}}}}]
      users:
        - {{username: hn_cardiology, role: head_nurse, department: cardiology}}
        - {{username: px_zhao, role: px_office}}
  - his:
      - type: patient.upserted
        payload: {{patient_id: P2, mrn: M2, name: 李四, birth_date: "1972-05-09"}}
      - type: encounter.discharged
        payload: {{encounter_id: E2, patient_id: P2, type: inpatient, department_id: cardiology,
                  discharged_at: "2026-12-01T10:00:00+08:00"}}
  - staff:
      as: hn_cardiology
      fill:
        path: /patients/P2/complaint
        answers: {{channel_of_complaint: phone, category: attitude, department: cardiology,
                  description: 夜班护士态度生硬, wants_contact: "no"}}
  - staff: {{as: hn_cardiology, task: {{kind: complaint_response}}, action: approve,
            notes: 已致歉}}
"""


def test_a_decision_sends_the_routes_body_notes_and_back_to(tmp_path: Path,
                                                            engine: object) -> None:
    """The runner posts ``{decision, notes, back_to}`` as ``POST /api/v1/tasks/{id}/decision``
    reads it: the step to go back to reaches the route (an unknown one is refused) and the
    notes are kept on the decided task."""
    for name in ("common", "complaints"):
        shutil.copytree(APPS / name, tmp_path / name, ignore=shutil.ignore_patterns("scenarios"))
    (tmp_path / "complaints" / "scenarios").mkdir()
    path = tmp_path / "complaints" / "scenarios" / "back_to.yaml"
    path.write_text(COMPLAINT.format(key="back_to") + """    expect:
      - tasks: {kind: complaint_response, status: done, count: 1}
      - page: {as: hn_cardiology, path: "/tasks/{task}", contains: [已致歉]}
  - staff: {as: px_zhao, task: {title_contains: 审核}, action: reject, to_step: nowhere}
""", "utf-8")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    assert result.exit_code == 1, result.output
    steps = json.loads(result.stdout)["scenarios"][0]["steps"]
    assert [step["failures"] for step in steps[:4]] == [[], [], [], []], result.output
    assert "answered 422" in steps[4]["failures"][0]["message"]
    assert "no step 'nowhere' to go back to" in steps[4]["failures"][0]["message"]


def test_a_message_expected_to_contain_a_text_shows_the_bodies_it_saw(
        apps: Path, engine: object) -> None:
    path = _write(apps, "contains_text", """    expect:
      - messages: {template: discharge_settlement, contains: [张三], count: 1}
      - messages: {template: discharge_settlement, contains: [张三, 李四], count: 1}
""")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    assert result.exit_code == 1, result.output
    failures = json.loads(result.stdout)["scenarios"][0]["steps"][-1]["failures"]
    assert [f["path"] for f in failures] == ["$.steps[1].expect[1]"]
    assert failures[0]["message"].startswith(
        "expected 1 message (template discharge_settlement, contains ['张三', '李四']), saw 0 "
        "(messages: discharge_settlement wechat pending “张三")


def test_setup_draws_again_when_a_random_password_contains_the_username(
        apps: Path, engine: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scenario's users get random passwords; one that happened to contain a short username
    ("px" in "…aPx…", about one set-up in a hundred) was refused by the password policy and the
    shipped touchpoint scenario failed on PostgreSQL in CI."""
    import secrets
    from types import SimpleNamespace

    from careloop.web.scenarios import journey

    draws = iter(["aPx3kQ9zLm2R", "k7Qm2Zt9Lw4R"])
    monkeypatch.setattr(journey, "secrets", SimpleNamespace(
        token_urlsafe=lambda n=None: next(draws, secrets.token_hex(8))))
    path = apps / "discharge" / "scenarios" / "px_user.yaml"
    path.write_text("""kind: scenario
key: px_user
title: {zh-CN: 测试, en: Test}
start: "2026-12-01T10:05"
steps:
  - setup:
      users: [{username: px, role: px_office}]
""", "utf-8")
    result = CliRunner().invoke(scenario, ["run", str(path), "--format", "json"])
    assert result.exit_code == 0, result.stdout
