"""HTTP: a department head's dashboard, drill-down and export through the app; the Vega bundle."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow
from careloop.web import admin
from careloop.web.app import create_app

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def client(engine: Engine, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("CARELOOP_HOME", str(tmp_path))
    with TestClient(create_app(), base_url="http://testserver") as c:  # type: ignore[arg-type]
        yield c


def _sign_in(client: TestClient, username: str, role: str, dept: str | None) -> None:
    with transaction() as session:
        user = admin.create_user(session, username=username, display_name=username,
                                 password=PASSWORD)
        admin.grant(session, user, role, dept)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": token.group(1), "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text


def test_department_head_over_http(client: TestClient, engine: Engine, seed: Any) -> None:
    for app in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(APPS / app, engine=engine)
    at = datetime(2026, 3, 1, 4, tzinfo=UTC)
    for dept, v in (("card", 10), ("card", 0), ("ortho", 9)):
        seed.submit(dept, {"nps": v, "overall": 4}, at=at, doctor=5)
    _sign_in(client, "hn_card", "head_nurse", "card")
    payload = client.get("/api/v1/reports/dashboards/service_quality_overview").json()
    rows = [r for t in payload["tiles"] for r in t["data"]["rows"]]
    assert {r["department"] for r in rows if "department" in r} == {"card"}
    drill = client.get("/api/v1/reports/dashboards/service_quality_overview/drill/"
                       "nps_by_department", params={"path": "*/card"}).json()
    assert drill["level"] == "doctor" and drill["rows"][0]["responses"] == 2
    csv_text = client.get("/api/v1/reports/dashboards/service_quality_overview/tiles/"
                          "nps_by_department.csv").text
    assert "ortho" not in csv_text and csv_text.splitlines()[1].startswith("card,2,")
    png = client.get("/api/v1/reports/dashboards/service_quality_overview/tiles/"
                     "nps_by_department.png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    page = client.get("/reports/dashboards/service_quality_overview")
    assert '<script src="/reports/static/vega-bundle.js">' in page.text
    assert "cdn" not in page.text.lower()
    with transaction() as session:
        actions = session.scalars(select(AuditRow.action)).all()
    assert actions.count("report.export") == 2


def test_reports_need_sign_in_and_bundle_is_served(client: TestClient) -> None:
    response = client.get("/api/v1/reports/dashboards/service_quality_overview",
                          follow_redirects=False)
    assert response.status_code in (302, 303, 401)
    bundle = client.get("/reports/static/vega-bundle.js")
    assert bundle.status_code == 200 and "window.vegaEmbed" in bundle.text
