"""The patient's pages say who sent them, anchor rating scales, mark conditionally required
questions, and tell a patient with a used, expired or unknown link who to call and what next."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry
from careloop.forms.models import FormRequest

INPATIENT = "satisfaction/forms/inpatient_satisfaction.yaml"


@pytest.fixture
def client(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from careloop.web.app import create_app

    monkeypatch.setenv("CARELOOP_HOSPITAL_NAME", "示例市第一人民医院")
    monkeypatch.setenv("CARELOOP_HOSPITAL_NAME_EN", "Example First People's Hospital")
    monkeypatch.setenv("CARELOOP_HOSPITAL_PHONE", "0571-8888 1234")
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _request(engine: Engine, form_key: str = "inpatient_satisfaction") -> dict[str, str]:
    create = loaded_registry().catalogue("service")["forms.create_request"]
    with transaction(engine) as session:
        made: dict[str, str] = create(session, form_key=form_key, patient_id="p1",
                                      encounter_id="e1", channel="sms",
                                      expires_at=now_utc() + timedelta(days=7))
    return made


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_form_page_names_the_hospital_and_its_phone(engine: Engine, client: TestClient,
                                                     patient: str, publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    made = _request(engine)
    page = client.get(made["url"])
    assert page.status_code == 200
    assert '<p class="hospital" id="hospital-name">示例市第一人民医院</p>' in page.text
    assert "0571-8888 1234" in _text(page.text)
    english = client.get(made["url"] + "?lang=en")
    assert "Example First People&#39;s Hospital" in english.text
    assert "Questions? Call 0571-8888 1234." in english.text


def test_rating_scales_have_anchor_words(engine: Engine, client: TestClient, patient: str,
                                         publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    page = client.get(_request(engine)["url"]).text
    # the rating without labels of its own: the default anchors; the NPS: the form's words
    assert "1 = 非常不满意" in page and "5 = 非常满意" in page
    assert "0 = 完全不可能" in page and "10 = 非常可能" in page
    assert 'aria-label="1 非常不满意"' in page
    # the star is inside the pill's face, not a second box (CSS styles .pill-face only)
    assert '<span class="pill-face">1<span class="star" aria-hidden="true">★</span></span>' \
        in page
    css = client.get("/forms/static/forms.css").text
    assert ".pill span" not in css


def test_conditionally_required_question_shows_its_marker_when_the_condition_holds(
        engine: Engine, client: TestClient, patient: str,
        publish) -> None:  # type: ignore[no-untyped-def]
    publish(INPATIENT)
    made = _request(engine)
    page = client.get(made["url"]).text
    marker = re.search(r'<span class="req-if" data-req-for="low_reasons"( hidden)?>', page)
    assert marker is not None and marker.group(1) == " hidden"  # not required yet
    # the page's script asks the server after each change: now it is required
    asked = client.post(made["url"], data={"_page": "0", "_action": "visible", "overall": "2"})
    assert asked.status_code == 200
    assert "low_reasons" in asked.json()["required"]
    assert "overall" in asked.json()["required"]
    fine = client.post(made["url"], data={"_page": "0", "_action": "visible", "overall": "5"})
    assert "low_reasons" not in fine.json()["required"]
    # saved with a low score, the page comes back with the marker shown
    client.post(made["url"], data={"_page": "0", "_action": "save", "overall": "1"})
    again = client.get(made["url"]).text
    assert '<span class="req-if" data-req-for="low_reasons">' in again
    script = client.get("/forms/static/forms.js").text
    assert "req-if" in script and "result.required" in script


@pytest.mark.parametrize("status, words", [
    ("answered", "已经填写提交过了"), ("expired", "已过有效期"), ("cancelled", "已被医院取消")])
def test_used_or_expired_link_says_who_to_call_and_what_next(
        engine: Engine, client: TestClient, patient: str, publish, status: str,  # type: ignore[no-untyped-def]
        words: str) -> None:
    publish(INPATIENT)
    made = _request(engine)
    with transaction(engine) as session:
        row = session.get(FormRequest, made["request_id"])
        assert row is not None
        row.status = status
    page = client.get(made["url"])
    assert page.status_code == 410
    text = _text(page.text)
    assert "示例市第一人民医院" in text and "0571-8888 1234" in text
    assert words in text
    assert "下一步" in text and "重新发送" in text
    assert 'href="tel:057188881234"' in page.text


def test_unknown_link_and_no_phone_configured(engine: Engine, client: TestClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARELOOP_HOSPITAL_PHONE")
    page = client.get("/f/not-a-real-token?lang=en")
    assert page.status_code == 404
    text = _text(page.text)
    assert "Example First People's Hospital" in text.replace("&#39;", "'")
    assert "Call the department that treated you" in text
    assert "What next" in text
    document = client.get("/d/not-a-real-token")
    assert document.status_code == 404 and "示例市第一人民医院" in document.text
    assert "下一步" in document.text
