"""Fixtures for the builder: apps imported from app_definitions/, users, signing in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.web import admin
from careloop.web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def apps(engine: Engine) -> list[str]:
    """common, obstetrics and satisfaction imported; one patient."""
    names = ["common", "obstetrics", "satisfaction"]
    for name in names:
        import_bundle(ROOT / "app_definitions" / name, engine=engine, actor="test")
    with transaction(engine) as session:
        session.add(Patient(id="p1", mrn="MRN-1", name="测试患者", phone="13812345678"))
    return names


def make_user(username: str, role: str) -> None:
    with transaction() as session:
        user = admin.create_user(session, username=username, display_name=username,
                                 password=PASSWORD)
        admin.grant(session, user, role, None)


@pytest.fixture
def app(engine: Engine) -> FastAPI:
    return create_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def login(client: TestClient, username: str) -> str:
    """Sign in through the form; sets the CSRF header on the client and returns the token."""
    page = client.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    response = client.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": match.group(1), "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    token: str = client.get("/api/v1/me").json()["csrf_token"]
    client.headers["X-CSRF-Token"] = token
    return token
