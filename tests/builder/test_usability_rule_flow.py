"""Usability measured (docs/builder.md, "Usability tasks"): two scripted tasks a department's
staff do in the visual builder, in headless Chromium, ONLY through clicks, pickers and typing
labels. Every fill, key press and typing goes through :class:`Clicks`, which refuses a target in
the YAML text view, an "高级 / Advanced" disclosure (keys, codes, expressions, JSON), an
expression input or any text area (the JSON boxes), and counts each click, field filled, select
and tick as one user action; each task asserts its count stays within its budget.

Task 1: the satisfaction follow-up routing gets the rule "overall ≤ 2 and the comment mentions
用药 → an urgent task for the head nurse due in 4 hours, a copy to the pharmacy", published (a
hospital-wide rule set: a second px_office user approves it); the published version validates and
a journey scenario — a discharged patient answering overall 2 with a comment about 用药 — passes.

Task 2: the PCI follow-up flow moves its third questionnaire from day 90 to day 180, published;
the published waits are days 7, 30 and 180 and the shipped journey scenario, moved to day 180,
passes. Both journeys run through the builder's own "simulate" (the scenario runner on a scratch
database, `careloop.web.simulate`), against the published definitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from playwright.sync_api import Locator, Page, expect, sync_playwright
from sqlalchemy import Engine

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.domain import Department

from .conftest import ARGS, CHROMIUM, ROOT, login, make_user, signed_in

# the budgets: slightly above the measured counts (docs/builder.md, "Usability tasks")
BUDGET_RULE = 24
BUDGET_FLOW = 11

# what a person must never type into: the YAML text view, anything under "高级 / Advanced",
# an expression input, a JSON box (every text area of the builder is the YAML or a JSON box)
FORBIDDEN = """el => !!(el.closest('details.b-advanced') || el.closest('#b-text-advanced')
  || el.matches('textarea, .b-expression, #b-yaml'))"""


class Typed(AssertionError):
    """The script typed into a YAML, JSON or expression box."""


class Clicks:
    """The only way the tasks touch the page: counts user actions, refuses code boxes."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.count = 0
        self.log: list[str] = []

    def _guard(self, target: Locator, what: str) -> Locator:
        if target.evaluate(FORBIDDEN):
            raise Typed(f"{what}: {target} is a YAML, JSON or expression box")
        return target

    def _did(self, what: str) -> None:
        self.count += 1
        self.log.append(what)

    def click(self, target: Locator, what: str) -> None:
        target.click()
        self._did(f"click {what}")

    def fill(self, target: Locator, value: str, what: str) -> None:
        """Type a label or a number into a field and leave it (Tab commits): one action."""
        self._guard(target, what).fill(value)
        target.press("Tab")
        self._did(f"fill {what} = {value}")

    def type(self, target: Locator, value: str, what: str) -> None:
        self._guard(target, what).press_sequentially(value)
        self._did(f"type {what} = {value}")

    def press(self, target: Locator, key: str, what: str) -> None:
        self._guard(target, what).press(key)
        self._did(f"press {what} {key}")

    def select(self, target: Locator, label: str, what: str) -> None:
        """Pick an option by the words it shows (never by its code)."""
        self._guard(target, what).select_option(label=label)
        self._did(f"select {what} = {label}")


def _ready(page: Page) -> None:
    expect(page.locator("#builder[data-ready='1']")).to_be_attached()


def _open(u: Clicks, search: str, title: str) -> None:
    """From the builder home: search by words, open the definition by its title."""
    u.type(u.page.locator("#builder-search"), search, "search")
    row = u.page.locator("section.builder-app tr:visible").filter(
        has=u.page.get_by_role("cell", name=title, exact=True))
    u.click(row.get_by_role("link").first, title)
    _ready(u.page)


def _publish(u: Clicks) -> None:
    expect(u.page.locator("#b-problems li.ok")).to_be_visible()
    u.click(u.page.locator("#b-publish"), "publish")
    expect(u.page.locator("#b-publish-dialog")).to_be_visible()
    u.click(u.page.locator("#b-confirm"), "confirm publish")


def _simulate(client: TestClient, kind: str, key: str, app: str,
              scenario_key: str, scenario: str) -> dict[str, Any]:
    """Draft ``scenario`` in ``app`` and run it through the builder's simulate against the
    published definitions (the draft of ``kind/key`` sent is the published body itself)."""
    saved = client.put(f"/api/v1/builder/drafts/scenario/{scenario_key}",
                       json={"app": app, "text": scenario})
    assert saved.status_code == 200 and not saved.json()["problems"], saved.text
    published = client.get(f"/api/v1/builder/drafts/{kind}/{key}").json()
    assert not published["has_draft"]
    run = client.post(f"/api/v1/builder/simulate/{kind}/{key}",
                      json={"app": app, "body": published["body"], "scenario": scenario_key})
    assert run.status_code == 200, run.text
    result: dict[str, Any] = run.json()
    assert result["ok"], [s for s in result["scenarios"] if not s["ok"]] or result["problems"]
    assert [(s["scenario"], s["ok"]) for s in result["scenarios"]] == [(scenario_key, True)]
    return result


def _valid_current(client: TestClient, kind: str, key: str) -> dict[str, Any]:
    """The published version, checked again by the validator ``careloop validate`` uses."""
    with transaction() as session:
        row = store.current(session, kind, key)
        assert row is not None
        version = row.version
    draft = client.get(f"/api/v1/builder/drafts/{kind}/{key}").json()
    assert draft["current_version"] == version and not draft["has_draft"]
    checked = client.post(f"/api/v1/builder/validate/{kind}/{key}",
                          json={"body": draft["body"]}).json()
    assert checked["ok"] and not checked["problems"], checked["problems"]
    body: dict[str, Any] = draft["body"]
    return body


RULE_TITLE = "不满意且提到用药"
TASK_TITLE = "不满意且反映用药问题：请4小时内回访"
CC_TITLE = "抄送：患者不满意并反映用药问题"

MEDICATION_JOURNEY = f"""kind: scenario
key: usability_medication_dissatisfied
title: {{zh-CN: 不满意且提到用药的回访, en: Dissatisfied about medication}}
start: "2026-12-01T10:05:00+08:00"
steps:
  - setup:
      departments:
        - {{id: cardiology, name: {{zh-CN: 心内科, en: Cardiology}}}}
        - {{id: pharmacy, name: {{zh-CN: 药剂科, en: Pharmacy}}}}
      users:
        - {{username: hn_cardiology, display_name: 王护士长, role: head_nurse,
           department: cardiology}}
        - {{username: pharmacy_head, display_name: 陈主任, role: pharmacy_head,
           department: pharmacy}}
  - his:
      - type: patient.upserted
        payload: {{patient_id: P1, mrn: MRN-P1, name: 王建国, gender: male,
                  birth_date: "1958-04-02", phone: "13800000001", locale: zh-CN}}
      - type: encounter.discharged
        payload: {{encounter_id: E1, patient_id: P1, type: inpatient, department_id: cardiology,
                  discharged_at: "2026-12-01T10:00:00+08:00", diagnoses: [I10]}}
  - travel: {{to: "2026-12-04T09:31:00+08:00"}}
  - patient_opens_link: {{patient: P1, form: discharge_day3}}
  - travel: {{to: "2026-12-04T11:00:00+08:00"}}
  - answer:
      recovery: good
      medication_clear: "yes"
      overall: 2
      comment: 出院后用药时间记不清，希望再讲一次
    expect:
      - tasks: {{role: head_nurse, department: cardiology, priority: urgent, status: open,
                title_contains: "{TASK_TITLE}", due_after: "2026-12-04T15:00",
                due_before: "2026-12-04T15:01", count: 1}}
      - inbox: {{of: hn_cardiology, priority: urgent, title_contains: "{TASK_TITLE}", count: 1}}
      - tasks: {{kind: cc, role: pharmacy_head, department: pharmacy, title_contains: "{CC_TITLE}",
                count: 1}}
      - inbox: {{of: pharmacy_head, kind: cc, title_contains: "{CC_TITLE}", count: 1}}
  - note: overall 2 without a word about medication — no urgent 4-hour task, no copy
    his:
      - type: patient.upserted
        payload: {{patient_id: P2, mrn: MRN-P2, name: 李四, gender: male, birth_date: "1960-01-01",
                  phone: "13800000002", locale: zh-CN}}
      - type: encounter.discharged
        payload: {{encounter_id: E2, patient_id: P2, type: inpatient, department_id: cardiology,
                  discharged_at: "2026-12-04T11:00:00+08:00", diagnoses: [I10]}}
  - travel: {{to: "2026-12-07T09:31:00+08:00"}}
  - patient_opens_link: {{patient: P2, form: discharge_day3}}
  - answer:
      recovery: good
      medication_clear: "yes"
      overall: 2
      comment: 病房太吵
    expect:
      - tasks: {{patient: P2, title_contains: "{TASK_TITLE}", count: 0}}
      - tasks: {{patient: P2, title_contains: "{CC_TITLE}", count: 0}}
"""


def test_task1_add_a_medication_rule_by_clicks(server: str, engine: Engine,
                                               client: TestClient) -> None:
    with transaction(engine) as session:
        session.add(Department(id="pharmacy", name={"zh-CN": "药剂科", "en": "Pharmacy"}))
    make_user("px_a", "px_office")
    make_user("px_b", "px_office")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_a")
            u = Clicks(page)
            _open(u, "分流", "满意度回访分流")
            u.click(page.locator("#b-add-rule"), "add a rule")
            row = page.locator("#b-rules tbody tr").last
            u.fill(row.locator('[data-rule$=".title.zh-CN"]'), RULE_TITLE, "rule title")
            n = page.locator("#b-rules tbody tr").count() - 1
            # the condition, by pickers: 总体满意度 ≤ 2 且 意见 提到 用药
            u.select(row.locator(f'[data-rule="{n}.field"]'), "您对本次住院的总体满意度如何？",
                     "field")
            u.select(row.locator(f'[data-rule="{n}.op"]'), "小于等于", "operator")
            u.fill(row.locator(f'[data-rule="{n}.value"]'), "2", "value")
            u.click(row.locator(f'[data-rule="{n}.add"]'), "add a clause")
            comment = row.locator(f'[data-rule="{n}.1.field"] option', has_text="意见").first
            u.select(row.locator(f'[data-rule="{n}.1.field"]'), comment.inner_text(), "field 2")
            u.fill(row.locator(f'[data-rule="{n}.1.value"]'), "用药", "mentions")
            u.click(row.locator(f'[data-rule="{n}.set"]'), "apply the condition")
            expect(row.locator(".b-sentence")).to_contain_text("≤ 2")
            expect(row.locator(".b-sentence")).to_contain_text("提到 “用药”")
            # the urgent task for the head nurse, due in 4 hours
            u.select(row.locator(f'[data-rule="{n}.add-action"]'), "创建待办", "add an action")
            u.fill(row.locator(f'[data-act="{n}.0.title.zh-CN"]'), TASK_TITLE, "task title")
            u.select(row.locator(f'[data-act="{n}.0.assignee.role"]'), "护士长", "assignee")
            u.select(row.locator(f'[data-act="{n}.0.priority"]'), "紧急", "priority")
            expect(row.locator(f'[data-act="{n}.0.due.unit"]')).to_have_value("hours")  # 小时
            u.fill(row.locator(f'[data-act="{n}.0.due"]'), "4", "due")
            # a copy to the pharmacy
            u.select(row.locator(f'[data-rule="{n}.add-action"]'), "抄送", "add an action")
            u.select(row.locator(f'[data-act="{n}.1.role"]'), "药剂科主任", "copy to")
            u.select(row.locator(f'[data-act="{n}.1.department"]'), "药剂科", "department")
            u.fill(row.locator(f'[data-act="{n}.1.title.zh-CN"]'), CC_TITLE, "copy title")
            expect(row.locator(".b-actions li")).to_have_count(2)
            _publish(u)
            # a rule set of a hospital-wide app waits for a second person's approval
            expect(page.locator("#b-status")).to_contain_text("等待审批")
            measured = u.count
            assert measured <= BUDGET_RULE, u.log
            assert not errors, errors
        finally:
            browser.close()
    print(f"\ntask 1: {measured} user actions (budget {BUDGET_RULE}):\n  " + "\n  ".join(u.log))

    login(client, "px_b")
    tasks = client.get("/api/v1/tasks", params={"view": "mine"}).json()
    items = tasks["items"] if isinstance(tasks, dict) else tasks
    approval = [t for t in items if t.get("kind") == "publish_approval"]
    assert approval, items
    decided = client.post(f"/api/v1/tasks/{approval[-1]['id']}/decision",
                          json={"decision": "approve"})
    assert decided.status_code == 200, decided.text

    body = _valid_current(client, "ruleset", "followup_routing")
    rule = body["rules"][-1]
    assert rule["title"]["zh-CN"] == RULE_TITLE and rule["key"] == "rule_1"
    assert rule["when"] == "answers.overall <= 2 and contains(answers.comment, '用药')"
    assert rule["then"] == [
        {"do": "create_task", "title": {"zh-CN": TASK_TITLE, "en": TASK_TITLE},
         "assignee": {"role": "head_nurse"}, "priority": "urgent", "due": {"hours": 4}},
        {"do": "cc", "role": "pharmacy_head", "department": "pharmacy",
         "title": {"zh-CN": CC_TITLE, "en": CC_TITLE}}]
    # the rules that were there are untouched
    assert [r["key"] for r in body["rules"]] == ["dissatisfied", "medication_guidance",
                                                 "satisfied", "rule_1"]
    _simulate(client, "ruleset", "followup_routing", "satisfaction",
              "usability_medication_dissatisfied", MEDICATION_JOURNEY)


def _journey_180() -> str:
    """The shipped PCI journey with its third questionnaire on day 180 (30 May) instead of
    day 90 (1 March): the same steps, later dates, the phone task of day 180."""
    text = (ROOT / "app_definitions" / "cardiology" / "scenarios"
            / "pci_followup_days_7_30.yaml").read_text("utf-8")
    for old, new in (("key: pci_followup_days_7_30", "key: pci_followup_days_7_30_180"),
                     ("第7、30、90天", "第7、30、180天"),
                     ("days 7, 30 and 90", "days 7, 30 and 180"),
                     ("2027-03-01", "2027-05-30"), ("2027-03-03", "2027-06-01"),
                     ("2027-03-05", "2027-06-03"), ("2027-03-06", "2027-06-04"),
                     ("day 90 (1 March)", "day 180 (30 May)"), ("第90天", "第180天")):
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_task2_move_the_pci_follow_up_to_day_180_by_clicks(server: str, engine: Engine,
                                                           client: TestClient) -> None:
    make_user("px_a", "px_office")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_a")
            u = Clicks(page)
            _open(u, "支架", "冠脉支架术后随访")
            # the timeline reads day 7, 30, 90; the fifth step waits until day 90
            expect(page.locator("#b-timeline")).to_contain_text("第 90 天")
            u.click(page.locator("#b-steps li.b-card").nth(4), "the day-90 wait")
            u.fill(page.locator('#b-step-props [data-prop="until.days"]'), "180", "days")
            expect(page.locator("#b-timeline")).to_contain_text("第 180 天")
            # the phone task of that questionnaire says so
            u.click(page.locator("#b-steps li.b-card").nth(8), "the day-90 phone task")
            u.fill(page.locator('#b-step-props [data-prop="task_title.zh-CN"]'),
                   "支架术后第180天问卷未填写，请电话随访", "task title")
            u.fill(page.locator('#b-step-props [data-prop="task_title.en"]'),
                   "Day-180 stent form unanswered — phone the patient", "task title (en)")
            _publish(u)
            expect(page.locator("#b-status")).to_contain_text("已发布")
            measured = u.count
            assert measured <= BUDGET_FLOW, u.log
            assert not errors, errors
        finally:
            browser.close()
    print(f"\ntask 2: {measured} user actions (budget {BUDGET_FLOW}):\n  " + "\n  ".join(u.log))

    login(client, "px_a")
    body = _valid_current(client, "flow", "pci_followup")
    waits = [s for s in body["steps"] if s["type"] == "wait"]
    assert [w["until"]["days"] for w in waits] == [7, 30, 180]
    assert all(w["until"]["at"] == "09:30" for w in waits)
    _simulate(client, "flow", "pci_followup", "cardiology", "pci_followup_days_7_30_180",
              _journey_180())


def test_the_guard_refuses_code_boxes(server: str) -> None:
    """The tasks' proof is only as good as the guard: typing into the YAML text view, an
    expression under "高级" or an action's JSON raises."""
    make_user("px_a", "px_office")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, _ = signed_in(browser, server, "px_a")
            page.goto(f"{server}/builder/edit/ruleset/followup_routing?app=satisfaction")
            _ready(page)
            u = Clicks(page)
            page.locator("#b-text-advanced").evaluate("d => { d.open = true; }")
            attempts: list[Callable[[], None]] = [
                lambda: u.fill(page.locator("#b-yaml"), "kind: ruleset", "yaml"),
                lambda: u.type(page.locator('[data-rule="0.expression"]'), "true", "expression"),
                lambda: u.press(page.locator("#b-sample"), "a", "sample event"),
            ]
            for attempt in attempts:
                try:
                    attempt()
                except Typed:
                    continue
                raise AssertionError("the guard let a code box through")
            page.locator('[data-rule="0.edit"]').click()
            page.locator('[data-advanced="action:0.0"]').evaluate("d => { d.open = true; }")
            try:
                u.fill(page.locator('[data-act="0.0.json"]'), "{}", "action JSON")
            except Typed:
                pass
            else:
                raise AssertionError("the guard let the action JSON through")
            assert u.count == 0
        finally:
            browser.close()


def test_action_types_serve_their_panels_in_words(client: TestClient, apps: list[str]) -> None:
    """The panel of an action is generated from what the server says of its type: a task's
    title as two languages, the assignee's role by title, the due time as hours or working
    days, the stored departments by name; administrative roles are never offered."""
    with transaction() as session:
        session.add(Department(id="pharmacy", name={"zh-CN": "药剂科", "en": "Pharmacy"}))
    make_user("px_a", "px_office")
    login(client, "px_a")
    types = {t["name"]: t for t in client.get("/api/v1/builder/action-types").json()}
    task, cc = types["create_task"], types["cc"]
    assert task["required"] == ["title", "assignee"] and cc["required"] == ["role"]
    assert task["options"]["title"]["x-def"] == "text"
    assert task["options"]["due"]["x-def"] == "due" == cc["options"]["due"]["x-def"]
    role = task["options"]["assignee"]["properties"]["role"]
    assert role["x-enum-labels"]["head_nurse"] == {"zh-CN": "护士长", "en": "Head nurse"}
    assert "system_admin" not in role["enum"]
    assert "system_admin" not in cc["options"]["role"]["enum"]
    assert cc["options"]["department"]["x-enum-labels"] == {
        "pharmacy": {"zh-CN": "药剂科", "en": "Pharmacy"}}
    assert task["options"]["priority"]["x-enum-labels"]["urgent"]["zh-CN"] == "紧急"
    assert cc["options"]["via"]["x-enum-labels"]["notification"]["zh-CN"] == "消息通知"
    assert cc["options"]["template"]["x-reference"] == "template"
