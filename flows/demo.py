"""Demo time (the ``flows`` demo seeder): the demo's timeline (:mod:`careloop.web.demo`) advances
with the scheduler's own sweep, :func:`careloop.flows.scheduler.run_due`, at each instant — cron
flows start, due timers fire (messages, forms, reminders, phone tasks, approvals), overdue tasks
emit ``task.overdue`` (escalations) and the outbox dispatches what is due, exactly as the
``careloop serve`` ticker does. Nothing is marked sent or failed by hand.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from careloop.engine.models import DefinitionRow
from careloop.flows.scheduler import run_due


def sweep(engine: Engine, at: datetime) -> None:
    run_due(engine, now=at, worker="demo")


def seed_flows(session: Session, rng: random.Random, context: dict[str, Any]) -> None:
    if session.scalars(select(DefinitionRow.id).where(
            DefinitionRow.kind == "flow").limit(1)).first() is None:
        context.setdefault("skipped", []).append("flows: bundles not imported")
    # the sweep also dispatches messages and overdue events, so it runs without flows too
    context["sweep"] = sweep
