"""Health checks and metrics: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``.

* ``/healthz`` — the process answers; no database, no thread pool (an ``async def`` that only
  builds a dict), so a frozen database or a full thread pool never makes it slow.
* ``/readyz`` — JSON ``{"status": "ready"|"unready", "checks": {...}}``, 200 or 503. Each check
  has ``ok`` and what it measured: ``database`` (``SELECT 1`` answered within
  ``CARELOOP_READY_TIMEOUT`` seconds, default 2), ``ticker`` (some process's ticker beat within
  ``CARELOOP_READY_TICKER_SECONDS``, default 180; ``0`` skips the check for a deployment without
  a ticker), ``outbox`` (messages and webhook calls due and not sent at most
  ``CARELOOP_READY_MAX_BACKLOG``, default 1000) and ``dead_letters`` (failed messages and calls
  at most ``CARELOOP_READY_MAX_DEAD``, default 100).
* ``/metrics`` — Prometheus text (:mod:`careloop.web.metrics`) for an API key with the scope
  ``metrics:read`` (``X-API-Key`` or ``Authorization: Bearer``), or, with
  ``CARELOOP_METRICS_LOOPBACK=1``, for any client on the loopback address.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine, delete, func, select, text
from sqlalchemy.orm import Session

from careloop import __version__
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction, waiting
from careloop.web.auth import ApiKeyRefused, api_key_caller, audit_refusal
from careloop.web.deps import client_ip, request_id
from careloop.web.models import TickerHeartbeat

router = APIRouter(include_in_schema=False)
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


def _checks() -> dict[str, dict[str, Any]]:
    """The database-backed checks (run in the thread pool, under the readiness timeout)."""
    from careloop.flows.models import OutboxMessage, WebhookCall

    now = now_utc()
    checks: dict[str, dict[str, Any]] = {}
    with transaction() as session:
        session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
        ticker_limit = _env_float("CARELOOP_READY_TICKER_SECONDS", 180)
        last = session.scalar(select(func.max(TickerHeartbeat.beat_at)))
        age = None if last is None else round((now - last).total_seconds(), 1)
        checks["ticker"] = {"ok": ticker_limit <= 0 or (age is not None and age <= ticker_limit),
                            "last_beat_seconds_ago": age, "limit_seconds": ticker_limit}
        backlog = (session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)) or 0) + (
            session.scalar(select(func.count()).select_from(WebhookCall).where(
                WebhookCall.status == "pending", WebhookCall.next_attempt_at <= now)) or 0)
        limit = int(_env_float("CARELOOP_READY_MAX_BACKLOG", 1000))
        checks["outbox"] = {"ok": backlog <= limit, "due": backlog, "limit": limit}
        dead = (session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.status == "failed")) or 0) + (
            session.scalar(select(func.count()).select_from(WebhookCall).where(
                WebhookCall.status == "failed")) or 0)
        limit = int(_env_float("CARELOOP_READY_MAX_DEAD", 100))
        checks["dead_letters"] = {"ok": dead <= limit, "failed": dead, "limit": limit}
    return checks


# checks still running (the database did not answer): a probe every few seconds must not pile up
# one stuck thread each
_running = threading.BoundedSemaphore(2)


def _checks_once() -> dict[str, dict[str, Any]]:
    waiting.set(None)  # readiness has its own timeout: not the request deadline's 503 page
    try:
        return _checks()
    finally:
        _running.release()


@router.get("/readyz")
async def readyz() -> JSONResponse:
    timeout = _env_float("CARELOOP_READY_TIMEOUT", 2)
    timed_out = {"database": {"ok": False, "error": "timeout", "limit_seconds": timeout}}
    try:
        if not _running.acquire(blocking=False):
            raise TimeoutError  # the earlier checks are still waiting for the database
        # a thread of its own (not the request pool): a frozen database must not hold readiness
        # behind requests that wait for it; past the timeout the thread is left to finish
        checks = await asyncio.wait_for(asyncio.to_thread(_checks_once), timeout)
    except TimeoutError:
        checks = timed_out
    except Exception as exc:  # unreachable, refused, misconfigured: the type, never the detail
        checks = {"database": {"ok": False, "error": type(exc).__name__}}
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse({"status": "ready" if ready else "unready", "checks": checks},
                        status_code=200 if ready else 503,
                        headers={"Cache-Control": "no-store"})


@router.get("/metrics")
def metrics(request: Request, x_api_key: str | None = Header(default=None),
            authorization: str | None = Header(default=None)) -> Response:
    from careloop.web.metrics import exposition

    host = client_ip(request)
    loopback_ok = os.environ.get("CARELOOP_METRICS_LOOPBACK") == "1" and host in LOOPBACK
    if not loopback_ok:
        key = x_api_key
        if key is None and authorization and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        ip, rid = host, request_id(request)
        try:
            with transaction() as session:
                api_key_caller(session, key, "metrics:read", action="api.metrics", ip=ip,
                               request_id=rid)
        except ApiKeyRefused as exc:
            with transaction() as session:
                audit_refusal(session, exc, action="api.metrics", ip=ip, request_id=rid)
            raise HTTPException(status_code=exc.status, detail=str(exc)) from None
    return Response(exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


# --- the ticker's heartbeat ---------------------------------------------------------------------

def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def heartbeat(engine: Engine | None = None) -> None:
    """The ``web.heartbeat`` tick: this process's row says when its ticker last ran; rows of
    processes silent for a day are removed."""
    now = now_utc()
    with transaction(engine) as session:
        _beat(session, process_name(), now)
        session.execute(delete(TickerHeartbeat).where(
            TickerHeartbeat.beat_at < now - timedelta(days=1)))


def _beat(session: Session, process: str, now: Any) -> None:
    row = session.get(TickerHeartbeat, process)
    if row is None:
        session.add(TickerHeartbeat(process=process, beat_at=now))
    else:
        row.beat_at = now
