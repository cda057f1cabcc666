"""The builder in words (issue 21, points 1 and 5), in headless Chromium (Debian's
/usr/bin/chromium through Playwright; fails, never skips, without it):

- the home page searches every app's definitions by title; an editor says where its definition
  is used;
- every builder page read in zh-CN shows no definition key, type code or expression outside
  the closed "高级 / Advanced" disclosures;
- a condition is built from pickers that know the field (a choice field offers its choices)
  and shown as a sentence;
- the publish diff of a one-field label change shows one change;
- at 1366×768 the form preview is within the viewport.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry

from .conftest import ARGS, CHROMIUM, make_user, signed_in

# the pages read, with the app they belong to (the shipped apps' definitions)
PAGES = [("form", "inpatient_satisfaction"), ("ruleset", "followup_routing")]

# everything a person sees: rendered text (a closed <details> renders none), the values of
# visible inputs (but the English labels) and the chosen option of visible selects
SEEN = """() => {
  const shown = (n) => n.checkVisibility({ visibilityProperty: true });
  const out = [document.body.innerText];
  for (const n of document.querySelectorAll("input[type=text], input:not([type]), textarea")) {
    // (English labels are the author's words, and may repeat a key: "overall")
    const english = /[.]en$/.test(n.dataset.prop || n.dataset.choice || "");
    if (shown(n) && n.value && !english) out.push(n.value);
  }
  for (const n of document.querySelectorAll("select")) {
    if (shown(n) && n.selectedIndex >= 0) out.push(n.options[n.selectedIndex].text);
  }
  return out.join("\\n");
}"""

EXPRESSION = re.compile(r"\b(answers|scores|bands|classification|event|patient)\.\w|==|<=|>=|!=")
SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")   # a definition key or a type code


def _codes(body: dict[str, Any]) -> set[str]:
    """The keys, codes and type names a definition holds (that a person must not read)."""
    found: set[str] = {str(body["key"])}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for name in ("key", "type", "do", "method", "code"):
                code = value.get(name)
                if isinstance(code, str) and re.fullmatch(r"[a-z][a-z_]{2,}", code):
                    found.add(code)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(body.get("fields"))
    walk(body.get("rules"))
    walk(body.get("scores"))
    return found


def _leaks(text: str, codes: set[str]) -> list[str]:
    out = [m.group(0) for m in EXPRESSION.finditer(text)]
    out += [m.group(0) for m in SNAKE.finditer(text)]
    out += [c for c in codes
            if re.search(rf"(?<![A-Za-z0-9_]){re.escape(c)}(?![A-Za-z0-9_])", text)]
    return sorted(set(out))


@pytest.fixture
def browser(server: str) -> Iterator[Browser]:
    make_user("reader", "px_office")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(page: Page, server: str, kind: str, key: str) -> None:
    page.goto(f"{server}/builder/edit/{kind}/{key}")
    expect(page.locator("#builder[data-ready='1']")).to_be_attached()


def test_every_builder_page_in_zh_cn_shows_words_not_codes(server: str, engine: Engine,
                                                            browser: Browser) -> None:
    page, errors = signed_in(browser, server, "reader")
    home = page.evaluate(SEEN)
    assert "问卷" in home and "住院患者满意度调查" in home
    assert _leaks(home, set()) == [], home
    # search across apps, by the words a person knows
    page.fill("#builder-search", "满意度 回访")
    expect(page.locator("tr[data-key]:visible")).to_have_count(1)
    expect(page.locator("tr[data-key]:visible")).to_contain_text("满意度回访分流")
    page.fill("#builder-search", "没有这个词")
    expect(page.locator("#builder-search-none")).to_be_visible()
    field_types = set(loaded_registry().catalogue("field_type").names())
    for kind, key in PAGES:
        with transaction(engine) as session:
            row = store.current(session, kind, key)
            assert row is not None
            body, title = dict(row.body), row.body["title"]["zh-CN"]
        _open(page, server, kind, key)
        expect(page.locator("#b-title")).to_have_text(title)
        if kind == "form":   # where it is used: by the rules that listen to it, by title
            page.locator("#b-used summary").click()
            expect(page.locator('#b-used-list li[data-key="followup_routing"]')).to_contain_text(
                "满意度回访分流", timeout=30_000)   # every definition checked once, then kept
        if kind == "form":   # every field card and its panel, with both conditions
            cards = page.locator("#b-fields li.b-card")
            for n in range(cards.count()):
                cards.nth(n).click()
                seen = page.evaluate(SEEN)
                leaks = _leaks(seen, _codes(body) | field_types)
                assert leaks == [], (kind, n, leaks)
        else:
            sentences = page.locator("#b-rules .b-sentence")
            expect(sentences.nth(0)).to_have_text("当 您对本次住院的总体满意度如何？ < 3")
            expect(sentences.nth(1)).to_contain_text("当 您还有什么意见或建议？ 提到 用药指导 或 ")
        seen = page.evaluate(SEEN)
        assert title in seen
        assert _leaks(seen, _codes(body) | field_types) == [], kind
        # the advanced views still hold the codes for those who want them
        page.locator("#b-text-advanced summary").click()
        assert f"key: {key}" in page.locator("#b-yaml").input_value()
    assert errors == []


def test_a_condition_is_picked_by_labels_and_shown_as_a_sentence(server: str,
                                                                  browser: Browser) -> None:
    page, errors = signed_in(browser, server, "reader")
    _open(page, server, "form", "inpatient_satisfaction")
    page.locator('#b-fields li[data-key="comment"]').click()
    field = page.locator('#b-props [data-logic="visible_if.field"]')
    field.select_option(label="让您不满意的主要是哪些方面？")   # a multiple-choice field
    expect(page.locator('#b-props [data-logic="visible_if.op"]')).to_have_value("has")
    page.locator('#b-props [data-logic="visible_if.value"]').select_option(label="费用")
    page.click('#b-props [data-logic="visible_if.add"]')
    page.locator('#b-props [data-logic="visible_if.1.field"]').select_option(
        label="您对本次住院的总体满意度如何？")
    page.locator('#b-props [data-logic="visible_if.1.op"]').select_option("<=")
    page.fill('#b-props [data-logic="visible_if.1.value"]', "2")
    page.click('#b-props [data-logic="visible_if.set"]')
    expect(page.locator('#b-props [data-logic="visible_if.sentence"]')).to_have_text(
        "当 让您不满意的主要是哪些方面？ 包含 「费用」 且 您对本次住院的总体满意度如何？ ≤ 2")
    expect(page.locator('#b-fields li[data-key="comment"] .b-logic')).to_contain_text(
        "包含 「费用」")
    # the expression it wrote is there, in the advanced view only
    advanced = page.locator('#b-props [data-advanced="field:comment:visible_if:expression"]')
    expect(advanced.locator("input")).to_be_hidden()
    advanced.locator("summary").click()
    expect(advanced.locator("input")).to_have_value(
        "'cost' in answers.low_reasons and answers.overall <= 2")
    expect(page.locator("#b-problems li.ok")).to_be_visible()
    assert errors == []


def test_at_1366_the_preview_is_in_view_and_a_label_change_is_one_change(
        server: str, browser: Browser) -> None:
    page, errors = signed_in(browser, server, "reader")
    page.set_viewport_size({"width": 1366, "height": 768})
    _open(page, server, "form", "inpatient_satisfaction")
    phone = page.locator("#b-phone")
    expect(phone.locator("main")).to_be_attached()   # the patient page is rendered into it
    box = phone.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1366, box
    assert box["y"] >= 0 and box["y"] + box["height"] <= 768, box
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    # the publish diff of a one-field label change shows one change
    page.locator('#b-fields li[data-key="nps"]').click()
    label = page.locator('#b-props [data-prop="label.zh-CN"]')
    label.fill("您愿意向亲友推荐我院吗？")
    label.press("Tab")
    expect(page.locator('#b-fields li[data-key="nps"] .b-name')).to_have_text(
        "您愿意向亲友推荐我院吗？")
    page.click("#b-publish")
    changes = page.locator("#b-changes li")
    expect(changes).to_have_count(1)
    expect(changes).to_have_text(
        "字段「您愿意向亲友推荐我院吗？」："
        "标签 由「您有多大可能向亲友推荐我院？」改为「您愿意向亲友推荐我院吗？」")
    expect(page.locator("#b-change-count")).to_have_text("共 1 处改动")
    expect(page.locator("#b-diff")).to_be_hidden()   # the text diff: advanced only
    assert errors == []
