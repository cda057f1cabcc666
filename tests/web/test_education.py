"""Issue 19, capability 2 — the health-education library, through the pages and APIs people and
the HIS use, with the shipped ``education`` bundle: a rule sends the PCI medication article when
a patient leaves after a stent; the patient opens the absolute link and reads to the end; staff
see it on patient 360 and the library; a department publishes a new version without touching
the one sent; an uploaded PDF is served only through a link or to its department."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine import store
from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department
from careloop.flows.education import matches
from careloop.flows.education_models import EducationSend
from careloop.flows.ingest import create_api_key
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import message_text

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime.fromisoformat("2026-12-07T10:00:00+08:00")
LINK = re.compile(r"https://fu\.example-hospital\.cn(/e/[A-Za-z0-9_\-]+)")
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


@pytest.fixture
def hospital(engine: Engine, user_factory: UserFactory,
             monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CARELOOP_BASE_URL", "https://fu.example-hospital.cn")
    with frozen_now(NOW):
        with transaction(engine) as session:
            for key, zh, en in (("cardiology", "心内科", "Cardiology"),
                                ("endocrinology", "内分泌科", "Endocrinology")):
                session.add(Department(id=key, name={"zh-CN": zh, "en": en}))
        import_bundle(APPS / "common", actor="test")
        import_bundle(APPS / "education", actor="test")
        with transaction(engine) as session:
            key = create_api_key(session, "his")
    user_factory("dir_cardio", "dept_director", "cardiology")
    user_factory("dir_endo", "dept_director", "endocrinology")
    return key


def _discharge_after_pci(client: TestClient, key: str) -> None:
    his = {"X-API-Key": key}
    for event in (
            {"event_id": "p1", "type": "patient.upserted", "payload": {
                "patient_id": "P7", "mrn": "M-7", "name": "赵六", "phone": "13800000007",
                "locale": "zh-CN"}},
            {"event_id": "e1", "type": "encounter.discharged", "payload": {
                "encounter_id": "E7", "patient_id": "P7", "type": "inpatient",
                "department_id": "cardiology", "diagnoses": ["I25.103"], "procedures": ["PCI"],
                "discharged_at": "2026-12-07T09:00:00+08:00"}}):
        response = client.post("/api/v1/events", json=event, headers=his)
        assert response.status_code == 200, response.text
    drain()  # the flows and rules run from the event queue, after the API acknowledged


def _sent_link(patient: str) -> str:
    with transaction() as session:
        message = session.scalars(select(OutboxMessage).where(
            OutboxMessage.patient_id == patient,
            OutboxMessage.template_key == "education_article")).one()
        text = message_text(session, message)[1]
    found = LINK.search(text)
    assert found, text
    return found.group(1)


def test_rule_sends_the_article_the_patient_reads_it_and_staff_see_it(
        hospital: str, client: TestClient) -> None:
    with frozen_now(NOW):
        _discharge_after_pci(client, hospital)
        _discharge_after_pci(client, hospital)  # the HIS sends it again: nothing more is sent
        path = _sent_link("P7")
    patient = TestClient(client.app)
    with frozen_now(NOW + timedelta(hours=2)):
        page = patient.get(path)
        assert page.status_code == 200
        assert "支架术后坚持规律服药" in page.text and "<h2>为什么一定要按时吃药</h2>" in page.text
        assert "<script>" not in page.text  # only the same-origin script, by src
        assert '<script src="/static/education.js" defer></script>' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        english = patient.get(f"{path}?lang=en&large=1")
        assert "Taking your medicines after a coronary stent" in english.text
        assert 'class="large-text"' in english.text
        read = re.search(r'data-read="([^"]+)"', page.text)
        assert read is not None and read.group(1) == f"{path}/read"
        # another site's page cannot mark it read
        assert patient.post(read.group(1), headers={"Origin": "https://evil.example"}) \
            .status_code == 403
    with transaction() as session:
        row = session.scalars(select(EducationSend)).one()
        assert (row.status, row.read_at) == ("opened", None)
    with frozen_now(NOW + timedelta(hours=2, minutes=3)):
        assert patient.post(read.group(1)).status_code == 204
        assert patient.post(read.group(1)).status_code == 204  # once is enough
    with transaction() as session:
        row = session.scalars(select(EducationSend)).one()
        assert row.status == "read" and row.department_id == "cardiology"
        assert row.stage == "discharge" and row.article_key == "post_pci_medication"
        opened = session.scalars(select(OutboxMessage.opened_at).where(
            OutboxMessage.template_key == "education_article")).one()
        assert opened is not None  # the message's link opening is stamped like a form link's

    login(client, "dir_cardio")
    p360 = client.get("/patients/P7")
    assert p360.status_code == 200
    sends = re.search(r'<ul class="education-sends".*?</ul>', p360.text, re.S)
    assert sends is not None
    assert ("《支架术后坚持规律服药》（心内科）：2026-12-07 10:00 通过短信发送；"
            "2026-12-07 12:00 已打开；2026-12-07 12:03 已读完") in sends.group(0)
    library = client.get("/education")
    row_html = re.search(r'<tr data-item="post_pci_medication">.*?</tr>', library.text, re.S)
    assert row_html is not None
    assert re.findall(r"<td>(\d+)</td>", row_html.group(0)) == ["1", "1", "1"]
    dashboard = client.get("/api/v1/reports/dashboards/education").json()
    rows = dashboard["tiles"][0]["data"]["rows"]
    pci = next(r for r in rows if r["article"] == "支架术后坚持规律服药")
    assert (pci["sent"], pci["opened_rate"], pci["read_rate"]) == (1, 100, 100)

    with frozen_now(NOW + timedelta(days=91)):  # past the link's 90 days
        assert patient.get(path).status_code == 410
    assert patient.get("/e/" + "x" * 32).status_code == 404


def test_a_department_publishes_its_own_items_and_links_keep_their_version(
        hospital: str, client: TestClient) -> None:
    with frozen_now(NOW):
        _discharge_after_pci(client, hospital)
        path = _sent_link("P7")
    with transaction() as session:
        source = store.current(session, "education", "post_pci_medication")
        assert source is not None and source.version == 1
        body = yaml.safe_load(source.source_text)
    body["title"]["zh-CN"] = "支架术后按时服药（第二版）"

    other = TestClient(client.app)
    other.headers["X-CSRF-Token"] = login(other, "dir_endo")
    refused = other.post("/api/v1/builder/publish/education/post_pci_medication",
                         json={"app": "education", "body": body})
    assert refused.status_code == 403
    assert refused.json()["code"] == "education.not-your-department"
    assert "属于其他科室" in refused.json()["detail"]

    client.headers["X-CSRF-Token"] = login(client, "dir_cardio")
    published = client.post("/api/v1/builder/publish/education/post_pci_medication",
                            json={"app": "education", "body": body})
    assert published.status_code == 200, published.text
    assert published.json()["version"] == 2
    with transaction() as session:
        first = store.get_version(session, "education", "post_pci_medication", 1)
        assert first.title["zh-CN"] == "支架术后坚持规律服药"  # never overwritten
    with frozen_now(NOW):  # the link's validity runs on the hospital clock
        sent = TestClient(client.app).get(path)
    assert "支架术后坚持规律服药" in sent.text and "第二版" not in sent.text
    assert "第二版" in client.get("/education").text


def test_invalid_items_are_refused_with_located_errors(hospital: str,
                                                       client: TestClient) -> None:
    client.headers["X-CSRF-Token"] = login(client, "dir_cardio")
    body = {"kind": "education", "key": "bp_video", "title": {"zh-CN": "测血压", "en": "BP"},
            "format": "video", "department": "cardiology", "stages": ["discharge_day1"],
            "diseases": ["I15-I10"]}
    checked = client.post("/api/v1/builder/validate/education/bp_video",
                          json={"app": "education", "body": body}).json()
    found = {(p["code"], p["path"]) for p in checked["problems"]}
    assert ("education.missing-media", "$.format") in found
    assert ("education.bad-disease", "$.diseases[0]") in found
    refused = client.post("/api/v1/builder/publish/education/bp_video",
                          json={"app": "education", "body": body})
    assert refused.status_code == 422
    with transaction() as session:
        assert store.current(session, "education", "bp_video") is None


def test_uploaded_pdf_is_kept_and_served_with_access_checks(hospital: str,
                                                            client: TestClient) -> None:
    token = login(client, "dir_cardio")
    page = client.get("/education")
    assert page.status_code == 200 and 'id="edu-upload"' in page.text
    bad = client.post("/education/media", data={"department": "cardiology",
                                                 "csrf_token": csrf_from(page.text)},
                      files={"file": ("x.pdf", b"<html>not a pdf</html>", "application/pdf")})
    assert bad.status_code == 422 and "只支持 MP4、WebM 视频和 PDF 文件" in bad.text
    foreign = client.post("/education/media", data={"department": "endocrinology",
                                                     "csrf_token": token},
                          files={"file": ("x.pdf", PDF, "application/pdf")})
    assert foreign.status_code == 403
    done = client.post("/education/media", data={"department": "cardiology",
                                                  "csrf_token": token},
                       files={"file": ("低盐饮食.pdf", PDF, "application/pdf")},
                       follow_redirects=False)
    assert done.status_code == 303
    reference = done.headers["location"].rsplit("=", 1)[1]
    shown = client.get(done.headers["location"])
    assert f"media: {reference}" in shown.text and "低盐饮食.pdf" in shown.text
    preview = client.get(f"/education/media/{reference}")
    assert preview.status_code == 200 and preview.content == PDF
    assert preview.headers["content-type"] == "application/pdf"

    client.headers["X-CSRF-Token"] = token
    item = {"kind": "education", "key": "low_salt_leaflet",
            "title": {"zh-CN": "低盐饮食宣传单", "en": "Low-salt leaflet"}, "format": "pdf",
            "department": "cardiology", "stages": ["discharge"], "diseases": ["I10"],
            "media": reference}
    assert client.post("/api/v1/builder/publish/education/low_salt_leaflet",
                       json={"app": "education", "body": item}).status_code == 200
    rules = {"kind": "ruleset", "key": "leaflet_at_discharge",
             "title": {"zh-CN": "出院发放低盐宣传单", "en": "Leaflet at discharge"},
             "on": ["encounter.discharged"],
             "rules": [{"key": "hypertension", "title": {"zh-CN": "高血压", "en": "BP"},
                        "when": "encounter != None",
                        "then": [{"do": "send_education", "stage": "discharge",
                                  "articles": ["low_salt_leaflet"]}]}]}
    published = client.post("/api/v1/builder/publish/ruleset/leaflet_at_discharge",
                            json={"app": "education", "body": rules})
    assert published.status_code == 200, published.text
    with frozen_now(NOW):
        his = {"X-API-Key": hospital}
        for event in ({"event_id": "p9", "type": "patient.upserted", "payload": {
                "patient_id": "P9", "mrn": "M-9", "name": "钱七", "phone": "13800000008"}},
                {"event_id": "e9", "type": "encounter.discharged", "payload": {
                    "encounter_id": "E9", "patient_id": "P9", "type": "inpatient",
                    "department_id": "cardiology", "diagnoses": ["I10.x00x002"],
                    "procedures": ["PCI"], "discharged_at": "2026-12-07T09:00:00+08:00"}}):
            assert client.post("/api/v1/events", json=event, headers=his).status_code == 200
        drain()  # the rules run from the event queue, after the API acknowledged
    # the PCI rule's article is for ischaemic heart disease (I20-I25), not this patient's I10:
    # only the leaflet is sent, and its link shows the PDF
    with transaction() as session:
        keys = set(session.scalars(select(EducationSend.article_key)))
        messages = session.scalars(select(OutboxMessage).where(
            OutboxMessage.patient_id == "P9")).all()
        texts = [message_text(session, m)[1] for m in messages]
    assert keys == {"low_salt_leaflet"}
    leaflet = next(LINK.search(t).group(1) for t in texts  # type: ignore[union-attr]
                   if "低盐饮食宣传单" in t)
    phone = TestClient(client.app)
    with frozen_now(NOW):  # the link's validity runs on the hospital clock
        opened = phone.get(leaflet)
        served = phone.get(f"{leaflet}/media")
    assert f'href="{leaflet}/media"' in opened.text
    assert served.status_code == 200 and served.content == PDF
    assert served.headers["x-content-type-options"] == "nosniff"

    endo = TestClient(client.app)
    login(endo, "dir_endo")
    assert endo.get(f"/education/media/{reference}").status_code == 403
    assert TestClient(client.app).get(f"/education/media/{reference}",
                                      follow_redirects=False).status_code in (302, 303, 401)


def test_icd10_codes_prefixes_and_ranges() -> None:
    assert matches(["I10-I15"], "I13.200") and matches(["I10-I15"], "i10")
    assert not matches(["I10-I15"], "I20.000") and not matches(["I10-I15"], "I1")
    assert matches(["E11.5"], "E11.501") and not matches(["E11.5"], "E11.9")
    assert matches(["E10-E14", "I10"], "I10.x00x002")


def test_the_step_and_the_rule_action_take_the_same_options() -> None:
    """The rule action declares the step type's options as data (rules never import the flow
    engine); both offer exactly the stages an item can name."""
    import json

    from careloop.engine.registry import loaded_registry
    from careloop.flows.education_step import OPTIONS, SendEducation

    schema = json.loads((Path(__file__).resolve().parents[2] / "flows" / "schema"
                         / "education.json").read_text("utf-8"))
    stages = schema["properties"]["stages"]["items"]["enum"]
    action = loaded_registry().catalogue("action")["send_education"]
    assert action.schema["properties"]["stage"]["enum"] == stages
    assert OPTIONS["stage"]["enum"] == stages
    assert set(action.schema["properties"]) - {"do"} == set(SendEducation.options)
    assert loaded_registry().catalogue("step_type")["send_education"] is not None
