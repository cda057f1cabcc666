"""The flow designer's diagram in headless Chromium (Debian's /usr/bin/chromium through
Playwright): add a wait and a send_form step through the diagram, connect them, delete a step and
see the problem on a box, undo, publish. Fails (never skips) without Chromium."""

from __future__ import annotations

import json

from playwright.sync_api import Locator, Page, expect, sync_playwright
from sqlalchemy import Engine

from careloop.engine import store
from careloop.engine.db import transaction

from .conftest import ARGS, CHROMIUM, make_user, signed_in

KEY = "diagram_followup"


def _box(page: Page, key: str) -> Locator:
    return page.locator(f'#b-diagram-svg g.fd-node[data-key="{key}"]')


def _set_json(page: Page, value: dict[str, object]) -> None:
    page.evaluate("document.querySelectorAll('#b-step-props details.b-advanced')"
                  ".forEach(d => { if (!d.open) d.open = true; })")   # the JSON: advanced only
    box = page.locator('#b-step-props [data-prop="json"]')
    box.fill(json.dumps(value))
    box.press("Tab")


def _clean(page: Page) -> None:
    expect(page.locator("#b-problems li.ok")).to_be_visible()


def test_build_a_flow_in_the_diagram(server: str, engine: Engine) -> None:
    make_user("px_d", "px_office")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_d")
            page.goto(f"{server}/builder/edit/flow/{KEY}?app=obstetrics")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            expect(page.locator("#b-diagram-svg")).to_be_attached()
            expect(page.locator("#b-diagram-svg g.fd-node")).to_have_count(0)

            # a wait of 3 days, added through the diagram
            page.select_option("#b-diagram-type", "wait")
            page.click("#b-diagram-add")
            expect(_box(page, "wait_1")).to_be_visible()
            _set_json(page, {"duration": "3d"})
            expect(_box(page, "wait_1").locator(".fd-delay")).to_have_text("⏱ 3 天")
            # … then a send_form after the selected wait
            _box(page, "wait_1").click()
            expect(_box(page, "wait_1")).to_have_class("fd-node selected")
            # the box selects the step in the side panel
            expect(page.locator('#b-step-props [data-prop="key"]')).to_have_value("wait_1")
            page.select_option("#b-diagram-type", "send_form")
            page.click("#b-diagram-add")
            expect(_box(page, "send_form_1")).to_have_class("fd-node selected")
            _set_json(page, {"form": "postpartum_42d", "template": "survey_invitation",
                             "channels": ["wechat"]})
            _clean(page)
            # top to bottom: the send_form box is below the wait box
            y_wait = float(_box(page, "wait_1").locator("rect").get_attribute("y") or "nan")
            y_send = float(_box(page, "send_form_1").locator("rect").get_attribute("y") or "nan")
            assert y_send > y_wait

            # connect: source, then target → an explicit next and one arrow between them
            page.click("#b-diagram-connect")
            expect(page.locator("#b-diagram-hint")).to_have_text("请选择起点步骤")
            _box(page, "wait_1").click()
            expect(page.locator("#b-diagram-slot")).to_have_value("next")
            _box(page, "send_form_1").click()
            edge = page.locator('#b-diagram-svg g.fd-edge[data-from="wait_1"]'
                                '[data-to="send_form_1"][data-slot="next"]')
            expect(edge).to_have_count(1)
            expect(edge.locator("path")).to_have_attribute("marker-end", "url(#fd-arrow)")
            _clean(page)
            page.evaluate("document.querySelectorAll('#b-step-props details.b-advanced')"
                          ".forEach(d => { if (!d.open) d.open = true; })")
            assert '"next": "send_form_1"' in page.locator(
                '#b-step-props [data-prop="json"]').input_value()
            expect(page.locator('#b-timeline li[data-step="send_form_1"]')).to_contain_text(
                "第 3 天")

            # delete the send_form step: the wait's next now names a missing step, on its box
            _box(page, "send_form_1").click()
            page.click("#b-diagram-delete")
            expect(_box(page, "send_form_1")).to_have_count(0)
            expect(_box(page, "wait_1")).to_have_class("fd-node has-error")
            expect(_box(page, "wait_1")).to_have_attribute("data-problems", "flow.unknown-step")
            expect(_box(page, "wait_1").locator(".fd-err")).to_have_attribute(
                "data-code", "flow.unknown-step")
            expect(page.locator("#b-diagram-svg g.fd-edge")).to_have_count(0)
            # an unreachable step is flagged on its own box too
            page.click("#b-undo")
            expect(_box(page, "send_form_1")).to_be_visible()
            _clean(page)
            _box(page, "wait_1").click()
            page.select_option("#b-diagram-type", "end")
            page.click("#b-diagram-add")   # wait_1 → end_1 → send_form_1 (explicit next kept)
            expect(page.locator('#b-diagram-svg g.fd-edge[data-from="wait_1"][data-to="end_1"]')
                   ).to_have_count(1)
            page.click("#b-diagram-connect")
            _box(page, "wait_1").click()
            _box(page, "wait_1").click()   # wait_1 → itself: nothing else reaches end_1
            expect(_box(page, "end_1")).to_have_attribute("data-problems", "flow.unreachable")
            page.click("#b-undo")
            page.click("#b-undo")
            expect(_box(page, "end_1")).to_have_count(0)
            expect(edge).to_have_count(1)
            _clean(page)

            page.click("#b-publish")
            page.click("#b-confirm")
            expect(page.locator("#b-version")).to_have_text("v1")
            assert errors == []
        finally:
            browser.close()

    with transaction(engine) as session:
        flow = store.current(session, "flow", KEY)
        assert flow is not None and flow.app_id == "obstetrics"
        assert [(s["key"], s["type"]) for s in flow.body["steps"]] == [
            ("wait_1", "wait"), ("send_form_1", "send_form")]
        assert flow.body["steps"][0] == {"key": "wait_1", "type": "wait", "duration": "3d",
                                         "next": "send_form_1"}
