"""No synchronous database work on the event loop (issue 20).

The model: every route, dependency and exception handler that may touch the database is a plain
``def`` (FastAPI and Starlette run it in the thread pool). An ``async def`` one is allowed only
when it is on :data:`PURE` below with the reason it never blocks: it reads the request body, or
it hands all its work to the thread pool (``off_loop``, ``run_in_threadpool``). Two checks:

* statically, every ``async def`` callable the app can run is on the allow-list;
* at run time, a statement or a pool checkout made on a thread that runs an event loop fails.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from careloop.engine.db import transaction
from careloop.flows.ingest import create_api_key
from careloop.web.app import create_app
from tests.web.conftest import UserFactory, login

# module.qualname -> why it never blocks the event loop
PURE: dict[str, str] = {
    "careloop.web.deps.submitted_csrf": "reads the CSRF header or form field; no database",
    "careloop.web.deps.request_body": "reads the body",
    "careloop.web.deps.csrf_protect": "compares tokens; the session is loaded in the thread pool",
    "careloop.web.scoping.enforce_patient_scope": "reads the route's mark; the patient check "
                                                  "runs in the thread pool",
    "careloop.web.routes_calls._read_call_form": "reads the posted form and the recording",
    "careloop.web.routes_calls._read_audio": "reads the body up to the recording limit",
    "careloop.web.routes_console._form_fields": "reads the posted form",
    "careloop.web.routes_forms._read_patient_post": "reads the posted form and files",
    "careloop.web.health.healthz": "liveness: no database, no thread pool",
    "careloop.web.health.readyz": "its checks run in the thread pool under a timeout",
    "fastapi.exception_handlers.websocket_request_validation_exception_handler":
        "FastAPI's own: closes a websocket (there are none)",
    "careloop.web.routes_auth.login_submit": "every check and the hashing in the thread pool",
    "careloop.web.routes_rules.test_ruleset": "the dry run in off_loop, the audit row in the "
                                              "thread pool",
    **{f"careloop.web.routes_builder.{name}": "the draft work in off_loop, audit rows in the "
                                              "thread pool"
       for name in ("put_draft", "validate", "diff", "publish", "preview", "preview_chart",
                    "try_alert", "try_rules", "simulate", "import_plan", "preview_dataset")},
    "careloop.web.routes_builder_try.explain": "the dry run and its audit row in off_loop",
}

# ASGI middleware is async by nature: each must do no blocking work itself.
PURE_MIDDLEWARE = {
    "careloop.web.middleware.HardeningMiddleware": "headers and the streamed size limit",
    "careloop.web.bodyguard.JsonGuard": "buffers a bounded body; large ones checked in a thread",
    "careloop.web.deadline.DatabaseDeadline": "a timer; the 503 page is static",
    "careloop.web.metrics.RequestMetrics": "a clock and counters",
    "careloop.web.bulkhead.EventsBulkhead": "a semaphore",
}


def _name(fn: Any) -> str:
    fn = inspect.unwrap(fn)
    return f"{fn.__module__}.{fn.__qualname__}".replace(".<locals>", "")


def _calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _routes(routes: Any, depends: tuple[Any, ...] = ()) -> Iterator[tuple[APIRoute, Any]]:
    """Every route (recursing into included routers) with the dependencies put on it by the
    app and the including routers."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            context = getattr(route, "include_context", None)
            extra = tuple(getattr(context, "dependencies", ()) or ())
            yield from _routes(original.routes, depends + extra)
        elif isinstance(route, APIRoute):
            yield route, depends


def _route_calls(route: APIRoute, depends: tuple[Any, ...]) -> Iterator[Any]:
    yield from _calls(route.dependant)
    for dep in depends:
        yield from _calls(get_dependant(path=route.path, call=dep.dependency))


def _is_async(fn: Any) -> bool:
    fn = inspect.unwrap(fn)
    call = getattr(fn, "__call__", None)  # noqa: B004 (a class instance used as dependency)
    return inspect.iscoroutinefunction(fn) or (
        not inspect.isfunction(fn) and inspect.iscoroutinefunction(call))


def test_every_async_callable_of_the_app_is_on_the_allow_list(engine: Engine) -> None:
    app = create_app()
    seen: set[str] = set()
    refused: list[str] = []
    routes = list(_routes(app.routes, tuple(app.router.dependencies)))
    assert len(routes) > 100
    for route, depends in routes:
        for fn in _route_calls(route, depends):
            if _is_async(fn):
                seen.add(_name(fn))
                if _name(fn) not in PURE:
                    refused.append(f"{route.path}: {_name(fn)}")
    for handler in app.exception_handlers.values():
        if _is_async(handler):
            seen.add(_name(handler))
            if _name(handler) not in PURE:
                refused.append(f"exception handler {_name(handler)}")
    for middleware in app.user_middleware:
        cls = middleware.cls  # type: ignore[attr-defined]
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name not in PURE_MIDDLEWARE:
            refused.append(f"middleware {name}")
    assert not refused, ("async def callables doing who knows what on the event loop "
                         f"(make them def, or add them to PURE with a reason): {refused}")
    # the allow-list names only what exists: a stale entry would hide a renamed function
    assert seen == set(PURE)


def test_the_static_check_would_refuse_an_async_route(engine: Engine) -> None:
    app = create_app()

    @app.get("/blocking")
    async def blocking() -> dict[str, int]:  # a route as the SRE found them
        with transaction() as session:
            return {"n": len(session.execute(__import__("sqlalchemy").text("select 1")).all())}

    route, depends = next((r, d) for r, d in _routes(app.routes, tuple(app.router.dependencies))
                          if r.path == "/blocking")
    assert [_name(fn) for fn in _route_calls(route, depends) if _is_async(fn)
            if _name(fn) not in PURE] == [_name(blocking)]


@pytest.fixture
def loop_guard(engine: Engine) -> Iterator[list[str]]:
    """Record every statement and pool checkout made on a thread running an event loop."""
    on_loop: list[str] = []

    def guard(*args: Any, **_: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: fine
        statement = next((a for a in args if isinstance(a, str)), "checkout")
        on_loop.append(statement.split("\n")[0][:60])

    event.listen(engine, "before_cursor_execute", guard)
    event.listen(engine.pool, "checkout", guard)
    try:
        yield on_loop
    finally:
        event.remove(engine, "before_cursor_execute", guard)
        event.remove(engine.pool, "checkout", guard)


def test_the_runtime_guard_sees_work_on_the_loop(loop_guard: list[str]) -> None:
    async def blocking() -> None:
        with transaction() as session:
            session.execute(__import__("sqlalchemy").text("select 1"))

    asyncio.run(blocking())
    assert loop_guard  # the guard is not blind


def test_no_request_touches_the_database_on_the_event_loop(
        engine: Engine, loop_guard: list[str], user_factory: UserFactory) -> None:
    with transaction() as session:
        key = create_api_key(session, "his")
    user_factory("nurse1", "nurse", None)
    app: FastAPI = create_app()
    with TestClient(app, base_url="http://testserver") as client:
        assert client.get("/healthz").status_code == 200
        event_body = {"event_id": "e-1", "type": "patient.discharged", "patient": {"mrn": "M1"}}
        assert client.post("/api/v1/events", json=event_body,
                           headers={"X-API-Key": key}).status_code < 500
        assert client.get("/f/no-such-token").status_code < 500
        assert client.post("/f/no-such-token", data={"a": "1"}).status_code < 500
        assert client.get("/login").status_code == 200
        csrf = login(client, "nurse1")  # the sign-in POST and the session's CSRF check
        assert client.get("/inbox").status_code == 200
        assert client.post("/tasks/999/form", data={"csrf_token": csrf}).status_code < 500
        assert client.post("/tasks/999/form", data={"csrf_token": "wrong"}).status_code == 403
        assert client.get("/no-such-page").status_code == 404  # the error page
        assert client.post("/api/v1/rules/none/test", json={},
                           headers={"X-CSRF-Token": csrf}).status_code < 500
    assert loop_guard == []
