"""Fixtures for the builder: apps imported from app_definitions/, users, signing in."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.web import admin
from careloop.web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-Horse-Battery-9"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def apps(engine: Engine) -> list[str]:
    """common, obstetrics and satisfaction imported; one patient."""
    names = ["common", "discharge", "cardiology", "obstetrics", "satisfaction"]
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


@pytest.fixture
def server(app: FastAPI, apps: list[str]) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, in a thread, for the browser tests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def signed_in(browser: Browser, server: str, username: str,
              locale: str = "zh-CN") -> tuple[Page, list[str]]:
    """A 1600×1000 page signed in as ``username`` on ``/builder``, and the list its console
    errors and uncaught exceptions are collected in."""
    page = browser.new_page(locale=locale, viewport={"width": 1600, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server}/login?next=/builder")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{server}/builder")
    return page, errors


def open_advanced(page: Page, selector: str) -> None:
    """Open the closed "高级 / Advanced" disclosure ``selector`` (a ``<details>``), where the
    builder keeps keys, codes, expressions and the YAML text."""
    page.locator(selector).first.evaluate("d => { if (!d.open) d.open = true; }")
