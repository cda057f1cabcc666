"""Issue 21's acceptance: "a browser test reads every builder page in zh-CN and finds no definition
key, type code or expression shown outside the advanced views".

Every shipped app is imported; for every kind of definition the bundle ships, one definition's
editor is opened in headless Chromium (Debian's /usr/bin/chromium; fails, never skips, without
it) and read as a person reads it: the rendered text (a closed "高级 / Advanced" disclosure
renders none), the values of visible inputs, every option of visible selects, the window title.
The flow designer is read with each step's panel open; the form builder with each field's.
Nothing may be a key or code the definition holds, a registered type name, snake_case, or an
expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine

from careloop.engine import store
from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry

from .conftest import ARGS, CHROMIUM, make_user, signed_in

ROOT = Path(__file__).resolve().parents[2]
# the apps in the order of their `requires`
APPS = ["common", "discharge", "cardiology", "obstetrics", "satisfaction", "chronic_care",
        "complaints", "instruments", "mental_health", "orthopedics", "touchpoints"]

# one definition of every kind the bundle ships, the richest of its kind
PAGES = {
    "form": "postpartum_42d",
    "ruleset": "followup_routing",
    "flow": "discharge",
    "dataset": "nps_by_doctor",
    "chart": "nps_by_department",
    "dashboard": "discharge_followup",
    "alert": "department_nps_low",
    "decision_table": "followup_plan",
    "dictionary": "feedback_categories",
    "scenario": "discharge_day3_answered",
    "template": "followup_form",
    "touchpoint": "cashier",
    "calendar": "cn_mainland",
    "hl7_mapping": "default",
}

# what a person reads: rendered text, visible inputs' values (not the English labels: the
# author's own words), every option of a visible select, the window title
SEEN = """() => {
  const shown = (n) => n.checkVisibility({ visibilityProperty: true });
  const out = [document.title, document.body.innerText];
  for (const n of document.querySelectorAll("input:not([type]), input[type=text], textarea")) {
    const english = /[.]en$/.test(n.dataset.prop || n.dataset.choice || "");
    if (shown(n) && n.value && !english) out.push(n.value);
  }
  for (const n of document.querySelectorAll("select")) {
    if (shown(n)) for (const o of n.options) out.push(o.text);
  }
  return out.join("\\n");
}"""

EXPRESSION = re.compile(
    r"\b(answers|scores|bands|classification|event|patient|encounter|payload)\.\w|==|<=|>=|!=")
SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
JSON_TEXT = re.compile(r"[{\[]\s*\"[a-z_]+\"\s*:")
NAMES = ("key", "type", "do", "method", "code", "dataset", "chart", "form", "template", "relation",
         "role", "measure", "event", "step", "next", "then", "else")


def _codes(body: Any) -> set[str]:
    """The keys, codes and type names a definition holds (that a person must not read)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for name in NAMES:
                code = value.get(name)
                if isinstance(code, str) and re.fullmatch(r"[a-z][a-z_]{3,}", code):
                    found.add(code)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(body)
    return found


def _type_names() -> set[str]:
    registry = loaded_registry()
    out: set[str] = set()
    for catalogue in ("field_type", "step_type", "action", "kind"):
        out |= {n for n in registry.catalogue(catalogue).names() if len(n) > 3}
    return out


def leaks(text: str, codes: set[str]) -> list[str]:
    out = [m.group(0) for m in EXPRESSION.finditer(text)]
    out += [m.group(0) for m in SNAKE.finditer(text)]
    out += [m.group(0) for m in JSON_TEXT.finditer(text)]
    out += [c for c in codes
            if re.search(rf"(?<![A-Za-z0-9_]){re.escape(c)}(?![A-Za-z0-9_])", text)]
    return sorted(set(out))


@pytest.fixture
def everything(engine: Engine, server: str) -> str:
    for name in APPS:
        import_bundle(ROOT / "app_definitions" / name, engine=engine, actor="test")
    make_user("reader", "px_office")
    return server


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _read(page: Page, where: str, codes: set[str], out: list[str]) -> None:
    """Add to ``out`` what the page shows that a person must not read."""
    found = leaks(page.evaluate(SEEN), codes)
    if found:
        out.append(f"{where}: {found}")


def test_every_kind_shipped_is_read(engine: Engine, everything: str) -> None:
    with transaction(engine) as session:
        shipped = {row.kind for row in store.list_current(session)}
    assert shipped == set(PAGES), shipped ^ set(PAGES)


def test_every_builder_page_in_zh_cn_shows_words_not_codes(engine: Engine, everything: str,
                                                            browser: Browser) -> None:
    server = everything
    page, errors = signed_in(browser, server, "reader")
    types = _type_names()
    found: list[str] = []
    _read(page, "home", types, found)
    for kind, key in PAGES.items():
        with transaction(engine) as session:
            row = store.current(session, kind, key)
            assert row is not None, (kind, key)
            body, title = dict(row.body), row.title or {}
        codes = _codes(body) | types | {key}
        page.goto(f"{server}/builder/edit/{kind}/{key}")
        expect(page.locator("#builder[data-ready='1']")).to_be_attached()
        if title.get("zh-CN"):
            expect(page.locator("#b-title")).to_have_text(title["zh-CN"])
        assert page.title().startswith(title.get("zh-CN") or ""), page.title()
        _read(page, f"{kind}/{key}", codes, found)
        if kind == "flow":   # the trigger by its event's name
            trigger = page.locator('#b-flow-trigger [data-trigger="event"] option:checked')
            expect(trigger).to_have_text("出院")
        if kind == "flow":   # every step's panel
            boxes = page.locator("#b-steps > li")
            for n in range(boxes.count()):
                boxes.nth(n).click()
                _read(page, f"{kind}/{key} step {n}", codes, found)
        if kind == "form":
            cards = page.locator("#b-fields li.b-card")
            for n in range(cards.count()):
                cards.nth(n).click()
                _read(page, f"{kind}/{key} field {n}", codes, found)
        # the advanced view still holds the text for those who want it
        page.locator("#b-text-advanced summary").click()
        assert f"key: {key}" in page.locator("#b-yaml").input_value()
    assert found == [], "\n".join(found)
    assert errors == []


def test_a_flow_trigger_and_a_task_step_are_set_by_their_words(engine: Engine, everything: str,
                                                                 browser: Browser) -> None:
    """The discharge flow, as a head nurse changes it: its trigger by the event's name and how
    often, a new task for the head nurse, urgent, due in 4 hours — only pickers and numbers."""
    page, errors = signed_in(browser, everything, "reader")
    page.goto(f"{everything}/builder/edit/flow/discharge")
    expect(page.locator("#builder[data-ready='1']")).to_be_attached()
    event = page.locator('#b-flow-trigger [data-trigger="event"]')
    expect(event.locator("option:checked")).to_have_text("出院")
    once = page.locator('#b-flow-trigger [data-trigger="once"]')
    expect(once.locator("option:checked")).to_have_text("每次就诊一次")
    once.select_option(label="每位患者只一次")
    expect(once.locator("option:checked")).to_have_text("每位患者只一次")
    expect(page.locator("#b-problems li.ok")).to_be_visible()
    expect(page.locator('#b-flow-trigger [data-trigger="when"]')).to_be_hidden()   # advanced
    page.click('#b-step-palette button[data-type="create_task"]')
    props = page.locator("#b-step-props")
    props.locator('[data-prop="task_title.zh-CN"]').fill("请护士长回访用药问题")
    props.locator('[data-prop="task_title.zh-CN"]').press("Tab")
    props.locator('[data-prop="assignee.role"]').select_option(label="护士长")
    props.locator('[data-prop="priority"]').select_option(label="紧急")
    props.locator('[data-prop="due"]').fill("4")
    props.locator('[data-prop="due.unit"]').select_option(label="小时")
    props.locator('[data-prop="due"]').press("Tab")
    card = page.locator("#b-steps > li").last
    expect(card).to_contain_text("创建任务：请护士长回访用药问题")
    expect(page.locator("#b-problems li.ok")).to_be_visible()
    page.locator("#b-text-advanced summary").click()
    # the text view shows the draft as last saved (a save follows each edit within a moment)
    expect(page.locator("#b-yaml")).to_have_value(re.compile(r"请护士长回访用药问题[\s\S]*4h"))
    draft = yaml.safe_load(page.locator("#b-yaml").input_value())
    assert draft["trigger"] == {"event": "encounter.discharged",
                                "when": "encounter.type == 'inpatient'", "once": "per_patient"}
    task = draft["steps"][-1]
    assert task["type"] == "create_task" and task["assignee"] == {"role": "head_nurse"}
    assert (task["priority"], task["due"]) == ("urgent", "4h")
    assert task["task_title"]["zh-CN"] == "请护士长回访用药问题"
    with transaction(engine) as session:   # a draft only: nothing live changed
        row = store.current(session, "flow", "discharge")
        assert row is not None and row.body["trigger"]["once"] == "per_encounter"
    assert errors == []
