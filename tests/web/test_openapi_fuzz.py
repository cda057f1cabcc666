"""Schemathesis against ``/api/v1/openapi.json``: no operation answers with a 5xx.

Runs every operation, grouped by the module that owns it (the web runtime's and each engine's
router, so a failure names its owner), signed in as a user holding many permissions and once
anonymously; a handful of generated cases per operation keeps it fast.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.engine.db import transaction
from careloop.engine.domain import User
from careloop.web import admin
from careloop.web.plugin import ROUTE_MODULES, WEB_ROUTE_MODULES
from careloop.web.scoping import iter_routes

from .conftest import login

OWNERS = {"web": ("careloop.web.app", *WEB_ROUTE_MODULES),
          **{name.rsplit("_", 1)[1]: (name,) for name in ROUTE_MODULES}}


def _owner_of(app: FastAPI) -> dict[tuple[str, str], str]:
    owners = {}
    for route in iter_routes(app.routes):
        for owner, modules in OWNERS.items():
            if route.endpoint.__module__ in modules:
                for method in route.methods:
                    owners[(method.upper(), route.path)] = owner
    return owners


def _check(operation: Any, headers: dict[str, str], cookies: dict[str, str],
           failures: list[str], succeeded: list[int]) -> Any:
    strategy = operation.as_strategy()

    @settings(max_examples=6, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: Any) -> None:
        case = data.draw(strategy)
        response = case.call(headers=headers, cookies=cookies)
        if response.status_code < 300:
            succeeded.append(1)
        if response.status_code >= 500:
            failures.append(f"{operation.method.upper()} {operation.path}: "
                            f"{response.status_code}")

    return run


def _fuzz(app: FastAPI, headers: dict[str, str], cookies: dict[str, str],
          owner: str = "web") -> tuple[list[str], int]:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    owners = _owner_of(app)
    failures: list[str] = []
    count = 0
    succeeded: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if owners.get((operation.method.upper(), operation.path)) != owner:
            continue
        count += 1

        _check(operation, headers, cookies, failures, succeeded)()
    assert count >= 8 or owner != "web"
    return failures, len(succeeded)


@pytest.mark.parametrize("owner", list(OWNERS))
def test_no_5xx_signed_in(app: FastAPI, client: TestClient, wards: dict[str, int],
                          owner: str) -> None:
    # separation of duties: the PX office and the auditor are different people
    failures: list[str] = []
    succeeded = 0
    for role in ("px_office", "auditor"):  # the API routes the others open are these's too
        with transaction() as session:
            user = admin.create_user(session, username=f"fuzz_{role}", display_name="fuzz",
                                     password="Correct-Horse-Battery-9")
            admin.grant(session, session.get(User, user.id) or user, role, None)
        token = login(client, f"fuzz_{role}")
        cookies = {"careloop_session": client.cookies.get("careloop_session") or ""}
        found, count = _fuzz(app, {"X-CSRF-Token": token}, cookies, owner)
        failures += found
        succeeded += count
    assert failures == []
    assert succeeded > 20 or owner != "web"


@pytest.mark.parametrize("owner", list(OWNERS))
def test_no_5xx_anonymous(app: FastAPI, wards: dict[str, int], owner: str) -> None:
    failures, _ = _fuzz(app, {}, {}, owner)
    assert failures == []
