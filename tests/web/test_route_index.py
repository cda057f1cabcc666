"""The included routers' guards (careloop.web.routeindex): every route resolves as before, and a
request skips the routers it cannot reach."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.routing import Match

from careloop.web.app import create_app
from careloop.web.routeindex import guard_included_routers, literal_prefix, unguard

_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")


def _sample(template: str) -> str:
    def one(match: re.Match[str]) -> str:
        return {"path": "a/b", "int": "7", "float": "1.5"}.get(match.group(2) or "", "x1")

    return _PARAM.sub(one, template)


def _paths(routes: list[Any], prefix: str = "") -> list[tuple[str, set[str]]]:
    out: list[tuple[str, set[str]]] = []
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is not None:
            out += _paths(router.routes, prefix + route.include_context.prefix)
        elif isinstance(getattr(route, "path", None), str):
            out.append((prefix + route.path, set(getattr(route, "methods", None) or {"GET"})))
    return out


def _answers(app: Any, method: str, path: str) -> list[Match]:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
             "query_string": b""}
    return [route.matches(dict(scope))[0] for route in app.router.routes]


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app()


def test_every_route_resolves_as_without_the_guards(app: Any) -> None:
    assert guard_included_routers(app) >= 25  # create_app guarded them; again is harmless
    paths = _paths(app.router.routes)
    assert len(paths) > 200
    tried = 0
    for template, methods in paths:
        path = _sample(template)
        variants = {path, path.rstrip("/") or "/", path + "/", path + "/zz", "/zz" + path}
        for candidate in variants:
            for method in sorted(methods | {"DELETE"}):
                guarded = _answers(app, method, candidate)
                unguard(app)
                try:
                    plain = _answers(app, method, candidate)
                finally:
                    guard_included_routers(app)
                assert guarded == plain, (method, candidate, template)
                tried += 1
    assert tried > 1000


def test_the_events_api_skips_the_routers_it_cannot_reach() -> None:
    from careloop.web.routeindex import _guarded

    app = create_app()  # as it serves: guarded by create_app
    asked: list[int] = []
    for index, route in enumerate(app.router.routes):
        inner = getattr(route.matches, "__wrapped__", None)
        if inner is None:
            continue

        def spy(scope: Any, inner: Any = inner, index: int = index) -> Any:
            asked.append(index)
            return inner(scope)

        vars(route)["matches"] = _guarded(spy, vars(route)["matches"].prefixes)
    try:
        answers = _answers(app, "POST", "/api/v1/events")
    finally:
        unguard(app)
        guard_included_routers(app)
    assert Match.FULL in answers
    # only routers holding a route under /api/v1/events… were asked (not the console, forms,
    # admin pages: before the guards, all 17 routers in front of it were)
    assert 0 < len(asked) <= 3, asked


def test_literal_prefix() -> None:
    assert literal_prefix("/api/v1/events") == ("api", "v1", "events")
    assert literal_prefix("/f/{token}") == ("f",)
    assert literal_prefix("/{token}") == ()
    assert literal_prefix("/") == ("",)
    assert literal_prefix("/p-{id}/x") == ()
