"""In Chromium: the rule editor's "try it" on a picked real submission, each rule explained in
words, and "simulate" showing the patient's timeline by day and who gets which task — no
definition key, type code, expression or raw ISO timestamp anywhere outside "高级"."""

from __future__ import annotations

import re

from sqlalchemy import Engine

from .conftest import make_user
from .test_tryit import overall_label, seed_submissions

SCENARIO = "discharge_dissatisfied_closed_loop"
# what a person must never read outside the advanced views
CODES = re.compile(
    r"\b(?:dissatisfied|medication_guidance|followup_routing|inpatient_satisfaction|"
    r"outpatient_satisfaction|discharge_day3|create_task|set_status|untag|head_nurse|"
    r"px_office|pharmacy_head|dept_director|form\.submitted|answers\.|scores\.|event\.|"
    r"classification\.)|==|<=|>=|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}|\bUTC\b|\bNone\b|\bnull\b")
SHOWN = """(sel) => {
  const copy = document.querySelector(sel).cloneNode(true);
  copy.querySelectorAll(".b-advanced").forEach((d) => d.remove());
  return copy.textContent;
}"""


def test_try_a_picked_submission_and_simulate_in_words(server: str, engine: Engine) -> None:
    from playwright.sync_api import expect, sync_playwright

    from .conftest import ARGS, CHROMIUM, signed_in

    seed_submissions()
    make_user("px_try", "px_office")
    label = overall_label()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_try")
            page.goto(f"{server}/builder/edit/ruleset/followup_routing?app=satisfaction")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            # the recent answers by form title, masked name and local time
            picker = page.locator("#b-try-submission option")
            expect(picker.filter(has_text="张**")).to_have_count(1)
            offered = picker.all_text_contents()
            assert offered and not any(CODES.search(o) or "张三丰" in o for o in offered), offered
            page.select_option("#b-try-submission",
                               label=next(o for o in offered if "张**" in o))
            page.click("#b-try")
            miss = page.locator('#b-try-list li[data-rule="dissatisfied"]')
            expect(miss).to_have_class("b-try-miss", timeout=30_000)
            expect(miss).to_contain_text(f"未命中：{label} 是 4，条件要 < 3")
            hit = page.locator('#b-try-list li[data-rule="satisfied"]')
            expect(hit).to_have_class("b-try-hit")
            expect(hit).to_contain_text("命中：")
            shown = page.evaluate(SHOWN, "#b-try-result")
            assert not CODES.search(shown), (CODES.search(shown), shown)

            # simulate the satisfaction journey: the timeline by day, who gets which task
            page.click("#b-sim-open")
            expect(page.locator(f'#b-sim-scenario option[value="{SCENARIO}"]')).to_be_attached()
            page.select_option("#b-sim-scenario", SCENARIO)
            page.click("#b-sim-run")
            expect(page.locator("#b-sim-verdict")).to_have_class("b-sim-ok", timeout=120_000)
            timeline = page.locator(".b-sim-timeline")
            expect(timeline.locator('li[data-day="0"]').first).to_contain_text("第0天")
            expect(timeline).to_contain_text("出院（心内科）")
            expect(timeline).to_contain_text("第3天")
            tasks = page.locator(".b-sim-tasks")
            expect(tasks).to_contain_text("护士长")
            expect(tasks).to_contain_text("截止 第")
            shown = page.evaluate(SHOWN, "#b-sim-result")
            assert not CODES.search(shown), (CODES.search(shown), shown)
            assert errors == []
        finally:
            browser.close()
