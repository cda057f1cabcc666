"""The form builder in headless Chromium offers the example faces pain scale from the server's
palette: its palette button, its property panel (the option named by its ``x-label``) and the
live preview drawing the faces; and the example weighted-mean score method with its option.
Fails (never skips) without Chromium."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.web import admin
from careloop.web.app import create_app

from .conftest import registered

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def server(engine: Engine) -> Iterator[str]:
    from careloop_example import faces_scale, score_weighted

    with (registered(faces_scale, "field_type", "faces_scale"),
          registered(score_weighted, "score_method", "weighted_mean")):
        yield from _serve(engine)


def _serve(engine: Engine) -> Iterator[str]:
    for name in ("common", "obstetrics"):
        import_bundle(ROOT / "app_definitions" / name, engine=engine, actor="test")
    with transaction() as session:
        user = admin.create_user(session, username="px_a", display_name="px_a",
                                 password=PASSWORD)
        admin.grant(session, user, "px_office", None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_the_builder_offers_the_faces_scale_with_its_panel_and_preview(server: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(locale="en", viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server}/login?next=/builder")
            page.fill("#username", "px_a")
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_url(f"{server}/builder")
            page.goto(f"{server}/builder/edit/form/pain_faces?app=obstetrics")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            button = page.locator('#b-palette button[data-type="faces_scale"]')
            expect(button).to_be_visible()
            button.click()
            # the property panel is the type's own options schema, labelled by its x-label
            option = page.locator('#b-props [data-prop="show_numbers"]')
            expect(option).to_be_attached()
            expect(page.locator("#b-props")).to_contain_text("Show the numbers")
            option.check()
            # the live preview is the real patient page: six faces with their words
            expect(page.locator("#b-phone .faces-scale .face")).to_have_count(6)
            expect(page.locator("#b-phone .faces-scale")).to_contain_text("Hurts a little more")
            # a score by the plugin's method: its option panel comes from the method's schema
            page.click("#b-add-score")
            page.select_option('[data-score="0.method"]', "weighted_mean")
            expect(page.locator("#b-scores")).to_contain_text("Weight per field")
            expect(page.locator("#b-problems")).to_contain_text("field_weights")  # required
            weights = page.locator('#b-scores [data-prop="field_weights"]')
            weights.fill("faces_scale_1: 2")
            weights.press("Tab")
            expect(page.locator("#b-problems li.ok")).to_be_visible()
            assert errors == []
        finally:
            browser.close()
