"""POST /api/v1/rules/{key}/test: the builder's dry run over HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.db import transaction
from careloop.rules.models import RuleEvaluation
from careloop.web import admin
from careloop.web.app import create_app

PASSWORD = "Correct-Horse-Battery-9"
EVENT = {"type": "form.submitted", "payload": {
    "submission_id": 1, "form": "inpatient_satisfaction", "patient_id": "p1",
    "encounter_id": "e1", "answers": {"overall": 1, "comment": "饭菜难吃"}}}


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _login(client: TestClient, role: str) -> str:
    with transaction() as session:
        user = admin.create_user(session, username="author", display_name="author",
                                 password=PASSWORD)
        admin.grant(session, user, role, None)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    client.post("/login", data={"username": "author", "password": PASSWORD,
                                "csrf_token": token.group(1), "next": "/"},
                follow_redirects=False)
    csrf: str = client.get("/api/v1/me").json()["csrf_token"]
    return csrf


def test_dry_run_over_http(engine: Engine, client: TestClient, hospital: dict[str, int],
                           install: Callable[..., None]) -> None:
    install("common", "discharge", "cardiology", "satisfaction")
    csrf = _login(client, "px_office")
    response = client.post("/api/v1/rules/followup_routing/test", json=EVENT,
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["rule"] for m in body["matched"]] == ["dissatisfied"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RuleEvaluation)).scalar_one() == 0
    bad = client.post("/api/v1/rules/followup_routing/test", json={"payload": {"answers": [1]}},
                      headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 422
    bare = client.post("/api/v1/rules/followup_routing/test", json={
        "form": "inpatient_satisfaction", "patient_id": "p1", "answers": {"overall": 5}},
        headers={"X-CSRF-Token": csrf})
    assert [m["rule"] for m in bare.json()["matched"]] == ["satisfied"]
    missing = client.post("/api/v1/rules/nope/test", json=EVENT, headers={"X-CSRF-Token": csrf})
    assert missing.status_code == 404


def test_dry_run_needs_a_signed_in_author(engine: Engine, client: TestClient) -> None:
    response = client.post("/api/v1/rules/followup_routing/test", json=EVENT)
    assert response.status_code in (401, 403)
