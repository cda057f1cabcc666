"""Prometheus metrics (``prometheus-client``), served at ``/metrics`` by :mod:`careloop.web.health`.

Two sorts, so that several processes on one database tell the truth:

* **per process** — counted by the process that saw it: ``careloop_events_received_total``
  (``POST /api/v1/events`` answers by status) and ``careloop_http_request_duration_seconds``
  (by method and route template, never by raw path). With ``PROMETHEUS_MULTIPROC_DIR`` set
  (before the processes start, one empty folder shared by them) prometheus-client's multiprocess
  mode sums them over the processes; without it each process reports its own.
* **from the database at scrape time** — the same in every process: outbox messages and webhook
  calls by status, timers pending, due and late (:class:`DatabaseCollector`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction

PROCESS = CollectorRegistry(auto_describe=True)
EVENTS_IN = Counter("careloop_events_received", "HIS events posted to /api/v1/events, by the "
                    "HTTP status answered", ["status"], registry=PROCESS)
LATENCY = Histogram("careloop_http_request_duration_seconds", "Request latency by route",
                    ["method", "route"], registry=PROCESS,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LATE_AFTER = timedelta(minutes=5)  # a timer this long past due is "late" (the ticker is behind)


class DatabaseCollector(Collector):
    """Gauges that describe the database, computed when scraped (one short transaction)."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from careloop.flows.models import FlowTimer, OutboxMessage, WebhookCall

        now = now_utc()
        with transaction(self.engine) as session:
            outbox = session.execute(select(OutboxMessage.status, func.count())
                                     .group_by(OutboxMessage.status)).all()
            webhooks = session.execute(select(WebhookCall.status, func.count())
                                       .group_by(WebhookCall.status)).all()
            pending = FlowTimer.status == "pending"
            timers = session.execute(select(
                func.count().filter(pending),
                func.count().filter(pending, FlowTimer.due_at <= now),
                func.count().filter(pending, FlowTimer.due_at <= now - LATE_AFTER),
            ).select_from(FlowTimer)).one()
        yield _by_status("careloop_outbox_messages", "Outbox messages by status", outbox)
        yield _by_status("careloop_webhook_calls", "Webhook calls by status", webhooks)
        for name, text, value in (
                ("careloop_timers_pending", "Timers not fired yet", timers[0]),
                ("careloop_timers_due", "Pending timers whose time has come", timers[1]),
                ("careloop_timers_late", "Pending timers more than 5 minutes past due",
                 timers[2])):
            yield GaugeMetricFamily(name, text, value=float(value or 0))


def _by_status(name: str, text: str, rows: Iterable[tuple[str, int]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=["status"])
    for status, count in rows:
        family.add_metric([str(status)], float(count))
    return family


def exposition(engine: Engine | None = None) -> bytes:
    """The text a scrape gets: this process's (or all processes') counters, then the database's
    gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        own = generate_latest(merged)
    else:
        own = generate_latest(PROCESS)
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector(engine))
    return own + generate_latest(database)


class RequestMetrics:
    """ASGI middleware: times each request by its route template; counts events in. Pure: a
    clock and a counter, no I/O."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)
            if route == "/api/v1/events" and scope["method"] == "POST":
                EVENTS_IN.labels(str(status or 499)).inc()
