"""The flow designer's generated step panel and the diagram's pointer gestures.

API: ``GET /api/v1/builder/step-types`` describes every registered step type (title, option
schemas from flows/schema/flow.json, what the compiler requires — checked against what the
compiler actually reports), a plugin's step type included; ``GET
/api/v1/builder/definitions/{kind}`` lists stored definitions. Browser (Debian's
/usr/bin/chromium through Playwright; fails, never skips, without it): build "wait 3 days →
send a form" without the JSON textarea, see a missing required field at its input, connect boxes
by dragging from a port, move a box by dragging, undo, publish, and check the stored flow."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Locator, Page, expect, sync_playwright
from sqlalchemy import Engine

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry
from careloop.flows.compiler import required_of
from careloop.flows.step_types import StepType

from .conftest import ARGS, CHROMIUM, login, make_user, signed_in

KEY = "panel_followup"


@pytest.fixture
def px(client: TestClient, apps: list[str]) -> TestClient:
    make_user("px_s", "px_office")
    login(client, "px_s")
    return client


def _missing(px: TestClient, step_type: str) -> set[tuple[str, ...]]:
    """What the compiler reports missing for a bare step of ``step_type`` (each problem as the
    tuple of names its message quotes: one name, or the alternatives of a "one of")."""
    body = {"kind": "flow", "key": "bare_step", "title": {"zh-CN": "空步骤", "en": "Bare step"},
            "trigger": {"manual": True},
            "steps": [{"key": "a", "type": step_type}, {"key": "z", "type": "end"}]}
    checked = px.post("/api/v1/builder/validate/flow/bare_step", json={"body": body}).json()
    return {tuple(re.findall(r"'([a-z_]+)'", p["message"].split("needs", 1)[1]))
            for p in checked["problems"]
            if p["code"] == "flow.missing-field" and p["path"] == "$.steps[0].type"}


def test_step_types_describe_every_registered_type(px: TestClient) -> None:
    palette = px.get("/api/v1/builder/step-types").json()
    by_name = {t["name"]: t for t in palette}
    assert set(by_name) == set(loaded_registry().catalogue("step_type").names())
    for name, entry in by_name.items():
        assert set(entry["title"]) == {"zh-CN", "en"} and all(entry["title"].values()), name
        assert entry["options"], name
        for option, schema in entry["options"].items():
            # every option has a schema, its $refs resolved (no "$ref" left anywhere)
            assert isinstance(schema, dict) and schema, (name, option)
            assert "$ref" not in str(schema), (name, option)
        # every required property is one the panel offers an input for
        for need in entry["required"]:
            for option in need if isinstance(need, list) else [need]:
                assert option in entry["options"], (name, option)
        # … and exactly what the compiler reports for a bare step of this type
        expected = {tuple(n) if isinstance(n, list) else (n,) for n in entry["required"]}
        assert _missing(px, name) == expected, name

    assert by_name["send_form"]["required"] == ["form", "template"]
    assert by_name["wait"]["required"] == [["duration", "until", "event"]]
    assert by_name["end"]["required"] == []
    wait = by_name["wait"]["options"]
    assert wait["duration"]["x-def"] == "duration"
    assert wait["duration"]["pattern"] == "^[0-9]+(m|h|d|w)$"
    assert wait["until"]["properties"]["days"]["type"] == "integer"
    assert wait["until"]["properties"]["base"]["x-def"] == "expression"
    channels = by_name["send_form"]["options"]["channels"]["items"]["enum"]
    assert channels == sorted(loaded_registry().catalogue("channel").names())
    role = by_name["create_task"]["options"]["assignee"]["properties"]["role"]
    assert role["enum"] == sorted(loaded_registry().catalogue("role").names())
    assert by_name["send_form"]["options"]["title"]["x-def"] == "text"
    assert "key" not in by_name["send_form"]["options"]
    assert list(by_name["decision"]["options"])[:2] == ["title", "when"]
    # the graph comes from the server: edges, modes, pausing (no rule written again in JS)
    assert [e["option"] for e in by_name["wait"]["edges"]] == ["next", "on_timeout"]
    assert by_name["wait"]["modes"] == ["duration", "until", "event"]
    assert by_name["wait"]["pauses"] and not by_name["set"]["pauses"]
    assert by_name["parallel"]["forks"] and by_name["end"]["edges"] == []
    decision = {e["option"]: e for e in by_name["decision"]["edges"]}
    assert decision["cases"]["item"] == "next" and decision["else"]["mode"] == "if"
    assert by_name["send_form"]["options"]["template"]["x-reference"] == "template"
    assert wait["until"]["properties"]["calendar"]["x-reference"] == "calendar"
    assert "url" not in wait and "branches" not in wait  # each type lists only its own options


class _HisLookup(StepType):
    """A plugin's step type: it declares its own title, options and requirement."""

    name = "his_lookup"
    title: ClassVar[dict[str, str]] = {"zh-CN": "查询 HIS", "en": "Look up the HIS"}
    options: ClassVar[dict[str, Any]] = {"url": {"type": "string", "pattern": "^https?://"}}
    required = ("url",)

    def run(self, x: Any) -> Any:
        return ("next", None)


def test_a_plugin_step_type_gets_a_panel_and_its_requirement(
        px: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = loaded_registry().catalogue("step_type")
    monkeypatch.setitem(steps._items, "his_lookup", _HisLookup())
    assert required_of("his_lookup") == ("url",)
    assert required_of("no_such_type") == ()
    entry = next(t for t in px.get("/api/v1/builder/step-types").json()
                 if t["name"] == "his_lookup")
    assert entry["title"]["zh-CN"] == "查询 HIS"
    assert list(entry["options"]) == ["title", "when", "url", "next", "retry"]
    assert entry["options"]["url"]["pattern"] == "^https?://"
    assert entry["required"] == ["url"]
    assert [e["option"] for e in entry["edges"]] == ["next"] and entry["pauses"] is False


def test_definition_lists(px: TestClient) -> None:
    forms = px.get("/api/v1/builder/definitions/form").json()
    assert "postpartum_42d" in [f["key"] for f in forms]
    assert all(set(f) == {"key", "title", "app"} for f in forms)
    templates = [t["key"] for t in px.get("/api/v1/builder/definitions/template").json()]
    assert "survey_invitation" in templates and "postpartum_42d" not in templates
    assert px.get("/api/v1/builder/definitions/nonsense").status_code == 404


def test_step_types_need_builder_permission(client: TestClient, apps: list[str]) -> None:
    make_user("nurse_s", "nurse")
    login(client, "nurse_s")
    assert client.get("/api/v1/builder/step-types").status_code == 403
    assert client.get("/api/v1/builder/definitions/form").status_code == 403


# --- the browser --------------------------------------------------------------------------------


def _box(page: Page, key: str) -> Locator:
    return page.locator(f'#b-diagram-svg g.fd-node[data-key="{key}"]')


def _prop(page: Page, prop: str) -> Locator:
    """An input of the step panel; the step's "Advanced" disclosure (key, expressions, JSON) is
    opened first, as an author who wants them would."""
    page.evaluate("document.querySelectorAll('#b-step-props details.b-advanced')"
                  ".forEach(d => { if (!d.open) d.open = true; })")
    return page.locator(f'#b-step-props [data-prop="{prop}"]')


def _centre(locator: Locator) -> tuple[float, float]:
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _drag(page: Page, source: Locator, target: Locator) -> None:
    x1, y1 = _centre(source)
    x2, y2 = _centre(target)
    page.mouse.move(x1, y1)
    page.mouse.down()
    page.mouse.move((x1 + x2) / 2, (y1 + y2) / 2, steps=6)
    page.mouse.move(x2, y2, steps=6)
    page.mouse.up()


def _order(page: Page) -> list[str]:
    keys: list[str] = page.locator("#b-steps li.b-card").evaluate_all(
        "cards => cards.map(c => c.dataset.key)")
    return keys


def test_build_a_flow_with_the_panel_and_gestures(server: str, engine: Engine) -> None:
    make_user("px_p", "px_office")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_p")
            page.goto(f"{server}/builder/edit/flow/{KEY}?app=obstetrics")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            # the palette shows the step types' titles
            expect(page.locator('#b-step-palette button[data-type="send_form"]')).to_have_text(
                "发送问卷")

            # wait: the duration is an amount and a unit (天, 小时…), never "1d"
            page.click('#b-step-palette button[data-type="wait"]')
            expect(_prop(page, "key")).to_have_value("wait_1")
            expect(_prop(page, "duration")).to_have_value("1")
            expect(_prop(page, "duration.unit")).to_have_value("d")
            expect(_prop(page, "duration.unit").locator("option:checked")).to_have_text("天")
            # one mode at a time (duration, until or event), chosen with a picker
            expect(_prop(page, "mode-picker")).to_have_value("duration")
            expect(_prop(page, "until.days")).to_have_count(0)
            expect(_prop(page, "event")).to_have_count(0)
            _prop(page, "duration.unit").select_option(label="小时")
            expect(_prop(page, "json")).to_have_value(re.compile('"duration": "1h"'))
            _prop(page, "duration.unit").select_option(label="天")
            _prop(page, "duration").fill("3")
            _prop(page, "duration").press("Enter")
            expect(_box(page, "wait_1").locator(".fd-delay")).to_have_text("⏱ 3 天")
            assert '"duration": "3d"' in _prop(page, "json").input_value()

            # send_form: what it needs is flagged at its inputs until chosen from the lists
            page.click('#b-step-palette button[data-type="send_form"]')
            expect(_prop(page, "key")).to_have_value("send_form_1")
            form_error = page.locator('#b-step-props [data-problem-for="form"]')
            expect(form_error).to_have_attribute("data-code", "flow.missing-field")
            expect(_prop(page, "form")).to_have_class(re.compile(r"\bhas-error\b"))
            expect(page.locator('#b-step-props [data-problem-for="template"]')).to_have_attribute(
                "data-code", "flow.missing-field")
            # forms and templates by their titles, channels by their names
            expect(_prop(page, "form").locator('option[value="postpartum_42d"]')).to_have_text(
                "产后42天随访")
            wechat = page.locator('#b-step-props label:has([data-prop="channels.wechat"])')
            expect(wechat).to_have_text("微信")
            _prop(page, "form").select_option("postpartum_42d")
            expect(form_error).to_have_count(0)
            expect(page.locator('#b-step-props [data-problem-for="template"]')).to_have_count(1)
            _prop(page, "template").select_option("survey_invitation")
            _prop(page, "channels.wechat").check()
            expect(_prop(page, "channels.wechat")).to_be_checked()
            # a step reference is a select of the draft's steps, by number and words
            expect(_prop(page, "on_timeout").locator("option[value='wait_1']")).to_have_text(
                "第1步 等待")
            page.click('#b-step-palette button[data-type="end"]')
            expect(page.locator("#b-problems li.ok")).to_be_visible()
            assert _order(page) == ["wait_1", "send_form_1", "end_1"]

            # drag from wait_1's port onto send_form_1: a wait has two exits, so choose one
            _drag(page, _box(page, "wait_1").locator("circle.fd-port"), _box(page, "send_form_1"))
            expect(page.locator("#b-diagram-slot")).to_be_visible()
            expect(page.locator("#b-diagram-hint")).to_contain_text("发送问卷：产后42天随访")
            page.select_option("#b-diagram-slot", "next")
            page.click("#b-diagram-apply")
            edge = page.locator('#b-diagram-svg g.fd-edge[data-from="wait_1"]'
                                '[data-to="send_form_1"][data-slot="next"]')
            expect(edge).to_have_count(1)
            _box(page, "wait_1").click()
            expect(_prop(page, "next")).to_have_value("send_form_1")

            # a wire that is let go of with Escape changes nothing
            port = _box(page, "send_form_1").locator("circle.fd-port")
            x, y = _centre(port)
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 40, y + 50, steps=5)
            expect(page.locator("#fd-rubber")).to_have_count(1)      # the rubber band
            page.keyboard.press("Escape")
            expect(page.locator("#fd-rubber")).to_have_count(0)
            page.mouse.up()
            expect(page.locator('#b-diagram-svg g.fd-edge[data-from="send_form_1"]'
                                '[data-slot="on_timeout"]')).to_have_count(0)
            # send_form_1's timeout goes to end_1
            _drag(page, port, _box(page, "end_1"))
            page.select_option("#b-diagram-slot", "on_timeout")
            page.click("#b-diagram-apply")
            expect(page.locator('#b-diagram-svg g.fd-edge[data-from="send_form_1"]'
                                '[data-to="end_1"][data-slot="on_timeout"]')).to_have_count(1)

            # drag the end box onto wait_1: it moves before it in the step list; undo
            _drag(page, _box(page, "end_1").locator("rect"), _box(page, "wait_1"))
            expect(page.locator("#b-steps li.b-card").first).to_have_attribute(
                "data-key", "end_1")
            assert _order(page) == ["end_1", "wait_1", "send_form_1"]
            expect(_box(page, "wait_1")).to_have_attribute("data-problems", "flow.unreachable")
            page.click("#b-undo")
            expect(page.locator("#b-steps li.b-card").first).to_have_attribute(
                "data-key", "wait_1")
            assert _order(page) == ["wait_1", "send_form_1", "end_1"]
            expect(page.locator("#b-problems li.ok")).to_be_visible()
            # the JSON textarea was never used, and it shows what the inputs built
            _box(page, "send_form_1").click()
            assert '"on_timeout": "end_1"' in _prop(page, "json").input_value()

            page.click("#b-publish")
            page.click("#b-confirm")
            expect(page.locator("#b-version")).to_have_text("v1")
            assert errors == []
        finally:
            browser.close()

    with transaction(engine) as session:
        flow = store.current(session, "flow", KEY)
        assert flow is not None and flow.app_id == "obstetrics"
        assert flow.body["steps"] == [
            {"key": "wait_1", "type": "wait", "duration": "3d", "next": "send_form_1"},
            {"key": "send_form_1", "type": "send_form", "form": "postpartum_42d",
             "template": "survey_invitation", "channels": ["wechat"], "on_timeout": "end_1"},
            {"key": "end_1", "type": "end"}]


def test_nested_inputs_rows_and_renames(server: str) -> None:
    """Objects, arrays of objects, name → expression maps and step references, through the
    generated inputs only; the JSON view shows what they built."""
    make_user("px_n", "px_office")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_n", locale="en")
            page.goto(f"{server}/builder/edit/flow/nested_followup?app=obstetrics")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()

            def json_of() -> dict[str, Any]:
                import json

                data: dict[str, Any] = json.loads(_prop(page, "json").input_value())
                return data

            # wait until discharge + 2 working days at 09:30 (until is an object)
            page.click('#b-step-palette button[data-type="wait"]')
            # the mode picker swaps the duration for the until inputs (the duration is removed)
            _prop(page, "mode-picker").select_option("until")
            expect(_prop(page, "duration")).to_have_count(0)
            _prop(page, "until.base").fill("encounter.discharged_at")
            _prop(page, "until.base").press("Enter")
            _prop(page, "until.days").fill("2")
            _prop(page, "until.days").press("Enter")
            _prop(page, "until.working_days").check()
            expect(_prop(page, "until.working_days")).to_be_checked()
            assert json_of() == {"until": {"base": "encounter.discharged_at", "days": 2,
                                           "working_days": True}}

            # set: rows of name + expression
            page.click('#b-step-palette button[data-type="set"]')
            expect(page.locator('#b-step-props [data-problem-for="set"]')).to_have_attribute(
                "data-code", "flow.missing-field")
            _prop(page, "set.add").click()
            _prop(page, "set.0.name").fill("score")
            _prop(page, "set.0.name").press("Enter")
            _prop(page, "set.0.expression").fill("1 + 1")
            _prop(page, "set.0.expression").press("Enter")
            _prop(page, "set.add").click()
            expect(_prop(page, "set.1.name")).to_have_value("value_1")
            _prop(page, "set.1.remove").click()
            assert json_of() == {"set": {"score": "1 + 1"}}

            # approval: approver rows with a role select from the role registry
            page.click('#b-step-palette button[data-type="approval"]')
            _prop(page, "approvers.add").click()
            _prop(page, "approvers.0.role").select_option("head_nurse")
            _prop(page, "mode").select_option("all")
            _prop(page, "on_reject").select_option("wait_1")
            assert json_of() == {"approvers": [{"role": "head_nurse"}], "mode": "all",
                                 "on_reject": "wait_1"}

            # decision: cases rows (when + next), then rename a step its targets follow
            page.click('#b-step-palette button[data-type="decision"]')
            _prop(page, "mode-picker").select_option("cases")  # if/then/else or cases
            _prop(page, "cases.add").click()
            _prop(page, "cases.0.when").fill("context.score > 1")
            _prop(page, "cases.0.when").press("Enter")
            _prop(page, "cases.0.next").select_option("approval_1")
            _prop(page, "default").select_option("set_1")
            assert json_of() == {"cases": [{"when": "context.score > 1", "next": "approval_1"}],
                                 "default": "set_1"}
            _box(page, "approval_1").click()
            _prop(page, "key").fill("head_nurse_ok")
            _prop(page, "key").press("Enter")
            _box(page, "decision_1").click()
            expect(_prop(page, "cases.0.next")).to_have_value("head_nurse_ok")
            assert json_of()["cases"][0]["next"] == "head_nurse_ok"
            # schema problems deeper down are shown where they are located: a case without
            # its required 'when' on the case's row, an out-of-range number at its input
            _prop(page, "cases.0.when").fill("")
            _prop(page, "cases.0.when").press("Enter")
            expect(page.locator('#b-step-props [data-problem-for="cases.0"]')).to_contain_text(
                "when")
            _box(page, "wait_1").click()
            expect(page.locator('#b-step-props [data-problem-for="until.days"]')).to_have_count(0)
            _prop(page, "until.days").fill("5000")
            _prop(page, "until.days").press("Enter")
            expect(page.locator('#b-step-props [data-problem-for="until.days"]')).to_have_count(1)
            expect(_prop(page, "until.days")).to_have_class(re.compile(r"\bhas-error\b"))
            assert errors == []
        finally:
            browser.close()
