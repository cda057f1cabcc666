"""Demo flow runs (``careloop demo seed``): recent discharges are announced through the real
event path (:func:`careloop.flows.ingest.ingest`, source ``demo``) at their discharge time, so
the discharge / PCI / hypertension flows start, write their outbox messages and leave durable
timers; a few older messages are marked logged or failed so the outbox monitor shows each state.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import frozen_now
from careloop.engine.domain import Encounter
from careloop.engine.models import DefinitionRow
from careloop.flows.ingest import ingest
from careloop.flows.models import OutboxMessage

RECENT = timedelta(days=21)


def seed_flows(session: Session, rng: random.Random, context: dict[str, Any]) -> None:
    now: datetime = context["now"]
    ids: list[str] = context.get("encounters", [])
    if not ids or session.scalars(select(DefinitionRow.id).where(
            DefinitionRow.kind == "flow").limit(1)).first() is None:
        context.setdefault("skipped", []).append("flows: bundles not imported")
        return
    encounters = session.scalars(select(Encounter).where(
        Encounter.id.in_(ids), Encounter.discharged_at >= now - RECENT)
        .order_by(Encounter.discharged_at)).all()
    started = 0
    for enc in encounters:
        assert enc.discharged_at is not None
        event = {"event_id": f"demo-discharge-{enc.id}", "type": "encounter.discharged",
                 "payload": {"encounter_id": enc.id, "patient_id": enc.patient_id,
                             "type": enc.type, "department_id": enc.department_id,
                             "discharged_at": enc.discharged_at.isoformat()}}
        with frozen_now(enc.discharged_at):
            status, _body = ingest(session, event, source="demo")
        started += status == 200
    session.flush()
    old = session.scalars(select(OutboxMessage).where(
        OutboxMessage.status == "pending", OutboxMessage.next_attempt_at < now - timedelta(days=1))
        .order_by(OutboxMessage.id)).all()
    for message in old:
        # the demo has no gateway: what went out went to the log channel (never "sent")
        if rng.random() < 0.93:
            message.status, message.sent_at = "logged", message.next_attempt_at
            message.attempts, message.reason = 1, "log_channel"
        else:
            message.status, message.attempts = "failed", 3
            message.error, message.reason = "demo: gateway rejected the number", "gateway_refused"
    context["flows"] = {"discharges": started}
