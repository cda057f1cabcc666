"""Headless Chromium (Debian's /usr/bin/chromium through Playwright) over the main staff path:
sign in, open the inbox, complete a task with an outcome, see it done.

The test fails, never skips, when Chromium is missing (``apt-get install -y chromium``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import sync_playwright

from .conftest import PASSWORD, UserFactory

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    """The app served as `careloop serve` serves it: uvicorn in a thread and the process's event
    dispatcher thread (what the events API and patient pages acknowledge is handled there)."""
    from careloop.engine.dispatcher import Dispatcher

    dispatcher = Dispatcher(poll_seconds=0.2).start()
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        dispatcher.stop()


def test_sign_in_open_inbox_complete_a_task(server: str, wards: dict[str, int],
                                            user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", "ward_a")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(locale="zh-CN")
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{server}/inbox")
            assert "/login" in page.url  # redirected to sign in
            page.fill("#username", "nurse_a")
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_url(f"{server}/inbox")
            row = page.locator(f'tr[data-task="{wards["PA"]}"]')
            assert row.count() == 1
            assert page.locator(f'tr[data-task="{wards["PB"]}"]').count() == 0
            row.locator("a").click()
            page.wait_for_url(f"{server}/tasks/{wards['PA']}")
            assert page.locator("#patient-phone").inner_text() == "138****5678"
            page.select_option("#outcome", "reached_ok")
            page.fill("#notes", "恢复良好")
            page.click("#complete-submit")
            page.wait_for_url(f"{server}/tasks/{wards['PA']}")
            assert page.locator("#task-status").inner_text() == "已完成"
            page.goto(f"{server}/inbox?view=done")
            assert page.locator(f'tr[data-task="{wards["PA"]}"] .status').inner_text() == \
                "已完成"
            page.goto(f"{server}/inbox?view=mine")
            assert page.locator(f'tr[data-task="{wards["PA"]}"]').count() == 0
            assert errors == [], "\n".join(errors)  # no CSP violations or script errors
        finally:
            browser.close()


def test_phone_followup_form_new_score_and_dashboard_filter(
        server: str, wards: dict[str, int], user_factory: UserFactory) -> None:
    """The follow-up agent's day: the inbox, a phone follow-up task whose form opens in staff
    mode, the patient's new score on the patient page, the dashboard filtered by department."""
    from pathlib import Path

    from careloop.engine.bundles import import_bundle, list_bundles
    from careloop.engine.db import transaction
    from careloop.engine.domain import Task

    for path in list_bundles([Path(__file__).resolve().parents[2] / "app_definitions"]):
        import_bundle(path, actor="test")
    with transaction() as session:
        task = session.get(Task, wards["PA"])
        assert task is not None
        task.kind, task.form_key = "phone_followup", "discharge_day3"
    user_factory("head_a", "head_nurse", "cardio")
    task_id = wards["PA"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(locale="zh-CN")
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"{page.url}: {m.text}")
                    if m.type == "error" else None)
            page.goto(f"{server}/login")
            page.fill("#username", "head_a")
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_url(f"{server}/")
            page.goto(f"{server}/inbox?view=department")
            page.locator(f'tr[data-task="{task_id}"] a').click()
            page.wait_for_url(f"{server}/tasks/{task_id}")
            page.click("#open-form")
            page.wait_for_url(f"{server}/tasks/{task_id}/form")
            page.locator('input[name="recovery"][value="good"]').check(force=True)
            page.locator('input[name="medication_clear"][value="yes"]').check(force=True)
            page.locator('input[name="overall"][value="2"]').check(force=True)
            page.fill('textarea[name="comment"]', "等候时间太长")
            page.locator('button[value="submit"]').click()
            page.wait_for_url(f"{server}/tasks/{task_id}?submitted=*")
            assert page.locator("#entered .scores").count() == 1
            page.select_option("#outcome", "reached_problem")
            page.fill("#notes", "已安抚，转护士长")
            page.click("#complete-submit")
            page.wait_for_url(f"{server}/tasks/{task_id}")
            assert page.locator("#task-status").inner_text() == "已完成"
            page.goto(f"{server}/patients/PA")
            link = page.locator("a.submission-link")
            assert link.count() == 1 and link.inner_text() == "出院第3天随访"
            assert page.locator(".scores").first.inner_text() != ""
            page.goto(f"{server}/reports/dashboards/service_quality_overview")
            page.select_option("#filter-department", "cardio")
            page.click("#filter-apply")
            page.wait_for_url("**department=cardio**")
            assert page.locator("#active-filter").count() == 1
            page.wait_for_selector("body[data-dashboard-ready='1']")
            tiles = page.locator(".tile").count()
            assert tiles >= 1
            # every tile with data is drawn by Vega under the app's CSP (no 'unsafe-eval': the
            # expression interpreter), not left as the "—" of a failed embed; the others say
            # why they are empty (the page is ready once every embed has settled)
            charts = page.locator(".tile .chart").count()
            empty = page.locator(".tile .empty-state").count()
            assert charts >= 1 and charts + empty >= tiles
            assert page.locator(".tile .chart svg").count() >= charts
            assert "—" not in page.locator(".tile").all_inner_texts()
            assert errors == [], "\n".join(errors)  # no CSP violations or script errors
        finally:
            browser.close()
