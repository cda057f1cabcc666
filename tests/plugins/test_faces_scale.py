"""The example faces pain-scale field type (careloop_example/faces_scale.py) through the public
paths: a form using it validates (a wrong option fails with a located error), the patient page
draws the faces with its stylesheet, a post stores the number, scores use it, staff read its
words, FHIR exports its item type, and the builder's palette offers it with its panel."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.check import check_documents
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.errors import Problem
from careloop.engine.registry import loaded_registry
from careloop.engine.sources import load_text
from careloop.forms.fhir import export_questionnaire, export_response
from careloop.forms.models import Submission, SubmissionAnswer
from careloop.forms.pages import describe
from careloop.forms.publish import publish_form
from careloop.forms.runtime import load_form
from careloop.web import admin
from careloop.web.app import create_app
from careloop.web.display import Display, answers_view

from .conftest import registered

FORM = """\
kind: form
key: pain_check
title: {zh-CN: 疼痛随访, en: Pain follow-up}
fields:
  - {key: pain, type: faces_scale, label: {zh-CN: 现在有多痛？, en: "How much does it hurt?"},
     required: true, show_numbers: true}
  - {key: sleep, type: integer, label: {zh-CN: 睡了几小时, en: Hours slept}, min: 0, max: 24}
scores:
  - {key: pain_score, method: sum, fields: [pain],
     bands: [{code: high, label: {zh-CN: 高, en: High}, min: 6}]}
"""
PASSWORD = "Correct-Horse-Battery-9"


def errors(text: str) -> list[Problem]:
    result = check_documents([load_text(text, "pain_check.yaml")],
                             external=lambda _kind, _key: {"stored": True})
    return [p for p in result.errors if p.severity == "error"]


@pytest.fixture(autouse=True)
def faces() -> Iterator[None]:
    from careloop_example import faces_scale

    with registered(faces_scale, "field_type", "faces_scale"):
        yield


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with transaction(engine) as session:
        session.add(Department(id="ortho", name={"zh-CN": "骨科", "en": "Orthopaedics"}))
        session.add(Patient(id="p1", mrn="MRN001", name="测试患者", gender="female",
                            birth_date=date(1950, 5, 1), phone="13800138000", locale="zh-CN"))
        session.flush()
        session.add(Encounter(id="e1", patient_id="p1", type="inpatient",
                              department_id="ortho", status="discharged",
                              discharged_at=now_utc()))
        publish_form(session, FORM, source_path="pain_check.yaml", actor="tester")
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def test_a_form_with_faces_validates_and_a_wrong_option_is_located() -> None:
    assert errors(FORM) == []
    wrong = FORM.replace("show_numbers: true", "show_numbers: sometimes")
    assert [(p.code, p.json_path, p.line) for p in errors(wrong)] == [
        ("form.option", "$.fields[0].show_numbers", 6)]
    unknown = FORM.replace("show_numbers: true", "show_number: true")
    assert [(p.code, p.json_path) for p in errors(unknown)] == [
        ("form.unknown-option", "$.fields[0].show_number")]


def test_patient_page_faces_post_score_staff_display_and_fhir(engine: Engine,
                                                              client: TestClient) -> None:
    create = loaded_registry().catalogue("service")["forms.create_request"]
    with transaction(engine) as session:
        url = create(session, form_key="pain_check", patient_id="p1", encounter_id="e1",
                     channel="sms", expires_at=now_utc() + timedelta(days=7))["url"]
    page = client.get(url + "?lang=en")
    assert page.status_code == 200
    # six large targets, each with its words; the type's own stylesheet is linked and served
    assert len(re.findall(r'<label class="face" data-value="\d+"><input type="radio" '
                          r'name="pain"', page.text)) == 6
    assert "4 — Hurts a little more" in page.text and "<legend>How much does it hurt?" in page.text
    assert '/forms/static/types/faces_scale.css' in page.text
    css = client.get("/forms/static/types/faces_scale.css")
    assert css.status_code == 200 and "min-height: 48px" in css.text
    assert client.get("/forms/static/types/integer.css").status_code == 404

    bad = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit", "pain": "5"})
    assert bad.status_code == 422  # not a face
    done = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                  "pain": "6", "sleep": "5"})
    assert done.status_code == 200 and "Thank you" in done.text
    with transaction(engine) as session:
        sub = session.scalars(select(Submission)).one()
        assert sub.answers == {"pain": 6, "sleep": 5}
        assert sub.scores == {"pain_score": 6.0} and sub.bands == {"pain_score": "high"}
        leaves = session.scalars(select(SubmissionAnswer).where(
            SubmissionAnswer.field_key == "pain")).all()
        assert [(a.value_number, a.value_text) for a in leaves] == [(6.0, None)]
        sub_version = sub.form_version
        _, spec = load_form(session, "pain_check", sub_version)
        answers = dict(sub.answers)
    shown = {e["key"]: e["display"] for e in describe(spec, answers, "zh-CN")}
    assert shown["pain"] == "6 — 比较痛"
    assert describe(spec, answers, "en")[0]["display"] == "6 — Hurts even more"
    # the console's answer view (task page, patient 360) reads it through the type as well
    view = dict(answers_view(Display("en"), "pain_check", sub_version, answers))
    assert view["How much does it hurt?"] == "6 — Hurts even more"
    assert view["Hours slept"] == "5"

    questionnaire = export_questionnaire(spec, locale="en")
    item = questionnaire["item"][0]
    assert item["type"] == "integer" and item["linkId"] == "pain"
    assert {e["valueInteger"] for e in item["extension"]} == {0, 10}
    response = export_response(spec, answers, patient_id="p1", authored="2026-03-01")
    assert response["item"][0] == {"linkId": "pain", "answer": [{"valueInteger": 6}]}


def test_builder_palette_offers_faces_with_its_panel(client: TestClient) -> None:
    with transaction() as session:
        user = admin.create_user(session, username="px_a", display_name="px_a",
                                 password=PASSWORD)
        admin.grant(session, user, "px_office", None)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    client.post("/login", data={"username": "px_a", "password": PASSWORD,
                                "csrf_token": token.group(1), "next": "/"})
    palette = {t["name"]: t for t in client.get("/api/v1/builder/field-types").json()}
    faces = palette["faces_scale"]
    assert faces["title"]["zh-CN"] == "面部表情疼痛评分"
    assert faces["options"]["show_numbers"]["x-label"]["en"] == "Show the numbers"
    assert faces["fhir"] == "integer" and faces["answerable"] is True
