"""The flow designer shows a plugin's step type as the server describes it (issue 17): with the
example package's ``phone_robot`` registered, headless Chromium adds it from the palette, sees its
panel with its own option labelled in the type's words, connects its own ``on_no_answer`` edge by
dragging a wire and sees it drawn, and sees the graph check (the step types' ``pauses``) refuse a
loop with no pause in words while a loop through the pausing call is allowed. Fails (never skips)
without Chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from careloop_example import phone_robot  # type: ignore[import-not-found]
from playwright.sync_api import Locator, Page, expect, sync_playwright

from careloop.engine import schema as engine_schema
from careloop.engine.registry import loaded_registry

from .conftest import ARGS, CHROMIUM, make_user, signed_in

KEY = "robot_followup"


def _clear_schemas() -> None:
    engine_schema.kind_schema.cache_clear()
    engine_schema._validator.cache_clear()  # the flow schema's step-type enum


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    """The example step type registered as its entry point would (the package may be installed
    already: then it is left alone), removed after the test when the test added it."""
    steps = loaded_registry().catalogue("step_type")
    added = phone_robot.NAME not in steps
    if added:
        phone_robot.register(loaded_registry())
    _clear_schemas()
    yield
    if added:
        steps.unregister(phone_robot.NAME)
        _clear_schemas()


def _box(page: Page, key: str) -> Locator:
    return page.locator(f'#b-diagram-svg g.fd-node[data-key="{key}"]')


def _edge(page: Page, source: str, target: str, slot: str) -> Locator:
    return page.locator(f'#b-diagram-svg g.fd-edge[data-from="{source}"][data-to="{target}"]'
                        f'[data-slot="{slot}"]')


def _centre(node: Locator) -> tuple[float, float]:
    """The node's centre; a re-render (a draft save coming back) may replace it while it is
    measured, so it is measured again (a bounded number of times)."""
    for _ in range(20):
        expect(node).to_be_visible()
        box = node.bounding_box()
        if box is not None:
            return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    raise AssertionError(f"{node} has no box")


def _step_json(page: Page) -> dict[str, object]:
    value: dict[str, object] = json.loads(
        page.locator('#b-step-props [data-prop="json"]').input_value())
    return value


def test_the_phone_robot_step_from_the_palette_to_its_checked_edges(server: str) -> None:
    make_user("px_r", "px_office")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_r")
            page.goto(f"{server}/builder/edit/flow/{KEY}?app=obstetrics")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()

            # the palette offers the plugin's step by its title; a click adds and selects it
            button = page.locator('#b-step-palette button[data-type="phone_robot"]')
            expect(button).to_have_text("机器人电话")
            button.click()
            expect(_box(page, "phone_robot_1")).to_have_class("fd-node selected")
            expect(_box(page, "phone_robot_1").locator(".fd-type")).to_have_text("☎ 机器人电话")

            # its panel: the type's own options, labelled in its own words
            panel = page.locator("#b-step-props")
            expect(panel.locator(".b-step-head strong")).to_have_text("机器人电话")
            script = panel.locator('input[data-prop="script"]')
            script_label = panel.locator('label:has(input[data-prop="script"])')
            expect(script_label).to_contain_text("话术脚本 *")
            expect(script_label).to_have_attribute(
                "title", "机器人服务中的脚本名")
            attempts = panel.locator('input[data-prop="max_attempts"]')
            expect(attempts).to_have_attribute("max", "5")
            expect(panel.locator('label:has(input[data-prop="max_attempts"])')).to_contain_text("最多拨打次数")
            no_answer = panel.locator('select[data-prop="on_no_answer"]')
            expect(panel.locator('label:has(select[data-prop="on_no_answer"])')).to_contain_text("未接通时")
            script.fill("postop_day3")
            script.press("Tab")
            expect(panel).not_to_contain_text("flow.missing-field")

            # a nurse's call task after it
            page.locator('#b-step-palette button[data-type="create_task"]').click()
            expect(_box(page, "create_task_1")).to_be_visible()
            # the robot's next falls to the step after it: drawn without a label
            expect(_edge(page, "phone_robot_1", "create_task_1", "next")).to_have_count(1)

            # the draft save came back (the new task lacks its title and assignee): the diagram
            # is not redrawn under the pointer
            expect(_box(page, "create_task_1")).to_have_attribute(
                "data-problems", re.compile("flow.missing-field"))
            # drag a wire from the robot's port onto the task: it has two edges, so the author
            # picks one (in words), and the on_no_answer edge is drawn with its label
            port = _box(page, "phone_robot_1").locator("circle.fd-port")
            x1, y1 = _centre(port)
            x2, y2 = _centre(_box(page, "create_task_1"))
            page.mouse.move(x1, y1)
            page.mouse.down()
            page.mouse.move((x1 + x2) / 2, (y1 + y2) / 2, steps=6)
            page.mouse.move(x2, y2, steps=6)
            page.mouse.up()
            slot = page.locator("#b-diagram-slot")
            expect(slot).to_be_visible()
            expect(slot.locator('option[value="on_no_answer"]')).to_have_text("未接通")
            page.select_option("#b-diagram-slot", "on_no_answer")
            page.click("#b-diagram-apply")
            edge = _edge(page, "phone_robot_1", "create_task_1", "on_no_answer")
            expect(edge).to_have_count(1)
            expect(edge.locator("text.fd-edge-label")).to_have_text("未接通")
            expect(edge.locator("path")).to_have_attribute("marker-end", "url(#fd-arrow)")
            _box(page, "phone_robot_1").click()
            assert _step_json(page)["on_no_answer"] == "create_task_1"
            expect(no_answer).to_have_value("create_task_1")

            # the graph check: the task onto itself is a loop in which nothing pauses: refused,
            # in words, and nothing changes
            page.click("#b-diagram-connect")
            _box(page, "create_task_1").click()
            _box(page, "create_task_1").click()
            hint = page.locator("#b-diagram-hint")
            expect(hint).to_have_class("fd-refused")
            expect(hint).to_be_visible()
            expect(hint).to_contain_text("没有连接：「创建任务」会连成一个圈")
            expect(hint).to_contain_text("没有等待、问卷或审批")
            expect(_edge(page, "create_task_1", "create_task_1", "next")).to_have_count(0)
            _box(page, "create_task_1").click()
            assert "next" not in _step_json(page)

            # … while a loop back through the robot's call (it pauses: the server says so) is made
            page.click("#b-diagram-connect")
            expect(hint).not_to_have_class("fd-refused")
            _box(page, "create_task_1").click()
            _box(page, "phone_robot_1").click()
            expect(_edge(page, "create_task_1", "phone_robot_1", "next")).to_have_count(1)
            expect(page.locator("#b-problems")).not_to_contain_text("flow.loop-without-wait")
            assert errors == []
        finally:
            browser.close()
