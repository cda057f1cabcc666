"""The patient page in headless Chromium at a phone viewport (390×844): a multi-page form with
show/hide, save, resume from the link, submit — then the same in large-text mode.

Chromium must be installed at /usr/bin/chromium; without it this test fails (it never skips).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import Engine, select

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry
from careloop.forms.models import Submission
from careloop.web.app import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def server(engine: Engine) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=5)


def _link(engine: Engine) -> str:
    create = loaded_registry().catalogue("service")["forms.create_request"]
    with transaction(engine) as session:
        made = create(session, form_key="inpatient_satisfaction", patient_id="p1",
                      encounter_id="e1", channel="wechat",
                      expires_at=now_utc() + timedelta(days=7))
    return str(made["url"])


def _answer(page: Page, base: str, url: str, query: str) -> None:
    page.goto(base + url + query)
    reasons = page.locator("#f-low_reasons")
    expect(reasons).to_be_hidden()
    page.locator("label.pill", has_text="2").first.click()          # overall = 2 → reasons shown
    expect(reasons).to_be_visible()
    page.locator("label.pill", has_text="4").first.click()          # overall = 4 → hidden again
    expect(reasons).to_be_hidden()
    page.locator("label.pill", has_text="1").first.click()          # overall = 1 → shown
    expect(reasons).to_be_visible()
    page.get_by_label("Long waiting").check()
    page.locator("#f-nps label.pill", has_text="9").click()
    page.get_by_role("button", name="Save and continue later").click()
    expect(page.get_by_role("status")).to_contain_text("Open the same link again")
    page.goto(base + url)                                            # resume from the link
    expect(page.get_by_label("Long waiting")).to_be_checked()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()
    page.get_by_label("Food: Satisfied").check()
    page.get_by_label("Any other comments or suggestions?").fill("饭菜有点凉")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("status")).to_contain_text("Thank you")


def test_multi_page_form_in_headless_chromium(engine: Engine, server: str, patient: str,
                                              publish) -> None:  # type: ignore[no-untyped-def]
    assert Path(CHROMIUM).exists(), f"Chromium is required at {CHROMIUM} (apt-get install chromium)"
    publish("satisfaction/forms/inpatient_satisfaction.yaml")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844},
                                          locale="en-US")
            page = context.new_page()
            _answer(page, server, _link(engine), "?lang=en")
            page = context.new_page()
            url = _link(engine)
            page.goto(server + url + "?lang=en&lt=1")
            size = page.evaluate("getComputedStyle(document.body).fontSize")
            assert size == "24px"
            assert page.evaluate("document.body.scrollWidth") <= 390  # no sideways scrolling
            _answer(page, server, url, "")
        finally:
            browser.close()
    with transaction(engine) as session:
        subs = session.scalars(select(Submission).order_by(Submission.id)).all()
        assert len(subs) == 2
        for sub in subs:
            assert sub.answers["overall"] == 1 and sub.answers["low_reasons"] == ["waiting"]
            assert sub.answers["touchpoints"] == {"food": "4"}
            assert sub.bands == {"nps_category": "promoter"} and sub.channel == "wechat"


def test_fhirpath_condition_shows_and_hides_in_chromium(engine: Engine, server: str,
                                                       patient: str) -> None:
    """An imported SDC enableWhenExpression (FHIRPath): the page's show/hide is the server's."""
    import json

    import yaml

    from careloop.forms.fhir import import_questionnaire
    from careloop.forms.publish import publish_form

    source = Path(__file__).parent / "data" / "fhir_corpus" / "lforms-enablewhenexpr.json"
    body, notes = import_questionnaire(json.loads(source.read_text("utf-8")), "sum_gate")
    assert notes == []
    with transaction(engine) as session:
        publish_form(session, yaml.safe_dump(body), source_path="fhir/sum_gate.yaml",
                     actor="tester")
        made = loaded_registry().catalogue("service")["forms.create_request"](
            session, form_key="sum_gate", patient_id="p1", encounter_id="e1", channel="sms",
            expires_at=now_utc() + timedelta(days=7))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(server + str(made["url"]) + "?lang=en")
            fourth = page.locator("#f-q4")
            expect(fourth).to_be_hidden()

            def enter(label: str, value: str) -> None:  # a number input changes on leaving it
                page.get_by_label(label).fill(value)
                page.get_by_label(label).press("Tab")

            enter("First number", "2")
            enter("Second number", "3")                                  # 2 + 3 >= 5: shown
            expect(fourth).to_be_visible()
            enter("Second number", "1")                                  # 2 + 1: hidden again
            expect(fourth).to_be_hidden()
            enter("Third number", "4")
            expect(fourth).to_be_visible()
            fourth.get_by_role("textbox").fill("shown at 7")
            page.get_by_role("button", name="Submit").click()
            expect(page.get_by_text("Thank you")).to_be_visible()
        finally:
            browser.close()
    with transaction(engine) as session:
        stored = session.scalars(select(Submission)).one()
        assert stored.answers == {"n1": 2.0, "n2": 1.0, "n3": 4.0, "q4": "shown at 7"}


def test_computed_choices_follow_the_answers_in_chromium(engine: Engine, server: str,
                                                        patient: str) -> None:
    """An imported SDC answerExpression on ``%resource``: after a change the page's script asks
    the server, which draws the field again with the choices the answers give."""
    import json

    import yaml

    from careloop.forms.fhir import import_questionnaire
    from careloop.forms.publish import publish_form

    source = Path(__file__).parent / "data" / "fhir_corpus" / "lforms-answerexp.json"
    body, notes = import_questionnaire(json.loads(source.read_text("utf-8")), "answer_expr")
    assert notes == []
    with transaction(engine) as session:
        publish_form(session, yaml.safe_dump(body), source_path="fhir/answer_expr.yaml",
                     actor="tester")
        made = loaded_registry().catalogue("service")["forms.create_request"](
            session, form_key="answer_expr", patient_id="p1", encounter_id="e1",
            channel="sms", expires_at=now_utc() + timedelta(days=7))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(server + str(made["url"]) + "?lang=en")
            apple = page.locator('#f-q1listchoice [data-choice="apple"]')
            expect(apple).to_have_count(0)
            page.locator('input[name="q1"]').first.fill("apple")
            page.locator('input[name="q1"]').first.press("Tab")      # change → the server
            expect(apple).to_be_visible()
            apple.click()
            page.get_by_role("button", name="Submit").click()
            expect(page.get_by_role("status")).to_contain_text("Thank you")
        finally:
            browser.close()
    with transaction(engine) as session:
        sub = session.scalars(select(Submission)).one()
        assert sub.answers == {"q1": ["apple"], "q1listchoice": "apple"}
