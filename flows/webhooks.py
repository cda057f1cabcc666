"""The webhook outbox: a ``call_webhook`` step writes a row in its own transaction; the sweep
sends it later, with a timeout, outside any patient's request and outside any open transaction.

    step (patient's POST, a sweep, an HIS event)      dispatch_due (the sweep, any process)
    ─────────────── enqueue ──▶ webhook_calls row ──▶ claim ─▶ egress.request ─▶ sent | retry
                                                                                  └▶ failed

A failure is retried with exponential backoff (1, 2, 4 … minutes) up to the step's
``retry.attempts`` (default 5); its error is one of :data:`careloop.flows.egress.ERRORS` or
``HTTP <status>``, and the run's history records ``webhook_sent`` or ``webhook_failed``.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.flows import egress
from careloop.flows.models import FlowRun, RunHistory, WebhookCall
from careloop.flows.outbox import claim_due

log = logging.getLogger("careloop.flows.webhooks")

DEFAULT_ATTEMPTS = 5


def timeout_seconds() -> float:
    """One call's time limit to read the answer (``CARELOOP_WEBHOOK_TIMEOUT``, default 10 s)."""
    return float(os.environ.get("CARELOOP_WEBHOOK_TIMEOUT", "10"))


def timeouts() -> httpx.Timeout:
    """Connect within ``CARELOOP_WEBHOOK_CONNECT_TIMEOUT`` (default 5 s), read the answer
    within :func:`timeout_seconds`."""
    return httpx.Timeout(timeout_seconds(), connect=float(
        os.environ.get("CARELOOP_WEBHOOK_CONNECT_TIMEOUT", "5")))


def enqueue(session: Session, *, idempotency_key: str, method: str, url: str,
            body: dict[str, Any], run_id: int | None = None, step_run_id: int | None = None,
            step_key: str | None = None, flow_key: str | None = None,
            attempts: int = DEFAULT_ATTEMPTS) -> int:
    """Queue one call in the caller's transaction; the same key returns the first call's id."""
    existing = session.scalars(select(WebhookCall.id).where(
        WebhookCall.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return existing
    now = now_utc()
    row = WebhookCall(idempotency_key=idempotency_key, run_id=run_id, step_run_id=step_run_id,
                      step_key=step_key, flow_key=flow_key, method=method, url=url, body=body,
                      status="pending", attempts=0, max_attempts=max(1, attempts),
                      next_attempt_at=now, created_at=now)
    session.add(row)
    session.flush()
    return row.id


def _history(session: Session, row: WebhookCall, action: str, details: dict[str, Any]) -> None:
    if row.run_id is not None and session.get(FlowRun, row.run_id) is not None:
        session.add(RunHistory(run_id=row.run_id, step_key=row.step_key, at=now_utc(),
                               action=action, details=details))


def send_one(engine: Engine, call_id: int, worker: str, now: datetime,
             transport: httpx.BaseTransport | None = None,
             resolver: egress.Resolver = egress.resolve) -> str:
    """Send one claimed call; returns ``sent``, ``retry``, ``failed`` or ``skipped``."""
    with transaction(engine) as session:
        row = session.get(WebhookCall, call_id)
        if row is None or row.status != "pending" or row.claimed_by != worker:
            return "skipped"
        method, url, body, key = row.method, row.url, dict(row.body), row.idempotency_key
        try:  # the allow-list is read now, not when the call was queued
            egress.check(session, url, resolver)
            refused: str | None = None
        except egress.EgressRefused as exc:
            refused = str(exc)
    status: int | None = None
    error = refused
    if error is None:  # no transaction is open while the call is under way
        try:
            status = egress.send(method, url, body=body, headers={"Idempotency-Key": key},
                                 timeout=timeouts(), transport=transport)
        except egress.EgressRefused as exc:
            error = str(exc)
    with transaction(engine) as session:
        row = session.get(WebhookCall, call_id, with_for_update=True)
        if row is None or row.status != "pending":
            return "skipped"
        row.attempts += 1
        row.claimed_by = row.claimed_until = None
        if error is None:
            row.status, row.sent_at, row.error, row.response_status = "sent", now, None, status
            _history(session, row, "webhook_sent", {"status": status})
            return "sent"
        row.error = error
        log.warning("webhook call %s (flow %s step %s) attempt %s: %s", row.id, row.flow_key,
                    row.step_key, row.attempts, error)
        if refused is not None or row.attempts >= row.max_attempts:
            # a refusal (not allowed) is not retried: only an administrator's list changes it
            row.status = "failed"
            _history(session, row, "webhook_failed", {"error": error, "attempts": row.attempts})
            return "failed"
        row.next_attempt_at = now + timedelta(minutes=2 ** (row.attempts - 1))
        return "retry"


def dispatch_due(engine: Engine, *, worker: str, now: datetime | None = None,
                 batch: int = 50, max_batches: int = 100,
                 transport: httpx.BaseTransport | None = None,
                 resolver: egress.Resolver = egress.resolve,
                 budget_seconds: float | None = None) -> dict[str, int]:
    """Send every due call (claimed per row, so two processes never send the same one) until
    ``budget_seconds`` of real time are spent (``CARELOOP_OUTBOX_BUDGET``, default 20 s): the
    calls not reached lose their claim and wait for the next sweep, so a slow endpoint never
    holds up the timers."""
    now = now or now_utc()
    budget = budget_seconds if budget_seconds is not None else float(
        os.environ.get("CARELOOP_OUTBOX_BUDGET", "20"))
    deadline = time.monotonic() + budget
    counts: dict[str, int] = {}
    for _ in range(max_batches):
        ids = claim_due(engine, WebhookCall, worker, now, batch)
        if not ids:
            break
        for index, call_id in enumerate(ids):
            if time.monotonic() > deadline:
                with transaction(engine) as session:
                    session.execute(update(WebhookCall).where(
                        WebhookCall.id.in_(ids[index:]), WebhookCall.claimed_by == worker,
                        WebhookCall.status == "pending")
                        .values(claimed_by=None, claimed_until=None))
                counts["budget_spent"] = counts.get("budget_spent", 0) + 1
                return counts
            outcome = send_one(engine, call_id, worker, now, transport, resolver)
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts
