"""The patient's document pages in headless Chromium at a phone viewport (390×844): the links
the discharge messages actually carried open readable pages without sideways scrolling."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from playwright.sync_api import sync_playwright
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.flows.ingest import ingest
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import message_text

from .test_browser import ARGS, CHROMIUM, server  # noqa: F401  (the live-server fixture)
from .test_outbox_pages import APPS, PAYLOAD


def _links(engine: Engine) -> list[str]:
    for name in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(APPS / name, engine=engine)
    with transaction(engine) as session:  # reference data the HIS names by code
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
    # the server answers at the real clock: discharge an hour ago, so the links are valid now
    payload = {**PAYLOAD, "discharged_at": (now_utc() - timedelta(hours=1)).isoformat(),
               "summary": "出院诊断：原发性高血压（II 级）。" * 12 + "\n\n每日监测血压。"}
    with transaction(engine) as session:
        for event_id, kind, body in (
                ("p1", "patient.upserted", {"patient_id": "P1", "mrn": "M1", "name": "张三",
                                            "locale": "zh-CN"}),
                ("e1", "encounter.discharged", payload)):
            status, answer = ingest(session, {"event_id": event_id, "type": kind,
                                              "payload": body})
            assert status == 200, answer
    with transaction(engine) as session:
        bodies = [message_text(session, m)[1] for m in
                  session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()]
    return [m.group(1) for b in bodies if (m := re.search(r"https?://[^/\s]+(/d/\S+)", b))]


def test_document_pages_fit_a_phone(app: FastAPI, engine: Engine,
                                    server: str) -> None:  # noqa: F811
    assert Path(CHROMIUM).exists(), f"Chromium is required at {CHROMIUM}"
    summary, guidance = _links(engine)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844},
                                          locale="zh-CN")
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(server + summary)
            assert page.locator("h1").inner_text() == "出院小结"
            assert page.evaluate("document.body.scrollWidth") <= 390
            page.goto(server + guidance)
            assert page.locator(".medicine h2").inner_text() == "氨氯地平片"
            assert page.evaluate("document.body.scrollWidth") <= 390
            page.get_by_text("English").click()
            assert page.locator("h1").inner_text() == "Your take-home medicines"
            assert errors == []  # CSP: the stylesheets load, nothing inline is refused
        finally:
            browser.close()
