"""Threshold alerts: evaluated on a schedule, with a pending period and re-arming.

Per (alert, group) the state moves ``ok → pending`` when the measure first breaches, ``pending →
firing`` once it has breached for ``pending_minutes`` (then one ``metric.alert`` event is
recorded), and back to ``ok`` as soon as it no longer breaches (a group with too few responses
has no value and does not breach). Only a new crossing after that fires again. State is a row, so
any process may run the evaluation (``careloop report alerts run``, or a scheduler tick).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.clock import now_utc, to_local
from careloop.engine.events import record
from careloop.reports.models import AlertState
from careloop.reports.query import Filters, run_dataset
from careloop.reports.spec import AlertSpec, DatasetSpec

_OPS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le,
                                               ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    alert: str
    group: str
    state: str
    value: float | None
    fired: bool


def _window(alert: AlertSpec, now: datetime) -> Filters:
    today = to_local(now).date()
    return Filters(date_from=today - timedelta(days=alert.window_days - 1), date_to=today)


def evaluate_alert(session: Session, alert: AlertSpec, dataset: DatasetSpec,
                   now: datetime | None = None) -> list[AlertOutcome]:
    """Evaluate one alert for every group; record ``metric.alert`` for each new firing."""
    now = now or now_utc()
    result = run_dataset(session, dataset, filters=_window(alert, now), scope=None,
                         dimensions=(alert.group_by,), now=now)
    values = {str(r[alert.group_by]): r[alert.measure] for r in result.rows
              if r[alert.group_by] is not None}
    states = {s.group_value: s for s in session.scalars(
        select(AlertState).where(AlertState.alert_key == alert.key))}
    outcomes = []
    for group in sorted(set(values) | set(states)):
        value = values.get(group)
        breach = value is not None and _OPS[alert.op](value, alert.value)
        state = states.get(group)
        if state is None:
            state = AlertState(alert_key=alert.key, group_value=group, state="ok", since=now,
                               last_evaluated_at=now, fired_count=0)
            session.add(state)
        fired = _step(session, alert, state, breach, value, now)
        outcomes.append(AlertOutcome(alert.key, group, state.state, value, fired))
    session.flush()
    return outcomes


def _step(session: Session, alert: AlertSpec, state: AlertState, breach: bool,
          value: float | None, now: datetime) -> bool:
    state.last_value, state.last_evaluated_at = value, now
    if not breach:
        if state.state != "ok":
            state.state, state.since = "ok", now
        return False
    if state.state == "ok":
        state.state, state.since = "pending", now
    if state.state == "pending" and now - state.since >= timedelta(minutes=alert.pending_minutes):
        state.state, state.since = "firing", now
        state.fired_count += 1
        _raise_event(session, alert, state, value, now)
        return True
    return False


def _raise_event(session: Session, alert: AlertSpec, state: AlertState, value: float | None,
                 now: datetime) -> None:
    payload = {"alert": alert.key, "dataset": alert.dataset, "measure": alert.measure,
               "group_by": alert.group_by, "group": state.group_value, "value": value,
               "op": alert.op, "threshold": alert.value, "window_days": alert.window_days,
               "severity": alert.severity, "fired_at": now.isoformat()}
    if alert.group_by == "department":
        payload["department_id"] = state.group_value
    record(session, "metric.alert", payload,
           event_id=f"metric.alert:{alert.key}:{state.group_value}:{state.fired_count}")


def run_alerts(session: Session, now: datetime | None = None) -> list[AlertOutcome]:
    """Evaluate every stored (current) alert definition; the scheduled entry point."""
    outcomes: list[AlertOutcome] = []
    for row in store.list_current(session, kind="alert"):
        alert = store.compile_row(row, AlertSpec)
        dataset = alert.inline_dataset
        if dataset is None:
            ds_row = store.current(session, "dataset", alert.dataset)
            if ds_row is None:
                continue  # retired dataset: nothing to evaluate (validation reports it)
            dataset = store.compile_row(ds_row, DatasetSpec)
        outcomes += evaluate_alert(session, alert, dataset, now)
    return outcomes
