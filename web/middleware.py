"""Hardening around every request: a request id, security headers, no-store, a body size limit.

Pure ASGI middleware (no body buffering): the size limit counts bytes as they arrive.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop.engine import logs

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def max_body_bytes() -> int:
    return int(os.environ.get("CARELOOP_MAX_BODY_BYTES", str(10 * 1024 * 1024)))


class BodyTooLarge(Exception):
    """Raised inside ``receive`` when a streamed body passes the limit."""


def header_list(path: str, request_id: str) -> list[tuple[bytes, bytes]]:
    headers = list(SECURITY_HEADERS)
    headers.append((b"x-request-id", request_id.encode()))
    # Everything but static assets may show patient data: never cache it.
    cache = b"public, max-age=3600" if path.startswith("/static/") else b"no-store"
    headers.append((b"cache-control", cache))
    return headers


class HardeningMiddleware:
    """Adds the request id (``scope["state"]["request_id"]``), headers and the size limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        raw = scope.get("raw_path") or b""
        if b"%00" in raw or b"\x00" in raw or b"%00" in (scope.get("query_string") or b""):
            await _refuse(send, request_id, 400, b"NUL byte in the URL")
            return
        limit = max_body_bytes()
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(send, request_id)
            return
        received = 0
        started = False
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if started:
                        raise BodyTooLarge()
                    # answer now; the app sees a disconnected client and its output is dropped
                    rejected = True
                    await _too_large(send, request_id)
                    return {"type": "http.disconnect"}
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
                names = {h[0].lower() for h in header_list("", "")}
                kept = [h for h in message.get("headers", []) if h[0].lower() not in names]
                message["headers"] = kept + header_list(scope["path"], request_id)
            await send(message)

        try:
            # every log line of the request carries its id and hides the personal values of the
            # patients the request loads (careloop.engine.logs); set, not reset, so the error
            # handlers outside this middleware (same task) see them too
            logs.start_request(request_id)
            await self.app(scope, limited_receive, send_with_headers)
        except Exception:
            if not rejected:
                raise


async def _too_large(send: Send, request_id: str) -> None:
    await _refuse(send, request_id, 413, b"request body too large")


async def _refuse(send: Send, request_id: str, status: int, detail: bytes) -> None:
    body = b'{"detail":"' + detail + b'","request_id":"' + request_id.encode() + b'"}'
    headers: list[Any] = [(b"content-type", b"application/json"),
                          (b"content-length", str(len(body)).encode()),
                          *header_list("", request_id)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
