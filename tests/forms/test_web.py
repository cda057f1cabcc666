"""HTTP: the form API and the patient page flow without JavaScript (plain form posts)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry
from careloop.forms.models import FormRequest, Submission
from careloop.forms.requests import hash_token
from careloop.web.app import create_app

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
INPATIENT = "satisfaction/forms/inpatient_satisfaction.yaml"


PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _sign_in(client: TestClient, username: str, role: str, department: str | None) -> None:
    """Create a staff user and sign in; later unsafe requests carry the CSRF header."""
    from careloop.web import admin

    with transaction() as session:
        user = admin.create_user(session, username=username, display_name=username,
                                 password=PASSWORD)
        admin.grant(session, user, role, department)
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    response = client.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": csrf.group(1), "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    client.headers["x-csrf-token"] = client.get("/api/v1/me").json()["csrf_token"]


@pytest.fixture
def staff(client: TestClient, patient: str) -> TestClient:
    _sign_in(client, "nurse_wang", "nurse", "cardio")
    return client


def _request(engine: Engine, form_key: str, days: int = 7) -> dict[str, str]:
    create = loaded_registry().catalogue("service")["forms.create_request"]
    with transaction(engine) as session:
        made: dict[str, str] = create(session, form_key=form_key, patient_id="p1",
                                      encounter_id="e1", channel="sms",
                                      expires_at=now_utc() + timedelta(days=days))
    return made


def test_get_form_and_versions(client: TestClient, staff: TestClient,
                               publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    response = client.get("/api/v1/forms/inpatient_satisfaction")
    assert response.status_code == 200
    data = response.json()
    assert data["version"] == 1 and "touchpoints" in data["field_keys"]
    assert client.get("/api/v1/forms/inpatient_satisfaction?version=9").status_code == 404
    assert client.get("/api/v1/forms/inpatient_satisfaction/fhir").json()["resourceType"] == (
        "Questionnaire")


def test_staff_api_needs_sign_in_and_scope(engine: Engine, client: TestClient, patient: str,
                                           publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    body = {"patient_id": patient, "answers": {"overall": 4, "nps": 9}}
    anonymous = client.post("/api/v1/forms/inpatient_satisfaction/submissions", json=body)
    assert anonymous.status_code in (401, 403)
    assert client.get("/api/v1/forms/inpatient_satisfaction").status_code in (401, 403, 303)
    with transaction(engine) as session:
        from careloop.engine.domain import Department

        session.add(Department(id="ortho", name={"zh-CN": "骨科", "en": "Orthopaedics"}))
    _sign_in(client, "nurse_ortho", "nurse", "ortho")
    other = client.post("/api/v1/forms/inpatient_satisfaction/submissions", json=body)
    assert other.status_code == 403
    with transaction(engine) as session:
        assert session.scalars(select(Submission)).first() is None


def test_api_submission_201_and_422(client: TestClient, staff: TestClient, patient: str,
                                    publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    bad = client.post("/api/v1/forms/inpatient_satisfaction/submissions", json={
        "patient_id": patient, "locale": "en",
        "answers": {"overall": 9, "nps": "x", "touchpoints": {"food": "7"}}})
    assert bad.status_code == 422
    assert {e["path"] for e in bad.json()["errors"]} == {"overall", "nps", "touchpoints.food"}
    ok = client.post("/api/v1/forms/inpatient_satisfaction/submissions", json={
        "patient_id": patient, "encounter_id": "e1", "channel": "phone",
        "entered_by": "someone_else", "answers": {"overall": 4, "nps": 9}})
    assert ok.status_code == 201, ok.text
    body = ok.json()
    with transaction() as session:
        stored = session.get(Submission, body["submission_id"])
        assert stored is not None
        assert (stored.channel, stored.entered_by) == ("phone", "nurse_wang")  # the signed-in user
    assert body["scores"]["csat_top_box"] == 1.0 and body["bands"] == {"nps_category": "promoter"}
    qr = client.get(f"/api/v1/submissions/{body['submission_id']}/fhir").json()
    assert qr["resourceType"] == "QuestionnaireResponse"


def test_token_is_long_hashed_and_bound(engine: Engine, client: TestClient, patient: str,
                                        publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    made = _request(engine, "inpatient_satisfaction")
    assert len(made["token"]) >= 32 and made["url"] == f"/f/{made['token']}"
    with transaction(engine) as session:
        row = session.get(FormRequest, made["request_id"])
        assert row is not None and row.token_hash == hash_token(made["token"])
        assert made["token"] not in (row.token_hash, row.id)
    assert client.get("/f/" + "x" * 32).status_code == 404
    expired = _request(engine, "inpatient_satisfaction", days=-1)
    assert client.get(expired["url"]).status_code == 410


def _post(client: TestClient, url: str, data: dict[str, object]) -> tuple[int, str]:
    response = client.post(url, data=data)  # type: ignore[arg-type]
    return response.status_code, response.text


def test_page_flow_without_js_save_resume_submit(engine: Engine, client: TestClient,
                                                 patient: str, publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    url = _request(engine, "inpatient_satisfaction")["url"]
    page = client.get(url + "?nps=9&lang=en")  # one-tap NPS link pre-fills the score
    assert page.status_code == 200
    assert re.search(r'name="nps" value="9" checked', page.text)
    assert re.search(r'id="f-low_reasons" data-key="low_reasons" hidden', page.text)
    status, text = _post(client, url, {"_page": "0", "_lang": "en", "_action": "next",
                                       "overall": "2", "nps": "9"})
    assert status == 422 and "This question needs an answer" in text  # low_reasons now needed
    status, text = _post(client, url, {"_page": "0", "_lang": "en", "_action": "save",
                                       "overall": "2", "nps": "9", "low_reasons": "waiting"})
    assert status == 200 and "Open the same link again" in text
    resumed = client.get(url)
    assert 'value="waiting" checked' in resumed.text
    status, text = _post(client, url, {"_page": "0", "_lang": "en", "_action": "next",
                                       "overall": "2", "nps": "9", "low_reasons": "waiting"})
    assert status == 200 and "Page 2 of 2" in text
    status, text = _post(client, url, {"_page": "1", "_lang": "en", "_action": "submit",
                                       "touchpoints.food": "2", "comment": "太冷"})
    assert status == 200 and "Thank you" in text
    with transaction(engine) as session:
        sub = session.scalars(select(Submission)).one()
        assert sub.answers["low_reasons"] == ["waiting"] and sub.channel == "sms"
        assert sub.bands == {"nps_category": "promoter"}
        request = session.scalars(select(FormRequest)).one()
        assert request.status == "answered" and request.draft is None
    assert client.get(url).status_code == 410  # one request, one submission


def test_visible_endpoint_for_the_script(engine: Engine, client: TestClient, patient: str,
                                         publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    url = _request(engine, "inpatient_satisfaction")["url"]
    low = client.post(url, data={"_page": "0", "_action": "visible", "overall": "1"}).json()
    high = client.post(url, data={"_page": "0", "_action": "visible", "overall": "5"}).json()
    assert "low_reasons" in low["visible"] and "low_reasons" not in high["visible"]
    assert client.get("/forms/static/forms.js").status_code == 200
    assert client.get("/forms/static/../plugin.py").status_code == 404


def test_version_1_submission_reads_with_version_1_labels(client: TestClient, staff: TestClient,
                                                         patient: str, publish) -> None:  # type: ignore[no-untyped-def]
    text = (APPS / "discharge/forms/discharge_day3.yaml").read_text("utf-8")
    publish(text)
    first = client.post("/api/v1/forms/discharge_day3/submissions", json={
        "patient_id": patient, "answers": {"recovery": "fair", "medication_clear": "yes",
                                           "overall": 4}}).json()
    edited = text.replace("en: So-so", "en: Neither good nor bad").replace(
        "How is your recovery since discharge?", "How do you feel since discharge?")
    assert publish(edited).version == 2
    second = client.post("/api/v1/forms/discharge_day3/submissions", json={
        "patient_id": patient, "answers": {"recovery": "fair", "medication_clear": "yes",
                                           "overall": 4}}).json()
    old = client.get(f"/api/v1/submissions/{first['submission_id']}?locale=en").json()
    new = client.get(f"/api/v1/submissions/{second['submission_id']}?locale=en").json()
    assert (old["form_version"], new["form_version"]) == (1, 2)
    assert old["answers"][0] == {"key": "recovery", "value": "fair", "display": "So-so",
                                 "label": "How is your recovery since discharge?"}
    assert new["answers"][0]["label"] == "How do you feel since discharge?"
    assert new["answers"][0]["display"] == "Neither good nor bad"
    assert client.get("/api/v1/forms/discharge_day3?version=1").json()["version"] == 1


def test_a_signed_in_nurse_can_use_a_patient_link(engine: Engine, client: TestClient,
                                                  staff: TestClient, publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    url = _request(engine, "inpatient_satisfaction")["url"]
    del client.headers["x-csrf-token"]  # a plain browser form post, not the API
    page = client.get(url + "?lang=en")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    refused = client.post(url, data={"_page": "0", "_action": "save", "overall": "3"})
    assert refused.status_code == 403
    saved = client.post(url, data={"_page": "0", "_action": "save", "overall": "3",
                                   "csrf_token": match.group(1)})
    assert saved.status_code == 200


PHOTO_FORM = """\
kind: form
key: wound_photo
title: {zh-CN: 伤口照片, en: Wound photo}
fields:
  - {key: photo, type: file, label: {zh-CN: 伤口照片, en: Photo of the wound}, required: true,
     accept: [image/png]}
"""


def test_an_upload_goes_to_the_field_whose_type_draws_a_file_input(
        engine: Engine, client: TestClient, patient: str, publish) -> None:  # type: ignore[no-untyped-def]
    publish(PHOTO_FORM)
    url = _request(engine, "wound_photo")["url"]
    page = client.get(url + "?lang=en")
    assert 'type="file" name="photo" accept="image/png"' in page.text
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    response = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit"},
                           files={"photo": ("wound.png", png, "image/png")})
    assert response.status_code == 200 and "Thank you" in response.text
    with transaction(engine) as session:
        answer = session.scalars(select(Submission)).one().answers["photo"]
    assert answer["name"] == "wound.png" and answer["size"] == len(png)
