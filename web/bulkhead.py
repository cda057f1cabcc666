"""HIS senders cannot take every thread and connection: at most ``CARELOOP_EVENTS_CONCURRENCY``
(default 2) ``POST /api/v1/events`` run at once in a process; the others wait their turn on the
event loop (no thread, no database connection held), so patient pages and the inbox always find
a worker thread and a pooled connection (the pool has 5 + 10 overflow). Two is enough: one
process runs Python on about one core (the interpreter lock), so more concurrent ingests only
queue for it and slow every page; more event throughput comes from more processes.
"""

from __future__ import annotations

import asyncio
import os

from starlette.types import ASGIApp, Receive, Scope, Send

EVENTS_PATH = "/api/v1/events"


def events_concurrency() -> int:
    try:
        return max(1, int(os.environ.get("CARELOOP_EVENTS_CONCURRENCY", "2")))
    except ValueError:
        return 2


class EventsBulkhead:
    """ASGI middleware: a semaphore around the events API (one per event loop)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._slots: dict[int, asyncio.Semaphore] = {}

    def _semaphore(self) -> asyncio.Semaphore:
        loop = id(asyncio.get_running_loop())
        found = self._slots.get(loop)
        if found is None:
            found = self._slots[loop] = asyncio.Semaphore(events_concurrency())
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != EVENTS_PATH:
            await self.app(scope, receive, send)
            return
        async with self._semaphore():
            await self.app(scope, receive, send)
