"""The dashboard and alert designers and expression completion, in headless Chromium (Debian's
/usr/bin/chromium through Playwright): global filters and drill-down, tiles rearranged by
dragging and by keyboard, an alert threshold tried on current data, then completing a field key
and a function in a "show when" expression. Fails (never skips) without Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.forms.runtime import submit

from .conftest import ARGS, CHROMIUM, login, make_user, open_advanced, signed_in


def _clean(page: Page) -> None:
    expect(page.locator("#b-problems li.ok")).to_be_visible()


def _seed(engine: Engine) -> None:
    """Satisfaction answers: cardiology unhappy (overall 2), obstetrics happy (overall 5)."""
    with transaction(engine) as session:
        for dept in ("cardiology", "obstetrics"):
            session.add(Department(id=dept, name={"zh-CN": dept, "en": dept}, kind="department"))
        session.flush()
        for n in range(6):
            for dept, overall, nps in (("cardiology", 2, 3), ("obstetrics", 5, 10)):
                pid = f"{dept[:4]}{n}"
                session.add(Patient(id=pid, mrn=f"M{pid}", name="患者"))
                session.flush()
                session.add(Encounter(id=f"e{pid}", patient_id=pid, type="inpatient",
                                      department_id=dept, status="discharged"))
                session.flush()
                answers = {"overall": overall, "nps": nps}
                if overall <= 2:
                    answers["low_reasons"] = ["attitude"]
                submit(session, form_key="inpatient_satisfaction", answers=answers,
                       patient_id=pid, encounter_id=f"e{pid}", department_id=dept)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _tiles(page: Page) -> list[str]:
    found: list[str] = page.locator("#b-tiles li").evaluate_all(
        "items => items.map(i => i.dataset.chart)")
    return found


def test_dashboard_and_alert_designers(server: str, engine: Engine, browser: Browser) -> None:
    make_user("px_dash", "px_office")
    _seed(engine)
    page, errors = signed_in(browser, server, "px_dash")

    # a dashboard: filters, drill-down, three tiles rearranged by dragging and by keyboard
    page.goto(f"{server}/builder/edit/dashboard/quality_board?app=satisfaction")
    expect(page.locator("#builder[data-ready='1']")).to_be_attached()
    for chart in ("kpi_nps", "nps_by_department", "avg_by_department"):
        page.select_option("#b-tile-chart", chart)
        page.click("#b-add-tile")
    expect(page.locator("#b-tiles li")).to_have_count(3)
    page.locator('[data-filter="department"]').check()
    page.locator('[data-filter="date_range"]').check()
    page.locator('[data-drill="department"]').check()
    page.locator('[data-drill="hospital"]').check()   # kept in the registry's order
    page.fill("#b-before-after", "2026-06-01")
    page.locator("#b-before-after").press("Tab")
    _clean(page)
    # drag the last tile onto the first: it takes the first place
    page.drag_and_drop('#b-tiles li[data-chart="avg_by_department"]',
                       '#b-tiles li[data-chart="kpi_nps"]')
    assert _tiles(page) == ["avg_by_department", "kpi_nps", "nps_by_department"]
    # Alt+↓ on a focused tile moves it down
    page.locator('#b-tiles li[data-chart="avg_by_department"]').focus()
    page.keyboard.press("Alt+ArrowDown")
    assert _tiles(page) == ["kpi_nps", "avg_by_department", "nps_by_department"]
    page.fill('[data-tile="0.width"]', "4")
    page.locator('[data-tile="0.width"]').press("Tab")
    expect(page.locator('#b-tiles li[data-chart="kpi_nps"] img')).to_have_attribute(
        "src", re.compile(r"^data:image/svg"))
    _clean(page)
    page.click("#b-undo")   # the width
    page.click("#b-redo")
    _clean(page)
    page.click("#b-publish")
    page.click("#b-confirm")
    expect(page.locator("#b-version")).to_have_text("v1")

    # an alert threshold: average overall satisfaction below 3, per department
    page.goto(f"{server}/builder/edit/alert/low_overall?app=satisfaction")
    expect(page.locator("#builder[data-ready='1']")).to_be_attached()
    page.select_option("#b-alert-dataset", "satisfaction_by_department")
    expect(page.locator('#b-alert-measure option[value="avg_overall"]')).to_be_attached()
    page.select_option("#b-alert-measure", "avg_overall")
    page.select_option("#b-alert-group", "department")
    page.select_option("#b-alert-op", "<")
    page.fill("#b-alert-value", "3")
    page.locator("#b-alert-value").press("Tab")
    page.fill("#b-alert-pending", "60")
    page.locator("#b-alert-pending").press("Tab")
    _clean(page)
    page.click("#b-alert-try")
    expect(page.locator('#b-alert-result tr[data-group="cardiology"]')).to_have_class("b-try-hit")
    expect(page.locator('#b-alert-result tr[data-group="obstetrics"]')).to_have_class("b-try-miss")
    expect(page.locator("#b-alert-summary")).to_contain_text("2 个分组中 1 个")
    # a measure the dataset lacks is flagged at its picker
    open_advanced(page, "#b-text-advanced")
    page.locator("#b-yaml").fill(page.locator("#b-yaml").input_value().replace(
        "measure: avg_overall", "measure: avg_overal"))
    page.click("#b-apply-text")
    expect(page.locator("#b-alert-measure").locator("xpath=ancestor::label")).to_have_class(
        "has-error")
    expect(page.locator("#b-alert-measure").locator("xpath=ancestor::label").locator(
        '[data-code="alert.unknown-measure"]')).to_be_visible()
    page.click("#b-undo")
    _clean(page)
    page.click("#b-publish")
    page.click("#b-confirm")
    expect(page.locator("#b-version")).to_have_text("v1")
    assert errors == []

    with transaction(engine) as session:
        board = store.current(session, "dashboard", "quality_board")
        assert board is not None
        assert board.body["filters"] == ["date_range", "department"]
        assert board.body["drilldown"] == ["hospital", "department"]
        assert board.body["before_after"] == "2026-06-01"
        assert board.body["tiles"] == [{"chart": "kpi_nps", "width": 4},
                                       {"chart": "avg_by_department", "width": 6},
                                       {"chart": "nps_by_department", "width": 6}]
        alert = store.current(session, "alert", "low_overall")
        assert alert is not None
        assert alert.body["condition"] == {"op": "<", "value": 3}
        assert alert.body["measure"] == "avg_overall" and alert.body["pending_minutes"] == 60
        # trying it stored no alert state and raised no event
        from sqlalchemy import func, select

        from careloop.engine.models import DomainEventRow
        from careloop.reports.models import AlertState
        assert session.scalar(select(func.count()).select_from(AlertState)) == 0
        assert session.scalar(select(func.count()).select_from(DomainEventRow).where(
            DomainEventRow.type == "metric.alert")) == 0


def test_expression_completion(server: str, engine: Engine, browser: Browser) -> None:
    make_user("px_comp", "px_office")
    page, errors = signed_in(browser, server, "px_comp")
    page.goto(f"{server}/builder/edit/form/completion_demo?app=obstetrics")
    expect(page.locator("#builder[data-ready='1']")).to_be_attached()
    for field_type in ("rating", "yes_no"):
        page.locator(f'#b-palette button[data-type="{field_type}"]').click()
    expect(page.locator("#b-fields li.b-card")).to_have_count(2)
    open_advanced(page, '[data-advanced="field:yes_no_1:visible_if:expression"]')
    box = page.locator('[data-logic="visible_if.expression"]')
    box.click()
    box.press_sequentially("answers.rat")
    listbox = page.locator("ul.b-complete:visible")
    expect(listbox.locator("li")).to_have_count(1)
    expect(listbox.locator("li").first).to_contain_text("answers.rating_1")
    box.press("Enter")
    expect(box).to_have_value("answers.rating_1")
    box.press_sequentially(" >= 3 and coal")
    expect(listbox.locator('li[data-value="coalesce"]')).to_be_visible()
    expect(listbox.locator('li[data-value="coalesce"] small')).to_contain_text("coalesce(")
    box.press("Tab")   # accepts: the function with its opening parenthesis
    expect(box).to_have_value("answers.rating_1 >= 3 and coalesce(")
    box.press_sequentially("answers.y")
    box.press("ArrowDown")  # one candidate: stays on it
    box.press("Enter")
    box.press_sequentially(", 'no') == 'no'")
    box.press("Tab")        # nothing to complete after a quote: the change commits it
    expect(box).to_have_value("answers.rating_1 >= 3 and coalesce(answers.yes_no_1, 'no') == 'no'")
    # a condition the pickers cannot build reads as a custom one on the card, never as code
    expect(page.locator('#b-fields li[data-key="yes_no_1"] .b-logic')).to_contain_text(
        "自定义条件")
    _clean(page)
    # inside a quoted text nothing is offered
    box.fill("")
    box.press_sequentially("answers.rating_1 == 'ans")
    expect(page.locator("ul.b-complete:visible")).to_have_count(0)
    assert errors == []


def test_function_list_and_dataset_columns(client: TestClient, apps: list[str]) -> None:
    make_user("px_api", "px_office")
    login(client, "px_api")
    functions = client.get("/api/v1/builder/functions").json()
    names = {f["name"] for f in functions}
    assert {"coalesce", "contains", "days_between", "today"} <= names
    assert all(f["signature"].startswith(f["name"] + "(") and f["doc"] for f in functions)
    columns = client.get("/api/v1/builder/datasets/satisfaction_by_department").json()
    assert columns["dimensions"] == ["department"]
    assert "avg_overall" in columns["measures"]
    assert client.get("/api/v1/builder/datasets/nope").status_code == 404
    options = client.get("/api/v1/builder/charts").json()
    assert options["filters"] == ["date_range", "department", "form"]
    assert "hospital" in options["drill_levels"] and "department" in options["dimensions"]
    assert options["ops"] == ["<", "<=", ">", ">="]
    # each chart type's panel is its own: a label a person reads and the channels it offers
    panels = {p["name"]: p for p in options["type_panels"]}
    assert panels["wordcloud"]["channels"] == ["text"] and panels["wordcloud"]["title"] == "词云"
    assert panels["kpi"]["channels"] == ["value", "y"]
