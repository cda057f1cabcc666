"""Guards on the app's included routers: a request skips the routers its path cannot reach.

FastAPI (0.165) finds a request's route by asking every top-level route in turn; each included
router (one per plugin router: 30 here) answers by trying each of its own routes' patterns. The
HIS events API (``POST /api/v1/events``) came after 17 routers, ~110 pattern matches and ~0.3 ms
of CPU a request before its handler ran — the same for a patient's ``POST /f/{token}``.

:func:`guard_included_routers` gives each included router, once every router is in, the
literal leading segments of its routes' paths (``("api", "v1", "events")`` for the events API,
``("f",)`` for ``/f/{token}``, ``("",)`` for ``/``); a request whose path starts with none of them
gets ``Match.NONE`` at once, which is what the router would have answered after trying its
patterns. A router with a route whose first segment is a parameter (``/{token}``), or whose shape
is not understood, is not guarded: it is asked as before. The order of the routes, partial matches
(405) and the trailing-slash redirect are unchanged (tests/web/test_route_index.py resolves
every route of the app with and without the guards).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match, Mount

Prefix = tuple[str, ...]  # a route's literal leading path segments
Prefixes = frozenset[Prefix] | None  # None: any path


def literal_prefix(path: str) -> Prefix:
    """A route path's leading segments up to its first parameter: ``("api", "v1", "events")``
    for ``/api/v1/events``, ``("f",)`` for ``/f/{token}``, ``()`` for ``/{token}``, ``("",)``
    for ``/``."""
    out: list[str] = []
    for segment in path.lstrip("/").split("/"):
        if "{" in segment:
            break
        out.append(segment)
    return tuple(out)


def _union(parts: list[Prefixes]) -> Prefixes:
    known = [part for part in parts if part is not None]
    return frozenset().union(*known) if len(known) == len(parts) else None


def route_prefixes(route: Any, prefix: str = "") -> Prefixes:
    """The literal leading segments of every path ``route`` (under ``prefix``) can match;
    None when any path may match."""
    router = getattr(route, "original_router", None)
    if router is not None:  # an included router
        inner = getattr(getattr(route, "include_context", None), "prefix", None)
        routes = getattr(router, "routes", None)
        if not isinstance(inner, str) or routes is None:
            return None
        return _union([route_prefixes(child, prefix + inner) for child in routes])
    path = getattr(route, "path", None)
    if not isinstance(path, str):  # Host and other routes without a path
        return None
    full = prefix + path
    if isinstance(route, Mount) and not full.strip("/"):
        return None  # a mount at the root takes every path
    leading = literal_prefix(full)
    return frozenset({leading}) if leading else None  # ``/{token}``: any first segment


def _guarded(matches: Callable[[Any], tuple[Match, Any]],
             prefixes: frozenset[Prefix]) -> Callable[[Any], tuple[Match, Any]]:
    """``matches`` behind a look-up: the request's first segment, then (where the router's
    routes go deeper with literals) its leading segments."""
    by_length: dict[str, dict[int, set[Prefix]]] = {}  # first segment -> length -> prefixes
    for one in prefixes:
        by_length.setdefault(one[0], {}).setdefault(len(one), set()).add(one)
    # None: the first segment alone is a route's whole literal prefix, nothing more to check
    by_first = {first: None if 1 in lengths else tuple(lengths.items())
                for first, lengths in by_length.items()}

    def guarded(scope: Any) -> tuple[Match, Any]:
        path = scope.get("path")
        if type(path) is str and not scope.get("root_path"):
            segments = path.lstrip("/").split("/")
            first = segments[0]
            if first not in by_first:
                return Match.NONE, {}
            lengths = by_first[first]
            if lengths is not None:
                leading = tuple(segments)
                if not any(leading[:n] in known for n, known in lengths):
                    return Match.NONE, {}
        return matches(scope)

    guarded.__wrapped__ = matches  # type: ignore[attr-defined]
    guarded.prefixes = prefixes  # type: ignore[attr-defined]
    return guarded


def guard_included_routers(app: FastAPI) -> int:
    """Guard every top-level included router of ``app`` by its routes' literal prefixes; the number
    guarded. Call once, after the last ``include_router`` (``create_app`` does)."""
    guarded = 0
    for route in app.router.routes:
        if getattr(route, "original_router", None) is None:
            continue  # plain routes and mounts answer from one pattern already
        prefixes = route_prefixes(route)
        if prefixes is None:
            continue
        matches = getattr(route.matches, "__wrapped__", route.matches)
        vars(route)["matches"] = _guarded(matches, prefixes)  # an instance attribute
        guarded += 1
    return guarded


def unguard(app: FastAPI) -> None:
    """Take the guards off (tests compare the routes resolved with and without them)."""
    for route in app.router.routes:
        if hasattr(route.matches, "__wrapped__") and "matches" in vars(route):
            del route.matches
