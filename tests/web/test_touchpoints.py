"""Touchpoint QR codes through their public paths: the signature guards the code, the page's
visibility question stores nothing, one device's answers count once per place and at most
``per_hour`` an hour (in the database), anonymous answers are scoped by the place's department,
and a form too long for a touchpoint is refused when validating."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.engine.validate import validate_paths
from careloop.forms.models import Submission, TouchpointVisit
from careloop.forms.touchpoints import token_for

from .conftest import UserFactory, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
PLACES = ("registration_window", "cashier", "outpatient_pharmacy", "admission_office",
          "cardiology_clinic", "cardio_ward_1")


@pytest.fixture
def places(engine: Engine) -> dict[str, str]:
    """The shipped touchpoints and their QR paths."""
    for app in ("common", "touchpoints"):
        import_bundle(APPS / app, actor="test")
    with transaction(engine) as session:
        for dept in ("pharmacy", "outpatient_office", "cardiology"):
            session.add(Department(id=dept, name={"zh-CN": dept, "en": dept}))
        return {key: f"/t/{token_for(session, key)}" for key in PLACES}


def _answer(client: TestClient, path: str, rating: int = 2) -> int:
    return client.post(path, files=[("rating", (None, str(rating))), ("_lang", (None, "zh-CN")),
                                    ("_action", (None, "submit"))]).status_code


def _stored(engine: Engine) -> int:
    with transaction(engine) as session:
        return session.scalar(select(func.count(Submission.id))) or 0


def test_a_code_with_a_wrong_signature_is_refused(client: TestClient,
                                                  places: dict[str, str]) -> None:
    good = places["outpatient_pharmacy"]
    page = client.get(good)
    assert page.status_code == 200 and "门诊药房" in page.text
    assert "cl_device" in page.headers["set-cookie"]
    forged = good.replace("outpatient_pharmacy", "cashier")  # another place, same signature
    assert client.get(forged).status_code == 404
    assert "二维码无法识别" in client.get(forged).text
    assert _answer(client, forged) == 404
    assert client.get("/t/outpatient_pharmacy").status_code == 404


def test_the_visibility_question_stores_nothing(client: TestClient, engine: Engine,
                                                places: dict[str, str]) -> None:
    asked = client.post(places["cashier"], files=[("rating", (None, "2")),
                                                  ("_action", (None, "visible"))])
    assert asked.status_code == 200 and "issues" in asked.json()["visible"]
    assert _stored(engine) == 0


def test_one_device_counts_once_per_place_and_five_an_hour(client: TestClient, engine: Engine,
                                                            places: dict[str, str]) -> None:
    client.get(places["cashier"])  # the phone gets its device cookie
    assert _answer(client, places["cashier"]) == 200
    again = client.post(places["cashier"], files=[("rating", (None, "1"))])
    assert "已经评价过" in again.text and _stored(engine) == 1
    answers = [_answer(client, places[key]) for key in PLACES if key != "cashier"]
    assert answers == [200, 200, 200, 200, 429]  # the sixth answer within the hour
    assert _stored(engine) == 5
    other_phone = TestClient(client.app)
    other_phone.get(places["cardio_ward_1"])
    assert _answer(other_phone, places["cardio_ward_1"]) == 200  # another device, same address
    with transaction(engine) as session:
        devices = set(session.scalars(select(TouchpointVisit.device)))
    assert len(devices) == 2 and not any(re.fullmatch(r"[A-Za-z0-9_-]{24}", d) for d in devices)


def test_anonymous_answers_are_scoped_by_the_places_department(
        client: TestClient, engine: Engine, places: dict[str, str],
        user_factory: UserFactory) -> None:
    client.get(places["outpatient_pharmacy"])
    assert _answer(client, places["outpatient_pharmacy"]) == 200
    with transaction(engine) as session:
        sub = session.scalars(select(Submission)).one()
        assert (sub.patient_id, sub.department_id, sub.channel) == (None, "pharmacy", "qr")
    user_factory("pharm", "pharmacy_head", "pharmacy")
    user_factory("cardio_nurse", "nurse", "cardiology")
    staff = TestClient(client.app)
    login(staff, "pharm")
    seen = staff.get(f"/api/v1/submissions/{sub.id}")
    assert seen.status_code == 200 and seen.json()["touchpoint"] == "outpatient_pharmacy"
    assert "扫码评价：门诊药房" in staff.get(f"/submissions/{sub.id}").text
    outsider = TestClient(client.app)
    login(outsider, "cardio_nurse")
    assert outsider.get(f"/api/v1/submissions/{sub.id}").status_code == 403
    assert outsider.get(f"/submissions/{sub.id}").status_code == 403


def test_a_long_form_is_refused_for_a_touchpoint(tmp_path: Path) -> None:
    questions = "\n".join(f"  - {{key: q{i}, type: rating, label: {{zh-CN: 第{i}题, en: Q{i}}}}}"
                          for i in range(7))
    (tmp_path / "long.yaml").write_text(
        "kind: form\nkey: long_form\ntitle: {zh-CN: 长问卷, en: Long}\nfields:\n" + questions
        + "\n", "utf-8")
    (tmp_path / "desk.yaml").write_text(
        "kind: touchpoint\nkey: desk\ntitle: {zh-CN: 服务台, en: Desk}\ntype: window\n"
        "form: long_form\ndepartment: px_office\nowner: {role: px_office}\n", "utf-8")
    report = validate_paths([tmp_path])
    assert [(p.code, p.path) for p in report.problems] == [("touchpoint.form-too-long", ("form",))]
    assert "7 question(s)" in report.problems[0].message
