"""The dashboard pages through the app: the chosen language (not Accept-Language), tile widths,
empty states instead of sample charts, cross-filters, exports with a BOM; and in Chromium,
clicking a bar drills down with a breadcrumb back and clicking a slice filters the dashboard."""

from __future__ import annotations

import json
import re
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from careloop.web.demo import DEMO_PASSWORD

from .conftest import login
from .test_browser import ARGS, CHROMIUM, server  # noqa: F401  (the uvicorn fixture)


def _demo() -> None:
    from careloop.web.cli import up

    result = CliRunner().invoke(up, ["--no-serve", "--demo", "--patients", "40"])
    assert result.exit_code == 0, result.output


def _payload(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="payload">(.*?)</script>', html, re.S)
    assert match
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_dashboard_page_in_the_chosen_language(client: TestClient, engine: Engine) -> None:
    _demo()
    login(client, "px", DEMO_PASSWORD)
    client.cookies.set("careloop_locale", "en")
    page = client.get("/reports/dashboards/complaints_overview",
                      headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert page.status_code == 200
    assert "<h1 id=\"dashboard-title\">Complaints and follow-up KPIs</h1>" in page.text
    payload = _payload(page.text)
    categories = next(t for t in payload["tiles"] if t["chart"] == "complaints_by_category")
    assert {r["category"] for r in categories["data"]["rows"]} <= {
        "Staff attitude", "Quality of care", "Waiting time", "Billing", "Environment",
        "Suggestion", "Other"}
    client.cookies.set("careloop_locale", "zh-CN")
    page = client.get("/reports/dashboards/complaints_overview",
                      headers={"Accept-Language": "en"})
    assert "投诉与随访指标" in page.text


def test_tiles_take_the_designed_widths_and_say_why_they_are_empty(
        client: TestClient, engine: Engine) -> None:
    _demo()
    login(client, "px", DEMO_PASSWORD)
    page = client.get("/reports/dashboards/service_quality_overview")
    assert page.status_code == 200
    assert 'class="card tile w3"' in page.text and 'class="card tile w6"' in page.text
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in page.text
    css = client.get("/static/dashboard.css").text
    assert "grid-template-columns: repeat(12" in css and ".tile.w3 { grid-column: span 3; }" in css
    # the demo's patients answer the surveys: nothing is empty for the whole hospital
    assert "本期暂无数据" not in page.text
    # a period before the demo: the tiles say why they are empty, no sample chart
    early = client.get("/reports/dashboards/service_quality_overview"
                       "?from=2020-01-01&to=2020-01-31")
    assert early.status_code == 200
    assert "本期暂无数据：尚无住院患者满意度调查" in early.text, early.text[:2000]
    assert "示例" not in early.text and "seattle" not in early.text.lower()
    payload = _payload(page.text)
    drawn = [t for t in payload["tiles"] if t["spec"] is not None]
    assert drawn and all(t["spec"].get("width") == "container" for t in drawn)


def test_cross_filter_and_export_over_http(client: TestClient, engine: Engine) -> None:
    _demo()
    login(client, "px", DEMO_PASSWORD)
    full = client.get("/api/v1/reports/dashboards/complaints_overview").json()
    categories = next(t for t in full["tiles"] if t["chart"] == "complaints_by_category")
    first = categories["data"]["rows"][0]
    key = first["category__key"]
    page = client.get(f"/reports/dashboards/complaints_overview?f.category={key}")
    assert f"类别：{first['category']}" in page.text
    filtered = _payload(page.text)
    only = next(t for t in filtered["tiles"] if t["chart"] == "complaints_by_category")
    assert [r["category__key"] for r in only["data"]["rows"]] == [key]
    # tasks have no category: their tile is not emptied by the click
    handling = next(t for t in filtered["tiles"] if t["chart"] == "complaint_handling")
    assert handling["data"]["rows"]
    csv = client.get("/api/v1/reports/dashboards/complaints_overview/tiles/"
                     "complaint_rate_by_department.csv")
    assert csv.status_code == 200 and csv.content[:3] == b"\xef\xbb\xbf"
    assert csv.content[3:].decode("utf-8").startswith("科室,投诉率")


def test_click_a_bar_to_drill_down_and_back(engine: Engine, server: str) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    _demo()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server}/login")
            page.fill("input[name=username]", "px")
            page.fill("input[name=password]", DEMO_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{server}/reports/dashboards/complaints_overview")
            page.wait_for_selector("body[data-dashboard-ready='1']", timeout=20000)
            tile = page.locator("section[data-chart='complaint_rate_by_department']")
            # the tile spans half the grid (width: 6), and its chart fills the tile
            box = tile.bounding_box()
            grid = page.locator(".tiles").bounding_box()
            assert box is not None and grid is not None
            assert 0.4 * grid["width"] < box["width"] < 0.6 * grid["width"]
            svg = tile.locator(".chart svg").first.bounding_box()
            assert svg is not None and svg["width"] > 0.8 * box["width"]
            # click the first department's bar: down the declared path to its responses
            bars = tile.locator(".chart svg .mark-rect path")
            tallest = max(range(bars.count()),
                          key=lambda i: (bars.nth(i).bounding_box() or {"height": 0})["height"])
            assert "科室: " in (bars.nth(tallest).get_attribute("aria-label") or "")
            bars.nth(tallest).click()
            page.wait_for_selector("body[data-drill-level='responses']", timeout=20000)
            drill = tile.locator(".drill")
            assert drill.is_visible()
            crumbs = drill.locator(".crumbs button").all_inner_texts()
            assert crumbs[0] == "全院" and len(crumbs) == 2 and crumbs[1] != ""
            assert drill.locator("table.responses tr").count() >= 2
            cells = drill.locator("table.responses td").all_inner_texts()
            assert not any(c in ("null", "None") for c in cells)
            assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", c) for c in cells)
            # the breadcrumb goes back
            drill.locator(".crumbs button[data-crumb='0']").click()
            assert drill.is_hidden()
            # clicking a category slice filters the whole dashboard by it
            pie = page.locator("section[data-chart='complaints_by_category'] .chart svg "
                               ".mark-arc path").first
            pie.click()
            page.wait_for_url(re.compile(r"f\.category="), timeout=20000)
            page.wait_for_selector("body[data-dashboard-ready='1']", timeout=20000)
            assert page.locator("#active-filters").is_visible()
            assert "类别：" in page.locator("#active-filter-values").inner_text()
            assert errors == []
        finally:
            browser.close()
