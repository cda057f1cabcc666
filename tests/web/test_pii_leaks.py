"""The small leaks of issue 14, part 8, through the real pages: identifiers typed by patients are
masked with an audited reveal; flow step errors and incidents hold no SQL, parameters or
addresses; a JSON island survives ``<!--<script>`` in a title; non-UTF-8 bundle files are refused
with a located error."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text

from careloop.engine.bundles import import_bundle, list_bundles, load_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Patient
from careloop.engine.models import AuditRow
from careloop.flows.models import Incident, StepRun
from careloop.flows.runtime import start
from careloop.flows.scheduler import run_due
from careloop.flows.steps import SetValues
from careloop.web.render import json_island

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
PHONE, OTHER_PHONE, ID_NUMBER = "138-1234-5678", "13912345678", "110101198506151234"


def _complaint(client: TestClient, description: str) -> int:
    page = client.get("/patients/P1/complaint")
    assert page.status_code == 200
    posted = client.post("/patients/P1/complaint", data={
        "csrf_token": csrf_from(page.text), "_page": "0", "_action": "submit",
        "channel_of_complaint": "phone", "category": "attitude", "department": "cardiology",
        "description": description, "wants_contact": "yes", "contact_phone": OTHER_PHONE},
        follow_redirects=False)
    assert posted.status_code == 303, posted.text
    return int(posted.headers["location"].rsplit("/", 1)[1])


def test_identifiers_typed_into_answers_are_masked_and_revealed_with_an_audit(
        client: TestClient, engine: Engine, user_factory: UserFactory) -> None:
    for path in list_bundles([APPS]):
        import_bundle(path, actor="test")
    with transaction() as session:
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
        session.add(Patient(id="P1", mrn="M1", name="王芳", attributes={}, consents={}))
    user_factory("px", "px_office", None)
    with frozen_now(T0):
        login(client, "px")
        complaint_id = _complaint(client, f"请回电 {PHONE}，身份证 {ID_NUMBER}，护士态度生硬")
        page = client.get(f"/submissions/{complaint_id}")
        assert page.status_code == 200
        for value in (PHONE, "13812345678", OTHER_PHONE, ID_NUMBER):
            assert value not in page.text
        assert "138****5678" in page.text and "139****5678" in page.text
        assert "110***********1234" in page.text and 'id="reveal-form"' in page.text
        shown = client.get(f"/complaints/{complaint_id}")
        assert PHONE not in shown.text and ID_NUMBER not in shown.text
        assert "138****5678" in shown.text
        api = client.get(f"/api/v1/submissions/{complaint_id}").text
        assert OTHER_PHONE not in api and ID_NUMBER not in api and PHONE not in api
        refused = client.post(f"/submissions/{complaint_id}/reveal",
                              data={"csrf_token": csrf_from(page.text), "reason": "  "})
        assert OTHER_PHONE not in refused.text and "role=\"alert\"" in refused.text
        revealed = client.post(f"/submissions/{complaint_id}/reveal",
                               data={"csrf_token": csrf_from(page.text), "reason": "回访"})
    assert revealed.status_code == 200
    assert OTHER_PHONE in revealed.text and PHONE in revealed.text and ID_NUMBER in revealed.text
    assert 'id="reveal-form"' not in revealed.text
    with transaction() as session:
        reveals = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.reveal").order_by(AuditRow.id)).all()
        assert [(r.object_type, r.object_id, r.patient_id, r.actor) for r in reveals] == [
            ("submission", str(complaint_id), "P1", "px")]
        assert reveals[0].details == {"fields": ["description", "contact_phone"],
                                      "reason": "回访"}


FAILING = """kind: flow
key: probe
title: {zh-CN: 探测, en: Probe}
trigger: {manual: true}
steps:
  - {key: lookup, type: set, set: {found: "True"}}
  - {key: done, type: end}
"""


def test_step_errors_and_incidents_hold_no_sql_parameters_or_addresses(
        client: TestClient, engine: Engine, user_factory: UserFactory, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import_bundle(APPS / "common", engine=engine)
    app = tmp_path / "probe"
    (app / "flows").mkdir(parents=True)
    (app / "app.yaml").write_text("id: probe\nname: {zh-CN: 探测, en: Probe}\nversion: 0.1.0\n"
                                  "format: 1\ndefault_locale: zh-CN\nrequires: [common]\n",
                                  "utf-8")
    (app / "flows" / "probe.yaml").write_text(FAILING, "utf-8")
    import_bundle(app, engine=engine)
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="王芳", attributes={}, consents={}))

    def failing(self: SetValues, x: Any) -> Any:
        # a real database error carrying personal data in its parameters, and an address
        x.session.execute(text("INSERT INTO patients (id, mrn, name, phone, locale, attributes, "
                               "consents, created_at, updated_at) VALUES "
                               "(:id, :mrn, :name, :phone, 'zh-CN', '{}', '{}', :at, :at)"),
                          {"id": "P2", "mrn": "M1", "name": "欧阳娜娜", "phone": OTHER_PHONE,
                           "at": T0})
        raise AssertionError("not reached")

    monkeypatch.setattr(SetValues, "run", failing)
    with caplog.at_level(logging.INFO), frozen_now(T0):
        with transaction(engine) as session:
            run_id = start(session, flow_key="probe", patient_id="P1", idempotency_key="r1")
        for minutes in (2, 10, 30, 90):
            run_due(engine, now=T0 + timedelta(minutes=minutes))
    with transaction(engine) as session:
        step = session.scalars(select(StepRun).where(StepRun.run_id == run_id)).one()
        incidents = session.scalars(select(Incident)).all()
        stored = [step.error or ""] + [i.error for i in incidents]
    assert incidents, "the step should end as an incident"
    for error in stored:
        assert error.startswith("IntegrityError: "), error
        assert "INSERT" not in error and "parameters" not in error
        assert "欧阳娜娜" not in error and OTHER_PHONE not in error
    logged = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    assert "INSERT INTO patients" in logged  # the full detail is in the log, redacted
    assert "欧阳娜娜" not in logged and OTHER_PHONE not in logged
    user_factory("it", "system_admin", None)
    login(client, "it")
    page = client.get("/admin/flows")
    assert page.status_code == 200 and "IntegrityError" in page.text
    assert "INSERT" not in page.text and "欧阳娜娜" not in page.text


def test_a_json_island_survives_comment_and_script_openers() -> None:
    title = 'x <!--<script> y </script><script>alert(1)</script> & \u2028'
    island = str(json_island({"title": title}))
    lowered = island.lower()
    assert "<!--" not in island and "<script" not in lowered and "</script" not in lowered
    assert json.loads(island) == {"title": title}


def test_a_dashboard_titled_with_a_comment_opener_still_renders(
        client: TestClient, engine: Engine, user_factory: UserFactory, tmp_path: Path) -> None:
    for name in ("common", "discharge", "cardiology", "satisfaction", "complaints"):
        import_bundle(APPS / name, engine=engine)
    app = tmp_path / "boards"
    (app / "reports").mkdir(parents=True)
    (app / "app.yaml").write_text("id: boards\nname: {zh-CN: 看板, en: Boards}\nversion: 0.1.0\n"
                                  "format: 1\ndefault_locale: zh-CN\n"
                                  "requires: [common, satisfaction]\n", "utf-8")
    title = "满意度 <!--<script> 概览"
    (app / "reports" / "board.yaml").write_text(
        "kind: dashboard\nkey: tricky_board\n"
        f"title: {{zh-CN: '{title}', en: '{title}'}}\n"
        "tiles:\n  - {chart: kpi_dissatisfied, width: 12}\n", "utf-8")
    import_bundle(app, engine=engine)
    user_factory("px", "px_office", None)
    login(client, "px")
    page = client.get("/reports/dashboards/tricky_board")
    assert page.status_code == 200, page.text
    island = re.search(r'<script type="application/json" id="payload">(.*?)</script>',
                       page.text, re.S)
    assert island is not None
    assert "<!--" not in island.group(1) and "<script" not in island.group(1)
    payload = json.loads(island.group(1))
    assert title in json.dumps(payload, ensure_ascii=False)
    assert unescape(title) == title


def test_bundle_files_that_are_not_utf8_are_refused_at_their_byte(tmp_path: Path) -> None:
    app = tmp_path / "gbk"
    (app / "forms").mkdir(parents=True)
    (app / "app.yaml").write_text("id: gbk\nname: {zh-CN: 编码, en: Encoding}\nversion: 0.1.0\n"
                                  "format: 1\ndefault_locale: zh-CN\n", "utf-8")
    source = "kind: form\nkey: f\ntitle: {zh-CN: 满意度, en: Survey}\n"
    (app / "forms" / "f.yaml").write_bytes(source.encode("gbk"))
    bundle = load_bundle(app)
    (document,) = bundle.documents
    (problem,) = document.problems
    assert problem.code == "source.encoding"
    assert (problem.line, problem.column) == (3, 16)
    assert problem.file is not None and problem.file.endswith("forms/f.yaml")
    assert "byte 33" in problem.message
    assert "\ufffd" not in document.text
    # the zip form of the same bundle is refused the same way
    import zipfile

    archive = tmp_path / "gbk.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in app.rglob("*"):
            if file.is_file():
                zipped.write(file, file.relative_to(app).as_posix())
    (zipped_doc,) = load_bundle(archive).documents
    assert [(p.code, p.line, p.column) for p in zipped_doc.problems] == [
        ("source.encoding", 3, 16)]
