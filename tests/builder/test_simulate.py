"""The builder's "simulate": a journey scenario of the app run against the user's draft in a
scratch SQLite database (a child process), never the live one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.domain import Patient, Task
from careloop.engine.models import AuditRow, DefinitionRow
from careloop.flows.models import FlowRun, OutboxMessage
from careloop.forms.models import Submission

from .conftest import ROOT, login, make_user, open_advanced

SCENARIO = "discharge_day3_answered"
URL = "/api/v1/builder/simulate/flow/discharge"
FLOW = (ROOT / "app_definitions" / "discharge" / "flows" / "discharge.yaml").read_text("utf-8")
DAY5 = FLOW.replace("base: encounter.discharged_at, days: 3,",
                    "base: encounter.discharged_at, days: 5,")
assert DAY5 != FLOW


@pytest.fixture
def px(client: TestClient, apps: list[str]) -> TestClient:
    make_user("px_sim", "px_office")
    login(client, "px_sim")
    return client


def live_rows(engine: Engine) -> dict[str, int]:
    with transaction(engine) as session:
        return {model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Patient, FlowRun, OutboxMessage, Task, Submission, DefinitionRow)}


def test_the_unchanged_draft_passes_with_a_timeline(px: TestClient, engine: Engine) -> None:
    before = live_rows(engine)
    answer = px.post(URL, json={"app": "discharge", "text": FLOW, "scenario": SCENARIO})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["ok"] is True and data["database"] == "sqlite" and data["problems"] == []
    [run] = data["scenarios"]
    assert run["scenario"] == SCENARIO and run["ok"] is True
    assert run["title"]["zh-CN"] == "出院第3天问卷已作答"
    assert [s["at"] for s in run["steps"]][:4] == ["2026-12-01 10:05", "2026-12-01 10:05",
                                                   "2026-12-04 09:00", "2026-12-04 09:31"]
    timeline = run["timeline"]
    texts = [f"{e['at']} {e['zh-CN']}" for e in timeline]
    assert "2026-12-01 10:05 流程「出院随访」开始" in texts
    day3 = [e for e in timeline if e["type"] == "message" and "2026-12-04" in e["at"]]
    assert day3 and day3[0]["at"] == "2026-12-04 09:30", texts
    assert any(e["type"] == "submission" and e["at"] == "2026-12-04 09:31" for e in timeline)
    assert all("UTC" not in e["en"] and "None" not in e["en"] for e in timeline)
    assert live_rows(engine) == before


def test_the_timeline_shows_tasks_and_messages_in_words(px: TestClient) -> None:
    """The day-7 phone call of a 70+ patient: the task's life and the flow's end, in order."""
    data = px.post(URL, json={"app": "discharge", "text": FLOW,
                              "scenario": "discharge_day7_phone_70plus"}).json()
    assert data["ok"] is True, data
    timeline = data["scenarios"][0]["timeline"]
    tasks = [(e["at"], e["zh-CN"], e["en"]) for e in timeline if e["type"] == "task"]
    assert tasks[0][1] == "创建任务：出院第7天电话随访（普通）"
    assert tasks[0][2].startswith("task created: ")
    assert any(zh.startswith("任务完成：") for _, zh, _ in tasks)
    created = timeline.index(next(e for e in timeline if e["type"] == "task"))
    ended = timeline.index(next(e for e in timeline if e["zh-CN"] == "流程「出院随访」已完成"))
    assert created < ended  # at the same minute, what the flow did comes before its end
    messages = [e for e in timeline if e["type"] == "message"]
    assert messages and all("（微信）：" in e["zh-CN"] and "logged" not in e["zh-CN"]
                            for e in messages)


def test_a_draft_that_breaks_the_journey_fails_at_the_expectation(
        px: TestClient, engine: Engine) -> None:
    assert px.put("/api/v1/builder/drafts/flow/discharge",
                  json={"app": "discharge", "text": DAY5}).status_code == 200
    with transaction(engine) as session:
        published = store.current(session, "flow", "discharge")
        assert published is not None
        version, text = published.version, published.source_text
    before = live_rows(engine)
    answer = px.post(URL, json={"app": "discharge", "text": DAY5, "scenario": SCENARIO})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["ok"] is False and data["problems"] == []
    [run] = data["scenarios"]
    failed = [s for s in run["steps"] if s["failures"]]
    assert len(failed) == 1 and failed[0]["step"] == 4, run["steps"]
    [failure] = failed[0]["failures"]
    assert failure["file"] == "discharge/scenarios/discharge_day3_answered.yaml"
    lines = (ROOT / "app_definitions" / "discharge" / "scenarios"
             / "discharge_day3_answered.yaml").read_text("utf-8").splitlines()
    assert "discharge_care_day3" in lines[failure["line"] - 1]
    assert failure["path"].startswith("$.steps[3].expect[0]")
    assert "0" in failure["message"]
    # the live database is untouched and the published flow unchanged
    assert live_rows(engine) == before
    with transaction(engine) as session:
        current = store.current(session, "flow", "discharge")
        assert current is not None
        assert (current.version, current.source_text) == (version, text)
        audit = session.scalars(select(AuditRow).where(
            AuditRow.action == "builder.simulate").order_by(AuditRow.id)).all()
        assert audit and audit[-1].details["ok"] is False


def test_the_saved_draft_is_used_when_another_definition_is_simulated(
        px: TestClient) -> None:
    """Simulating from the day-3 form's page still runs the user's saved flow draft."""
    assert px.put("/api/v1/builder/drafts/flow/discharge",
                  json={"app": "discharge", "text": DAY5}).status_code == 200
    form = (ROOT / "app_definitions" / "discharge" / "forms"
            / "discharge_day3.yaml").read_text("utf-8")
    data = px.post("/api/v1/builder/simulate/form/discharge_day3",
                   json={"app": "discharge", "text": form, "scenario": SCENARIO}).json()
    assert data["ok"] is False
    assert data["scenarios"][0]["steps"][3]["failures"]


def test_an_invalid_draft_reports_its_problems(px: TestClient) -> None:
    broken = FLOW.replace("form: discharge_day3\n", "form: no_such_form\n")
    data = px.post(URL, json={"app": "discharge", "text": broken,
                              "scenario": SCENARIO}).json()
    assert data["ok"] is False and data["scenarios"] == []
    assert any("no_such_form" in p["message"] for p in data["problems"])


def test_scenarios_are_listed_and_unknown_ones_refused(px: TestClient) -> None:
    listed = px.get("/api/v1/builder/apps/discharge/scenarios").json()
    assert {s["key"] for s in listed} >= {SCENARIO, "discharge_cancelled"}
    assert all(s["title"]["zh-CN"] for s in listed)
    answer = px.post(URL, json={"app": "discharge", "text": FLOW, "scenario": "nope"})
    assert answer.status_code == 404 and "nope" in answer.json()["detail"]
    assert px.post(URL, json={"text": FLOW}).status_code == 400


def test_a_long_run_is_stopped(px: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_SIMULATE_TIMEOUT", "0.05")
    answer = px.post(URL, json={"app": "discharge", "text": FLOW, "scenario": SCENARIO},
                     headers={"Accept-Language": "zh-CN"})
    assert answer.status_code == 504
    assert answer.json()["code"] == "builder.simulate_timeout"
    assert "0.05" in answer.json()["detail"]


def test_too_many_simulations_at_once_are_refused(px: TestClient) -> None:
    from careloop.web import simulate

    taken = 0
    while simulate.RUNNING.acquire(blocking=False):
        taken += 1
    try:
        answer = px.post(URL, json={"app": "discharge", "text": FLOW, "scenario": SCENARIO})
        assert answer.status_code == 429
        assert answer.json()["code"] == "builder.simulate_busy"
    finally:
        for _ in range(taken):
            simulate.RUNNING.release()
    assert taken >= 1


def test_simulate_needs_an_editor_of_the_app_and_csrf(
        client: TestClient, apps: list[str]) -> None:
    make_user("nurse_sim", "head_nurse")
    login(client, "nurse_sim")
    answer = client.post(URL, json={"app": "discharge", "text": FLOW, "scenario": SCENARIO})
    assert answer.status_code in (403, 404)
    make_user("px_nocsrf", "px_office")
    login(client, "px_nocsrf")
    del client.headers["X-CSRF-Token"]
    answer = client.post(URL, json={"app": "discharge", "text": FLOW, "scenario": SCENARIO})
    assert answer.status_code == 403


def test_simulate_in_chromium(server: str, engine: Engine) -> None:
    """The head of the PX office opens the discharge flow, simulates the day-3 journey (it
    passes), moves the day-3 wait to day 5 in the text view and simulates again: the journey
    fails at step 4 with the scenario's location, and the timeline is shown in Chinese."""
    from playwright.sync_api import expect, sync_playwright

    from .conftest import ARGS, CHROMIUM, signed_in

    make_user("px_browser", "px_office")
    before = live_rows(engine)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_browser")
            page.goto(f"{server}/builder/edit/flow/discharge?app=discharge")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            page.click("#b-sim-open")
            expect(page.locator(f'#b-sim-scenario option[value="{SCENARIO}"]')).to_be_attached()
            page.select_option("#b-sim-scenario", SCENARIO)
            page.click("#b-sim-run")
            verdict = page.locator("#b-sim-verdict")
            expect(verdict).to_have_class("b-sim-ok", timeout=60_000)
            expect(verdict).to_contain_text("通过")
            expect(page.locator(".b-sim-timeline")).to_contain_text("流程「出院随访」开始")
            expect(page.locator(".b-sim-timeline")).to_contain_text("第3天 09:30")
            expect(page.locator('.b-sim-timeline li[data-day="0"]').first).to_contain_text("第0天")
            expect(page.locator(".b-sim-timeline")).to_contain_text("出院（心内科）")

            open_advanced(page, "#b-text-advanced")
            page.fill("#b-yaml", DAY5)
            page.click("#b-apply-text")
            expect(page.locator("#b-problems li.ok")).to_be_visible()
            page.click("#b-sim-run")
            expect(verdict).to_have_class("b-sim-fail", timeout=60_000)
            failed = page.locator('.b-sim-steps li.b-sim-fail[data-step="4"]')
            expect(failed).to_contain_text("discharge/scenarios/discharge_day3_answered.yaml:")
            expect(page.locator(".b-sim-steps li.b-sim-fail")).to_have_count(1)
            assert errors == []
        finally:
            browser.close()
    assert live_rows(engine) == before


def test_the_timeline_counts_days_from_the_discharge_and_names_who_gets_tasks(
        px: TestClient) -> None:
    """第0天 is the discharge; the day-7 phone task says who gets it (department and role by
    name) and when it is due, as a day and a local time."""
    data = px.post(URL, json={"app": "discharge", "text": FLOW,
                              "scenario": "discharge_day7_phone_70plus"}).json()
    timeline = data["scenarios"][0]["timeline"]
    discharge = next(e for e in timeline if e["type"] == "discharge")
    assert discharge["day"] == 0 and discharge["zh-CN"].startswith("出院")
    day3 = next(e for e in timeline if e["type"] == "message" and e["day"] == 3)
    assert day3["time"] == "09:30"
    [task] = [e["task"] for e in timeline if e.get("task")]
    assert task["title"] == "出院第7天电话随访" and task["priority"]["zh-CN"] == "普通"
    assert task["who"]["zh-CN"] and "_" not in task["who"]["zh-CN"]
    assert "nurse" not in task["who"]["zh-CN"]  # a role's title, never its code
    assert isinstance(task["due_day"], int) and task["due_day"] >= 7


def test_a_failed_expectation_is_said_in_words(px: TestClient) -> None:
    data = px.post(URL, json={"app": "discharge", "text": DAY5, "scenario": SCENARIO}).json()
    [failure] = [f for s in data["scenarios"][0]["steps"] for f in s["failures"]]
    zh, en = failure["words"]["zh-CN"], failure["words"]["en"]
    assert zh == ("第3天 09:31：预期发送消息「出院第3天关怀」 1 条"
                  "（第3天 09:30 至 第3天 09:31 之间），实际 0"), zh
    assert en.startswith("day 3 09:31: expected messages “Day-3 discharge care message” 1"), en
    for text in (zh, en):
        assert "discharge_care_day3" not in text and "T09" not in text and "$." not in text
