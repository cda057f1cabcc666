"""The first seed journey in headless Chromium, as the people in it: the patient answers the
day-3 link on a phone-sized page (390×844), the cardiology head nurse finds the urgent task,
the pharmacy head opens the pharmacy's copy, and the patient-experience office's negative
feedback dashboard counts the dissatisfied answer. The HIS speaks through the events API; the
ticker's sweep is the scheduler's own ``run_due``."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle, list_bundles
from careloop.engine.clock import OFFSET_ENV, wall_clock_utc
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department
from careloop.engine.events import PENDING
from careloop.engine.models import DomainEventRow
from careloop.flows.ingest import create_api_key
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import message_text
from careloop.flows.scheduler import run_due

from .conftest import PASSWORD, UserFactory
from .test_browser import ARGS, CHROMIUM, server  # noqa: F401  (the server fixture)

APPS = Path(__file__).resolve().parents[2] / "app_definitions"


def _sign_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{base}/")


def _handled(engine: Engine, seconds: float = 30) -> None:
    """Wait until the event queue holds nothing pending (the server's dispatcher thread, or
    this process, handled every event the API acknowledged)."""
    deadline = time.monotonic() + seconds
    while True:
        drain(engine)
        with transaction(engine) as session:
            waiting = session.scalars(select(DomainEventRow.id).where(
                DomainEventRow.state == PENDING).limit(1)).first()
        if waiting is None:
            return
        assert time.monotonic() < deadline, "events still pending"
        time.sleep(0.1)


def test_dissatisfied_patient_reaches_head_nurse_pharmacy_and_px_dashboard(
        server: str, engine: Engine, app: object, user_factory: UserFactory,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's clock (a thread of this process) runs from five minutes after the day-3
    # questionnaire was due: the journey's own time, whatever the real date.
    day3 = datetime.fromisoformat("2026-12-04T09:35:00+08:00")
    monkeypatch.setenv(OFFSET_ENV, f"{(day3 - wall_clock_utc()).total_seconds():+.3f}")
    for path in list_bundles([APPS]):
        import_bundle(path, actor="test")
    with transaction(engine) as session:
        for dept, zh in (("cardiology", "心内科"), ("pharmacy", "药剂科")):
            session.add(Department(id=dept, name={"zh-CN": zh, "en": dept}))
        key = create_api_key(session, "his")
    for username, role, dept in (("hn", "head_nurse", "cardiology"),
                                 ("pharm", "pharmacy_head", "pharmacy"),
                                 ("px", "px_office", None)):
        user_factory(username, role, dept)
    discharged = datetime.fromisoformat("2026-12-01T10:00:00+08:00")
    his = TestClient(app)  # type: ignore[arg-type]
    for event_id, type_, payload in (
            ("p1", "patient.upserted", {"patient_id": "P1", "mrn": "M1", "name": "王建国",
                                        "gender": "male", "birth_date": "1958-04-02",
                                        "phone": "13800000001"}),
            ("d1", "encounter.discharged", {"encounter_id": "E1", "patient_id": "P1",
                                            "type": "inpatient", "department_id": "cardiology",
                                            "discharged_at": discharged.isoformat(),
                                            "diagnoses": ["I10"]})):
        sent = his.post("/api/v1/events", headers={"X-API-Key": key},
                        json={"event_id": event_id, "type": type_, "payload": payload})
        assert sent.status_code == 200, sent.text
    _handled(engine)  # the serving process's dispatcher thread handles them right after
    run_due(engine)
    with transaction(engine) as session:
        body = message_text(session, session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "discharge_care_day3")).one())[1]
    link = re.search(r"/f/[A-Za-z0-9_\-]+", body)
    assert link is not None, body

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            errors: list[str] = []
            phone = browser.new_page(locale="zh-CN", viewport={"width": 390, "height": 844},
                                     is_mobile=True, has_touch=True)
            phone.on("console", lambda m: errors.append(f"{phone.url}: {m.text}")
                     if m.type == "error" else None)
            phone.goto(server + link.group(0))
            phone.locator('input[name="recovery"][value="poor"]').check(force=True)
            phone.fill('textarea[name="symptoms"]', "头晕")  # shown once "poor" is chosen
            phone.locator('input[name="medication_clear"][value="no"]').check(force=True)
            phone.locator('input[name="overall"][value="2"]').check(force=True)
            phone.fill('textarea[name="comment"]', "用药指导不清楚")
            # nothing on the page is wider than the phone
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            phone.locator('button[value="submit"]').click()
            phone.wait_for_load_state()
            assert "感谢您的填写" in phone.locator("body").inner_text()
            _handled(engine)  # the page did not wait for the rules: the dispatcher runs them

            nurse = browser.new_page(locale="zh-CN")
            _sign_in(nurse, server, "hn")
            nurse.goto(f"{server}/inbox")
            urgent = nurse.locator("tr[data-task]", has_text="总体满意度 2 分")
            assert urgent.count() == 1
            assert nurse.locator("tr[data-task]", has_text="用药指导").count() == 0
            urgent.locator("a").first.click()
            nurse.wait_for_url(re.compile(r".*/tasks/\d+$"))

            pharmacy = browser.new_page(locale="zh-CN")
            _sign_in(pharmacy, server, "pharm")
            pharmacy.goto(f"{server}/inbox")
            copy = pharmacy.locator("tr[data-task]", has_text="用药指导不清楚")
            assert copy.count() == 1
            copy.locator("a").first.click()
            pharmacy.wait_for_url(re.compile(r".*/tasks/\d+$"))
            assert "用药指导不清楚" in pharmacy.locator("h1").inner_text()

            office = browser.new_page(locale="zh-CN")
            _sign_in(office, server, "px")
            office.goto(f"{server}/reports/dashboards/negative_feedback")
            office.wait_for_selector("body[data-dashboard-ready='1']")
            office.wait_for_function(
                "document.querySelectorAll('.tile svg, .tile canvas').length >= "
                "document.querySelectorAll('.tile').length")
            kpi = office.locator('.tile[data-chart="kpi_dissatisfied"]')
            assert "不满意反馈" in kpi.locator("h2").inner_text()
            # the KPI tile draws the count: one dissatisfied answer
            office.wait_for_function(
                "/(^|\\D)1(\\D|$)/.test([...document.querySelectorAll("
                "'.tile[data-chart=kpi_dissatisfied] svg text')].map(x => x.textContent)"
                ".join(' '))", timeout=10000)
            assert errors == [], "\n".join(errors)
        finally:
            browser.close()
