"""JSON request bodies are checked before any route parses them (issue 20).

:class:`JsonGuard` (ASGI middleware, inside the size limit of
:class:`~careloop.web.middleware.HardeningMiddleware`) buffers a JSON body — ``application/json``
or ``*+json``, or any body under ``/api/`` that is not a form, a file or a zip — and refuses it
with a 422 that names the field path when it is nested deeper than ``LIMITS.request_json_depth``,
has an array or object with more than ``LIMITS.request_json_items`` members
(``LIMITS.event_json_items`` for an HIS event), more than ``LIMITS.request_json_nodes`` values, or
a lone surrogate (``"\\ud800"``: no database can store it). The check is linear in the body
(itself bounded by ``CARELOOP_MAX_BODY_BYTES``); a large body is checked in a worker thread. A
body that is not JSON at all passes: the route says so in its own words.

    >>> check(b'{"tags": [1, 2, 3]}', items=2).render()
    'request.too-many-items at $.tags — an array of 3 items (limit: request_json_items = 10000)'
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop.engine.errors import Path, Problem
from careloop.engine.i18n import normalise_locale, t
from careloop.engine.limits import LIMITS

EVENTS_PATH = "/api/v1/events"
SURROGATE = re.compile("[\ud800-\udfff]")
THREAD_FROM = 64 * 1024  # bodies larger than this are checked off the event loop
NOT_JSON = ("application/x-www-form-urlencoded", "multipart/", "application/zip",
            "application/octet-stream", "application/x-zip")


def wants_check(path: str, content_type: str) -> bool:
    ctype = content_type.lower()
    if "json" in ctype:
        return True
    return path.startswith("/api/") and not ctype.startswith(NOT_JSON)


def _problem(code: str, message: str, limit: str, path: Path) -> Problem:
    shown = f"{message} (limit: {LIMITS.describe(limit)})" if limit else message
    return Problem(code, shown, path=path)


def _safe(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def check(body: bytes, *, items: int | None = None) -> Problem | None:
    """The first reason ``body`` may not be parsed by a route, or None (not JSON: None too)."""
    try:
        value = json.loads(body)
    except RecursionError:
        return _too_deep(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return walk(value, items=items if items is not None else LIMITS.request_json_items)


def walk(value: Any, *, items: int) -> Problem | None:
    """Depth, sizes and lone surrogates of a parsed value, iteratively (no recursion)."""
    depth_limit, nodes_limit = LIMITS.request_json_depth, LIMITS.request_json_nodes
    stack: list[tuple[Any, Path, int]] = [(value, (), 0)]
    nodes = 0
    while stack:
        node, path, depth = stack.pop()
        nodes += 1
        if nodes > nodes_limit:
            return _problem("request.too-many-nodes", f"more than {nodes_limit} values",
                            "request_json_nodes", ())
        if isinstance(node, str):
            if SURROGATE.search(node):
                return _problem("request.lone-surrogate",
                                "a text holds a lone surrogate (\\ud800–\\udfff)", "", path)
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth >= depth_limit:
            return _problem("request.too-deep", f"nested deeper than {depth_limit} levels",
                            "request_json_depth", path)
        if len(node) > items:
            what = "an array" if isinstance(node, list) else "an object"
            limit = "event_json_items" if items == LIMITS.event_json_items else \
                "request_json_items"
            return _problem("request.too-many-items", f"{what} of {len(node)} items", limit,
                            path)
        if isinstance(node, list):
            stack.extend((child, (*path, i), depth + 1)
                         for i, child in reversed(list(enumerate(node))))
            continue
        for key in reversed(list(node)):
            if SURROGATE.search(key):
                return _problem("request.lone-surrogate",
                                "a key holds a lone surrogate (\\ud800–\\udfff)", "",
                                (*path, _safe(key)))
            stack.append((node[key], (*path, key), depth + 1))
    return None


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{},]')


def _too_deep(body: bytes) -> Problem:
    """Where a body too deep for the parser passes the depth limit (scans only that far)."""
    limit = LIMITS.request_json_depth
    path: list[Any] = []
    for match in _TOKEN.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            if len(path) >= limit:
                break
            path.append(0 if token == b"[" else "")
        elif token in (b"]", b"}"):
            if path:
                path.pop()
        elif token == b",":
            if path and isinstance(path[-1], int):
                path[-1] += 1
        elif token.endswith(b":") and path and isinstance(path[-1], str):
            try:
                path[-1] = _safe(json.loads(token[:-1].rstrip()))
            except ValueError:
                path[-1] = "?"
    return _problem("request.too-deep", f"nested deeper than {limit} levels",
                    "request_json_depth", tuple(path))


class JsonGuard:
    """ASGI middleware: refuse a JSON body beyond the limits before the app reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if not wants_check(scope["path"], content_type):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app hears it
                await self.app(scope, _replay([], message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        items = LIMITS.event_json_items if scope["path"] == EVENTS_PATH else None
        if len(body) > THREAD_FROM:
            problem = await anyio.to_thread.run_sync(lambda: check(body, items=items))
        else:
            problem = check(body, items=items)
        if problem is None:
            await self.app(scope, _replay(chunks, None, receive), send)
            return
        await _refuse(scope, send, headers, problem)


def _replay(chunks: list[bytes], last: Message | None, receive_next: Receive) -> Receive:
    """A ``receive`` that gives the buffered body, then what the client does next."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                               "more_body": False}] if last is None else [last]

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await receive_next()  # after the body only a disconnect can come

    return receive


async def _refuse(scope: Scope, send: Send, headers: dict[bytes, bytes],
                  problem: Problem) -> None:
    locale = normalise_locale(headers.get(b"accept-language", b"").decode("latin-1") or None)
    request_id = str(scope.get("state", {}).get("request_id", "-"))
    detail = t("nonblock.request.refused", locale, path=problem.json_path,
               what=problem.message)
    body = json.dumps({"status": "rejected", "detail": detail, "code": problem.code,
                       "errors": [{"path": problem.json_path, "message": problem.message}],
                       "problems": [problem.to_json()], "request_id": request_id}).encode()
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
