"""Touchpoint feedback and elderly inclusion in headless Chromium, on a phone (390×844, touch):
the QR code printed on the staff's sheet opens the anonymous form, answered with taps only in
under 30 seconds; the read-aloud button speaks the question in zh-CN (the page's speech
synthesis, spied on by an init script: no voice, no network); a daughter answering her father's
link is shown to staff as "由 女儿 代答"."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Task
from careloop.flows.ingest import create_api_key
from careloop.forms.models import Submission
from careloop.forms.requests import create_request

from .conftest import PASSWORD, UserFactory
from .test_browser import ARGS, CHROMIUM, server  # noqa: F401  (the server fixture)

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
# Records every utterance the page asks the browser to speak (text and language).
SPEECH_SPY = """
window.__spoken = [];
if (window.speechSynthesis) {
  window.speechSynthesis.speak = function (u) {
    window.__spoken.push({text: u.text, lang: u.lang});
  };
}
"""
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "locale": "zh-CN"}


def _sign_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{base}/")


def _phone(browser: Browser) -> Page:
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    context.add_init_script(SPEECH_SPY)
    return context.new_page()


@pytest.fixture
def apps(engine: Engine, user_factory: UserFactory) -> None:
    for app in ("common", "touchpoints"):
        import_bundle(APPS / app, actor="test")
    with transaction(engine) as session:
        for dept, zh in (("pharmacy", "药剂科"), ("outpatient_office", "门诊部"),
                         ("cardiology", "心内科")):
            session.add(Department(id=dept, name={"zh-CN": zh, "en": dept}))
    user_factory("pharm", "pharmacy_head", "pharmacy")
    user_factory("px", "px_office", None)


def test_qr_code_answered_with_taps_in_30_seconds_and_read_aloud(
        server: str, engine: Engine, apps: None) -> None:  # noqa: F811
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            office = browser.new_page(locale="zh-CN")
            _sign_in(office, server, "px")
            office.goto(f"{server}/touchpoints")
            card = office.locator("#qr-outpatient_pharmacy")
            assert "门诊药房" in card.inner_text()
            assert card.locator("svg").count() == 1  # drawn inline, no image request
            url = card.get_attribute("data-url")
            assert url is not None and "/t/outpatient_pharmacy." in url
            path = re.sub(r"^https?://[^/]+", "", url)

            phone = _phone(browser)
            started = time.monotonic()
            phone.goto(server + path)
            assert "门诊药房" in phone.locator("body").inner_text()
            assert phone.locator("button[value=save]").count() == 0  # nothing to resume
            speak = phone.locator("#f-rating button.read-aloud")
            speak.tap()
            spoken = phone.evaluate("window.__spoken")
            assert spoken and spoken[0]["lang"] == "zh-CN"
            assert "您对这里的服务满意吗" in spoken[0]["text"]
            phone.locator('#f-rating label:has(input[value="2"])').tap()
            phone.locator('#f-issues label[data-choice="waiting"]').tap()
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            with phone.expect_navigation():
                phone.locator('button[value="submit"]').tap()
            assert "感谢您的评价" in phone.locator("body").inner_text()
            assert time.monotonic() - started < 30
        finally:
            browser.close()
    with transaction(engine) as session:
        answer = session.scalars(select(Submission)).one()
        assert (answer.patient_id, answer.touchpoint_key, answer.answers["rating"]) == (
            None, "outpatient_pharmacy", 2)
        task = session.scalars(select(Task)).one()
        assert (task.assignee_role, task.department_id) == ("pharmacy_head", "pharmacy")


def test_a_daughter_answers_for_her_father_and_staff_see_it(
        server: str, engine: Engine, app: object, apps: None) -> None:  # noqa: F811
    with transaction(engine) as session:
        key = create_api_key(session, "his")
    his = TestClient(app)  # type: ignore[arg-type]
    for event_id, type_, payload in (
            ("p1", "patient.upserted", {"patient_id": "P1", "mrn": "M1", "name": "王建国",
                                        "gender": "male", "birth_date": "1940-04-02"}),
            ("a1", "encounter.admitted", {"encounter_id": "E1", "patient_id": "P1",
                                          "type": "outpatient", "department_id": "cardiology",
                                          "admitted_at": "2026-12-01T09:00:00+08:00"})):
        sent = his.post("/api/v1/events", headers={"X-API-Key": key},
                        json={"event_id": event_id, "type": type_, "payload": payload})
        assert sent.status_code == 200, sent.text
    with transaction(engine) as session:  # what a flow's send_form step does (its service)
        link = create_request(session, form_key="touchpoint_quick", patient_id="P1",
                              encounter_id="E1", channel="sms",
                              expires_at=now_utc() + timedelta(days=7))["url"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            phone = _phone(browser)
            phone.goto(server + link)
            phone.locator("#proxy summary").tap()
            phone.locator('#proxy label[data-choice="daughter"]').tap()
            assert "我是患者的女儿" in phone.locator("#proxy").inner_text()
            phone.locator('#f-rating label:has(input[value="4"])').tap()
            with phone.expect_navigation():
                phone.locator('button[value="submit"]').tap()
            assert "感谢" in phone.locator("body").inner_text()

            office = browser.new_page(locale="zh-CN")
            _sign_in(office, server, "px")
            with transaction(engine) as session:
                sub = session.scalars(select(Submission)).one()
                assert sub.proxy_relation == "daughter"
            office.goto(f"{server}/submissions/{sub.id}")
            assert "由 女儿 代答" in office.locator("#sub-proxy").inner_text()
            office.goto(f"{server}/patients/P1")
            assert "由 女儿 代答" in office.locator("body").inner_text()
        finally:
            browser.close()
