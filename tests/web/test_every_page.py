"""The acceptance test: every page each demo role reaches, in zh-CN and en, at 1366×900 and
390×844, read the way a person reads it.

The demo hospital is built once for the module through the public paths (``careloop up --demo``
with fewer patients), then a headless Chromium signs in as each demo role, follows every link in
the navigation plus one detail page of each kind (a patient, a task, a complaint, a submission, a
dashboard, a flow run), and also opens the patient's pages (a form link, a document link, a used
and an unknown link) and the sign-in page. A page fails on

- a raw i18n key (``web.nav.inbox``) or a code from a shipped definition (``reached_ok``,
  ``cardio_w1``) where its label belongs,
- ``null`` / ``None`` / ``undefined`` / ``NaN``,
- a numeric user id in a column or fact that names a person,
- a time that is not hospital local time (``2026-11-01T08:00:00Z``, ``…+00:00``),
- horizontal overflow (the page scrolls sideways),
- a console error (script errors, CSP refusals),
- an axe-core violation of impact serious or critical (axe-core comes from npm,
  ``tests/browser/node``, injected from ``node_modules``; never a CDN).

Screenshots of every page go to ``CARELOOP_SCREENSHOTS`` (default ``var/screenshots/``), kept by CI
as artefacts; ``CARELOOP_DOC_SCREENSHOTS=1`` also refreshes ``docs/screenshots/``.

Known leaks in pages other branches are fixing are allowed ONLY through :data:`KNOWN_LEAKS`
below (page → finding → reason); remove a row once its fix is merged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from sqlalchemy import Engine, select

from .test_browser import ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "browser" / "node"
AXE = NODE_DIR / "node_modules" / "axe-core" / "axe.min.js"

#: Leaks the test finds in pages being fixed on other branches. Each row: a regex on the page's
#: path, a regex on the finding, and why it is allowed for now. The coordinator removes rows as
#: the branches that fix them are merged (what a page shows depends on the demo's data, so a row
#: that matches nothing in one run is not proof of a fix: remove rows by hand).
KNOWN_LEAKS: tuple[tuple[str, str, str], ...] = ()

VIEWPORTS = {"desktop": (1366, 900), "phone": (390, 844)}
LOCALES = ("zh-CN", "en")
#: one demo account per role (web/demo.py creates them)
ROLES = {
    "system_admin": "admin", "security_admin": "security", "auditor": "auditor",
    "leadership": "leader", "px_office": "px", "followup_agent": "agent",
    "pharmacy_head": "pharmacy_head", "pharmacist": "pharmacist",
    "dept_director": "cardiology_director", "head_nurse": "cardiology_head_nurse",
    "doctor": "cardiology_doctor", "nurse": "cardio_w1_nurse",
}
#: detail pages: one of each kind, found among the links of the pages visited
DETAILS = {
    "patient": re.compile(r"^/patients/[A-Za-z0-9_-]+$"),
    "task": re.compile(r"^/tasks/\d+$"),
    "complaint": re.compile(r"^/complaints/\d+$"),
    "submission": re.compile(r"^/submissions/\d+$"),
    "dashboard": re.compile(r"^/reports/dashboards/[a-z0-9_]+$"),
    "flow_run": re.compile(r"^/flows/runs/\d+$"),
    "stage_summary": re.compile(r"^/patients/[A-Za-z0-9_-]+/summary$"),
    "monthly_report": re.compile(r"^/reports/monthly$"),
}
I18N_KEY = re.compile(
    r"\b(?:web|forms|flows|rules|reports|engine|common|docs)\.[a-z_]+\.[a-z_.]+")
NULLISH = re.compile(r"\b(?:null|None(?!\s+(?:of|or)\b)|undefined|NaN)\b")
UTC_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}|\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|\+00:00)\b")
PERSON_HEADERS = re.compile(r"负责人|处理人|操作人|执行人|指派|确认人|创建人|用户|Assignee|"
                            r"Assigned|Actor|Owner|Acknowledged by|Created by|User|Handled by",
                            re.I)


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    what: str

    def allowed(self) -> tuple[str, str, str] | None:
        for row in KNOWN_LEAKS:
            if re.search(row[0], self.path) and re.search(row[1], self.what):
                return row
        return None


def _codes() -> set[str]:
    """Codes the shipped definitions give a label to (choices, statuses, categories, tags…),
    plus the demo's department codes and the role codes. Only codes written like codes
    (``snake_case`` with an underscore) are looked for: ``good`` or ``yes`` are also words."""
    found: set[str] = set()

    paths: set[str] = set()  # a matrix's rows as a report names them: touchpoints.admission

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("code"), str) and "label" in node:
                found.add(node["code"])
            if isinstance(node.get("key"), str) and isinstance(node.get("rows"), list):
                paths.update(f"{node['key']}.{row['code']}" for row in node["rows"]
                             if isinstance(row, dict) and isinstance(row.get("code"), str))
            for key, value in node.items():
                if isinstance(key, str) and isinstance(value, dict) and (
                        "zh-CN" in value or "label" in value):
                    found.add(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in (ROOT / "app_definitions").rglob("*.yaml"):
        if "scenarios" in path.parts or "tests" in path.parts:
            continue
        walk(yaml.safe_load(path.read_text("utf-8")))
    from careloop.engine.registry import loaded_registry
    from careloop.web.demo import DEPARTMENTS, SERVICES

    found |= set(loaded_registry().catalogue("role").names())
    found |= {ward for dept in DEPARTMENTS for ward in dept.wards} | {s[0] for s in SERVICES}
    return {c for c in found if re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+", c)} | paths


# -- the page checks, run in the page ------------------------------------------------------------

READ_PAGE = """() => {
  const text = document.body ? document.body.innerText : "";
  const people = [];
  for (const table of document.querySelectorAll("table")) {
    const heads = [...table.querySelectorAll("thead th, tr:first-child th")]
      .map(th => th.innerText.trim());
    heads.forEach((head, i) => {
      if (!PERSON.test(head)) return;
      for (const row of table.querySelectorAll("tbody tr")) {
        const cell = row.children[i];
        const value = cell ? cell.innerText.trim() : "";
        if (/^\\d+$/.test(value)) people.push(head + ": " + value);
      }
    });
  }
  for (const dt of document.querySelectorAll("dl dt")) {
    const dd = dt.nextElementSibling;
    const value = dd ? dd.innerText.trim() : "";
    if (PERSON.test(dt.innerText) && /^\\d+$/.test(value)) people.push(dt.innerText + ": " + value);
  }
  // a table cell squeezed to a few characters a line (a phone reading a wide table that
  // should scroll in its box): more than four lines of text for a short value
  const squeezed = [];
  for (const cell of document.querySelectorAll("td, th")) {
    const value = cell.innerText.trim();
    if (value.length < 6 || value.length > 60 || cell.getClientRects().length === 0) continue;
    const style = getComputedStyle(cell);
    const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.4;
    const range = document.createRange();
    range.selectNodeContents(cell);
    const box = range.getBoundingClientRect();  // the text's own box, not the row's height
    if (box.height > 4.5 * line && box.width < 4 * parseFloat(style.fontSize))
      squeezed.push(value.slice(0, 30));
  }
  const root = document.scrollingElement || document.documentElement;
  const links = [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href"));
  const nav = [...document.querySelectorAll("nav.side a[href]")].map(a => a.getAttribute("href"));
  // identifiers a page shows on purpose, as identifiers (an admin's department ID column)
  const ids = [...document.querySelectorAll("code, .username")].map(e => e.innerText.trim())
    .filter(Boolean);
  return {text, ids, people, scroll: root.scrollWidth, width: window.innerWidth, links, nav,
          squeezed};
}""".replace("PERSON", "new RegExp(" + json.dumps(PERSON_HEADERS.pattern) + ", 'i')")

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => v.id + " (" + v.impact + "): "
         + v.nodes.slice(0, 3).map(n => n.target.join(" ") + " " + n.html.slice(0, 160))
           .join(", "));
}"""


class Crawler:
    def __init__(self, base: str, codes: set[str], shots: Path) -> None:
        self.base, self.shots = base, shots
        self.code_re = re.compile(r"(?<![\w./-])(" + "|".join(sorted(map(re.escape, codes),
                                                                        key=len, reverse=True))
                                  + r")(?![\w/-])")
        self.axe_source = AXE.read_text("utf-8")
        self.findings: list[Finding] = []
        self.visited: list[str] = []
        self.axed: set[tuple[str, str]] = set()

    def check(self, page: Page, path: str, name: str, *, axe: bool = True,
              errors: list[str]) -> dict[str, Any]:
        page.wait_for_load_state("load")
        if page.locator("body[data-dashboard]").count():
            page.wait_for_selector("body[data-dashboard-ready='1']", timeout=20000)
        data: dict[str, Any] = page.evaluate(READ_PAGE)
        text: str = data["text"]
        out = self.findings
        for match in I18N_KEY.finditer(text):
            out.append(Finding(path, f"i18n key: {match.group(0)}"))
        worded = text
        for ident in data["ids"]:
            worded = worded.replace(ident, " ")
        for match in self.code_re.finditer(worded):
            out.append(Finding(path, f"code: {match.group(1)}"))
        for match in NULLISH.finditer(text):
            out.append(Finding(path, f"nullish: {text[max(0, match.start() - 30):match.end()]!r}"))
        for match in re.finditer(r"\{\{link:[^}]{0,40}", text):  # a sealed patient link
            out.append(Finding(path, f"stored link placeholder: {match.group(0)}"))
        for match in UTC_TIME.finditer(text):
            out.append(Finding(path, f"utc time: {match.group(0)}"))
        for person in data["people"]:
            out.append(Finding(path, f"user id: {person}"))
        if data["scroll"] > data["width"]:
            out.append(Finding(path, f"overflow at {data['width']}px: {data['scroll']}px wide"))
        for value in data["squeezed"][:3]:
            out.append(Finding(path, f"squeezed cell at {data['width']}px: {value!r}"))
        for error in errors:
            out.append(Finding(path, f"console: {error[:200]}"))
        errors.clear()
        # axe-core once per kind of page and role (the same template in both languages)
        kind = (re.sub(r"/[A-Z]*\d+[^/?]*", "/{id}", path), name.split("-")[0])
        if axe and kind not in self.axed:
            self.axed.add(kind)
            page.evaluate(self.axe_source)  # through DevTools: the page's CSP stays on
            for violation in page.evaluate(AXE_RUN):
                out.append(Finding(path, f"axe: {violation}"))
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        self.for_docs(name)
        self.visited.append(f"{name} {path}")
        return data


    def for_docs(self, name: str) -> None:
        """``CARELOOP_DOC_SCREENSHOTS=1``: the main pages also become docs/screenshots/*.png."""
        if os.environ.get("CARELOOP_DOC_SCREENSHOTS") != "1":
            return
        for pattern, target in DOC_SHOTS:
            match = re.fullmatch(pattern, name)
            if match and not (DOCS_SHOTS / f"{target}-{match.group(1)}.png").exists():
                DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.shots / f"{name}.png",
                                DOCS_SHOTS / f"{target}-{match.group(1)}.png")


DOCS_SHOTS = ROOT / "docs" / "screenshots"
#: screenshot name → docs/screenshots/<target>-<view>.png (the first page that matches)
DOC_SHOTS = (
    (r"head_nurse-zh-CN-(desktop|phone)-inbox", "inbox"),
    (r"head_nurse-zh-CN-(desktop|phone)-patients_[A-Z0-9]+", "patient"),
    (r"leadership-zh-CN-(desktop|phone)-reports_dashboards_\w+", "dashboard"),
    (r"patient-zh-CN-(phone)-form_large", "form-large"),
    (r"patient-zh-CN-(phone)-used_link", "used-link"),
)


def _path_of(href: str, base: str) -> str | None:
    if href.startswith(base):
        href = href[len(base):]
    if not href.startswith("/") or href.startswith("//"):
        return None
    return href.split("#")[0] or None


def _new_page(context: BrowserContext, errors: list[str]) -> Page:
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def _sign_in(page: Page, base: str, username: str) -> None:
    from careloop.web.demo import DEMO_PASSWORD

    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", DEMO_PASSWORD)
    page.click("#login-submit")
    page.wait_for_load_state("load")
    assert "/login" not in page.url, f"{username} could not sign in"


def crawl_role(browser: Browser, crawler: Crawler, role: str, username: str) -> None:
    """Sign in as the role in each locale; every nav page and one detail page of each kind, at
    both viewports."""
    for locale in LOCALES:
        errors: list[str] = []
        context = browser.new_context(locale=locale, viewport={"width": 1366, "height": 900})
        try:
            page = _new_page(context, errors)
            _sign_in(page, crawler.base, username)
            home = _path_of(page.url, crawler.base) or "/"
            targets: list[str] = [home]
            details: dict[str, str] = {}
            linked_from: dict[str, str] = {}
            seen: set[str] = set()
            while targets:
                path = targets.pop(0)
                if path in seen:
                    continue
                seen.add(path)
                for view, (width, height) in VIEWPORTS.items():
                    # one load per page: the phone view is the same page narrowed (CSS media
                    # queries apply on resize)
                    page.set_viewport_size({"width": width, "height": height})
                    if view == "desktop":
                        response = page.goto(crawler.base + path)
                        status = response.status if response is not None else 0
                        if status >= 400:  # a link the role was shown but may not open
                            page.wait_for_load_state("load")
                            errors[:] = [e for e in errors if f"status of {status}" not in e]
                            crawler.findings.append(Finding(
                                path, f"HTTP {status} (linked from {linked_from.get(path)})"))
                    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "home"
                    data = crawler.check(page, path, f"{role}-{locale}-{view}-{slug}",
                                         errors=errors)
                    if view == "desktop":
                        for href in data["nav"]:
                            nav_path = _path_of(href, crawler.base)
                            if nav_path and nav_path not in seen:
                                targets.append(nav_path)
                        for href in data["links"]:
                            link = _path_of(href, crawler.base)
                            if link is None:
                                continue
                            for kind, pattern in DETAILS.items():
                                if kind not in details and pattern.match(link.split("?")[0]):
                                    details[kind] = link
                                    linked_from.setdefault(link, path)
                                    targets.append(link)
        finally:
            context.close()


# -- fixtures: the demo hospital once per module, one browser ---------------------------------


@pytest.fixture(scope="module")
def demo_server(db_engine: Engine) -> Iterator[str]:
    import threading
    import time

    import uvicorn
    from click.testing import CliRunner

    from careloop.web.app import create_app
    from careloop.web.cli import up

    from ..conftest import empty_tables
    from .test_browser import _free_port

    result = CliRunner().invoke(up, ["--no-serve", "--demo", "--patients",
                                     os.environ.get("CARELOOP_EVERY_PAGE_PATIENTS", "24"),
                                     "--bundles", str(ROOT / "app_definitions")])
    assert result.exit_code == 0, result.output
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        empty_tables(db_engine)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not AXE.is_file():  # the same command CI runs (.ci/test): offline from the lockfile
        npm = shutil.which("npm")
        assert npm, "npm is needed for axe-core (apt-get install npm)"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       capture_output=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def crawler(demo_server: str) -> Crawler:
    base = Path(os.environ.get("CARELOOP_SCREENSHOTS") or ROOT / "var" / "screenshots")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    shots = base / worker if worker else base
    shots.mkdir(parents=True, exist_ok=True)
    return Crawler(demo_server, _codes(), shots)


def _report(findings: list[Finding]) -> tuple[list[str], set[tuple[str, str, str]]]:
    failures, used = [], set()
    for finding in dict.fromkeys(findings):
        row = finding.allowed()
        if row is None:
            failures.append(f"{finding.path}: {finding.what}")
        else:
            used.add(row)
    return failures, used


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_page_a_role_reaches_reads_right(role: str, browser: Browser,
                                               crawler: Crawler) -> None:
    start = len(crawler.findings)
    crawl_role(browser, crawler, role, ROLES[role])
    failures, _ = _report(crawler.findings[start:])
    assert not failures, f"{role}:\n" + "\n".join(failures)


def test_patient_pages_and_sign_in_read_right(browser: Browser, crawler: Crawler) -> None:
    """The sign-in page; a form link, a document link, an education link, a used and an
    unknown link."""
    from datetime import timedelta

    from careloop.engine.clock import now_utc
    from careloop.engine.db import transaction
    from careloop.engine.domain import Encounter
    from careloop.engine.registry import loaded_registry
    from careloop.flows.documents import create_link
    from careloop.flows.ingest import ingest
    from careloop.flows.models import DischargeDocument
    from careloop.forms.models import FormRequest

    later = now_utc() + timedelta(days=7)
    with transaction() as session:
        encounter = session.scalars(select(Encounter).where(
            Encounter.status == "discharged").order_by(Encounter.id)).first()
        assert encounter is not None
    # the HIS sends the discharge summary with the discharge (the public events path)
    with transaction() as session:
        status, body = ingest(session, {
            "type": "encounter.discharged", "event_id": "every-page-summary",
            "occurred_at": encounter.discharged_at.isoformat(),
            "payload": {"encounter_id": encounter.id, "patient_id": encounter.patient_id,
                        "type": encounter.type, "department_id": encounter.department_id,
                        "ward_id": encounter.ward_id,
                        "admitted_at": encounter.admitted_at.isoformat(),
                        "discharged_at": encounter.discharged_at.isoformat(),
                        "summary": "出院诊断：冠心病。\n\n请按时服药，一周后复诊。"}})
        assert status == 200, body
    with transaction() as session:
        document = session.get(DischargeDocument, encounter.id)
        assert document is not None and document.summary
        create = loaded_registry().catalogue("service").get("forms.create_request")
        ids = {"form_key": "discharge_day3", "patient_id": document.patient_id,
               "encounter_id": document.encounter_id, "channel": "sms", "expires_at": later}
        form_token = create(session, **ids)["token"]
        used = create(session, **ids)
        session.get(FormRequest, used["request_id"]).status = "answered"
        link = create_link(session, kind="discharge_summary", encounter_id=document.encounter_id,
                           patient_id=document.patient_id, expires_at=later)
        assert link is not None
        # an education link the shipped day-1 flow sent during the demo, as its message holds it
        from careloop.flows.models import OutboxMessage
        from careloop.flows.outbox import message_text

        sent = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "education_article")
            .order_by(OutboxMessage.id.desc())).first()
        assert sent is not None, "the demo sends education articles"
        education = re.search(r"/e/[A-Za-z0-9_\-]+", message_text(session, sent)[1] or "")
        assert education is not None
    pages = [("login", "/login"), ("form", f"/f/{form_token}"),
             ("form_large", f"/f/{form_token}?lt=1"), ("document", link["url"]),
             ("used_link", f"/f/{used['token']}"), ("unknown_link", "/f/not-a-real-token"),
             ("education", education.group(0)),
             ("education_large", education.group(0) + "?large=1"),
             ("unknown_education_link", "/e/not-a-real-education-token")]
    start = len(crawler.findings)
    for locale in LOCALES:
        errors: list[str] = []
        context = browser.new_context(locale=locale)
        try:
            page = _new_page(context, errors)
            for view, (width, height) in VIEWPORTS.items():
                page.set_viewport_size({"width": width, "height": height})
                for name, path in pages:
                    patient = path.startswith(("/f/", "/d/", "/e/"))
                    sep = "&" if "?" in path else "?"
                    response = page.goto(crawler.base + path
                                         + (f"{sep}lang={locale}" if patient else ""))
                    status = response.status if response is not None else 0
                    if name.endswith("_link"):  # answered 404/410 on purpose, with a page
                        assert status in (404, 410), (name, status)
                        page.wait_for_load_state("load")
                        errors[:] = [e for e in errors if f"status of {status}" not in e]
                    shown = re.sub(r"^/([fde])/[^?]+", r"/\1/{token}", path)
                    crawler.check(page, f"{shown} ({name})", f"patient-{locale}-{view}-{name}",
                                  errors=errors)
        finally:
            context.close()
    failures, _ = _report(crawler.findings[start:])
    assert not failures, "\n".join(failures)


TARGETS = """() => [...document.querySelectorAll(
    "input:not([type=hidden]), select, textarea, button, a[href]")]
  .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== "hidden"
          && !e.closest("[hidden]") && !e.classList.contains("skip-link"))
  .map(e => { const target = e.closest("label.pill") || e;
              const r = target.getBoundingClientRect();
              return {what: e.outerHTML.slice(0, 80), w: r.width, h: r.height}; })
  .filter(r => r.h < 44 || r.w < 44)"""


def test_phone_nav_skip_link_print_and_large_text(browser: Browser, crawler: Crawler) -> None:
    """At 390 px the navigation folds behind a menu button; the skip link comes first; printed,
    a patient, a task, a complaint and a dashboard drop the navigation and keep each card (tile)
    whole; a large-text form page gives every control a 44 px target."""
    from datetime import timedelta

    from careloop.engine.clock import now_utc
    from careloop.engine.db import transaction
    from careloop.engine.domain import Task
    from careloop.engine.registry import loaded_registry
    from careloop.forms.models import Submission

    with transaction() as session:
        task = session.scalars(select(Task).where(  # a patient's task (not a touchpoint's)
            Task.department_id.in_(["cardiology", "cardio_w1", "cardio_w2"]),
            Task.patient_id.is_not(None)).order_by(Task.id)).first()
        complaint = session.scalars(select(Submission).where(
            Submission.form_key == "complaint").order_by(Submission.id)).first()
        assert task is not None and complaint is not None
    context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        _sign_in(page, crawler.base, "px")
        page.goto(f"{crawler.base}/inbox")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip-link"
        page.keyboard.press("Enter")  # to the page's content
        assert page.evaluate("document.activeElement.id") == "main"
        assert not page.locator("nav.side").is_visible()
        toggle = page.locator(".nav-toggle")
        assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
        box = toggle.bounding_box()
        assert box is not None and box["height"] >= 44
        toggle.click()
        assert page.locator("nav.side").is_visible()
        assert toggle.get_attribute("aria-expanded") == "true"
        page.set_viewport_size({"width": 1366, "height": 900})
        assert page.locator("nav.side").is_visible() and not toggle.is_visible()
        page.emulate_media(media="print")
        for path in (f"/patients/{task.patient_id}", f"/tasks/{task.id}",
                     f"/complaints/{complaint.id}",
                     "/reports/dashboards/service_quality_overview"):
            page.goto(crawler.base + path)
            page.wait_for_load_state("load")
            assert not page.locator("nav.side").is_visible(), path
            assert not page.locator("header.top form").first.is_visible(), path
            cards = page.locator(".card")
            assert cards.count() >= 1, path
            assert cards.first.evaluate("e => getComputedStyle(e).breakInside") == "avoid", path
            slug = re.sub(r"[^a-z0-9]+", "_", path)
            page.screenshot(path=str(crawler.shots / f"print-{slug}.png"), full_page=True)
        page.emulate_media(media="screen")
    finally:
        context.close()
    create = loaded_registry().catalogue("service").get("forms.create_request")
    with transaction() as session:
        made = create(session, form_key="inpatient_satisfaction", patient_id=task.patient_id,
                      encounter_id=None, channel="sms", expires_at=now_utc() + timedelta(days=3))
    context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.goto(f"{crawler.base}{made['url']}?lt=1")
        assert page.locator("body.large-text").count() == 1
        small = page.evaluate(TARGETS)
        assert small == [], small
        assert page.locator(".field-rating .anchor-min").first.inner_text() == "1 = 非常不满意"
        # the conditionally required question gets its marker when the condition holds
        page.locator('input[name="overall"][value="2"]').check(force=True)
        page.wait_for_selector('.req-if[data-req-for="low_reasons"]:not([hidden])')
        page.locator('input[name="overall"][value="5"]').check(force=True)
        page.wait_for_selector('.req-if[data-req-for="low_reasons"]', state="hidden")
    finally:
        context.close()
