"""A database that does not answer gives a 503 page within the statement timeout, by itself.

:class:`DatabaseDeadline` (ASGI middleware) gives each request a
:class:`~careloop.engine.db.DatabaseWait` and runs the app as a task it watches: when a statement
or a connection ping of the request has been waiting longer than
``CARELOOP_DB_STATEMENT_TIMEOUT`` (a frozen server cannot enforce its own timeout) the client
gets :func:`unavailable` at once and the request's task is left to finish in the background
(its output is dropped). Errors that say the same — connecting timed out, no pooled connection
within ``CARELOOP_DB_CONNECT_TIMEOUT``, the server cancelled a statement — are answered by
:func:`unavailable_response` through the app's exception handlers. Recovery needs nothing: the
next request takes a fresh or pinged connection.

The page is static: rendered from this module without the database (no session, no navigation),
zh-CN first then English, with the hospital's name and phone (:mod:`careloop.engine.hospital`).
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop.engine.db import DatabaseWait, Timeouts, waiting
from careloop.engine.hospital import hospital_name, hospital_phone
from careloop.engine.i18n import t
from careloop.web.middleware import header_list

log = logging.getLogger("careloop.web")
RETRY_AFTER = "30"


def _page() -> bytes:
    parts = []
    for locale in ("zh-CN", "en"):
        phone = hospital_phone()
        call = (t("nonblock.unavailable.call", locale, phone=phone) if phone
                else t("nonblock.unavailable.call_department", locale))
        lang = "zh-CN" if locale == "zh-CN" else "en"
        title = t("nonblock.unavailable.title", locale)
        body = t("nonblock.unavailable.body", locale, hospital=hospital_name(locale))
        parts.append(f'<section lang="{lang}"><h1>{html.escape(title)}</h1>'
                     f"<p>{html.escape(body)}</p><p>{html.escape(call)}</p></section>")
    title = html.escape(t("nonblock.unavailable.title", "zh-CN"))
    return (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title></head><body>{''.join(parts)}</body></html>").encode()


def _json(request_id: str) -> bytes:
    import json

    return json.dumps({"detail": t("nonblock.unavailable.title", "en"),
                       "code": "database.unavailable", "request_id": request_id},
                      ensure_ascii=False).encode()


def unavailable(path: str, request_id: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of the 503 answer (HTML for pages, JSON under ``/api/``)."""
    api = path.startswith("/api/")
    body = _json(request_id) if api else _page()
    kind = b"application/json" if api else b"text/html; charset=utf-8"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
               (b"retry-after", RETRY_AFTER.encode()), *header_list(path, request_id)]
    return headers, body


def unavailable_response(request: Any) -> Any:
    """The same 503 as a Starlette response (for the exception handlers)."""
    from starlette.responses import Response

    rid = str(getattr(request.state, "request_id", "-"))
    headers, body = unavailable(request.url.path, rid)
    response = Response(body, status_code=503)
    response.raw_headers = headers
    return response


class DatabaseDeadline:
    """Answers 503 when a request's statement waits past the statement timeout."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = Timeouts.from_env().statement
        if scope["type"] != "http" or not limit:
            await self.app(scope, receive, send)
            return
        wait = DatabaseWait()
        token = waiting.set(wait)
        started = answered = False

        async def guarded(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the client already has the 503
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded))
        waiting.reset(token)
        while True:
            since = wait.since
            delay = limit if since is None else max(0.05, since + limit - time.monotonic())
            done, _ = await asyncio.wait({task}, timeout=delay)
            if done:
                task.result()  # its exception, if any, is the caller's
                return
            since = wait.since
            if since is not None and time.monotonic() - since >= limit and not started:
                answered = True
                task.add_done_callback(_drop)
                request_id = str(scope.get("state", {}).get("request_id", "-"))
                log.warning("database did not answer within %gs: 503 (request %s)", limit,
                            request_id)
                headers, body = unavailable(scope["path"], request_id)
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return


def _drop(task: asyncio.Future[Any]) -> None:
    """The abandoned request finished (the database answered at last): its outcome is moot."""
    if not task.cancelled() and task.exception() is not None:
        log.info("a request answered 503 earlier ended with %s",
                 type(task.exception()).__name__)
