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
            assert errors == []  # no CSP violations or script errors
        finally:
            browser.close()
