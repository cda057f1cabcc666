"""Alerts fire once per crossing after the pending period, and re-arm after recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.models import DomainEventRow
from careloop.reports.alerts import evaluate_alert
from careloop.reports.compiler import dataset_from_body
from careloop.reports.models import AlertState
from careloop.reports.spec import AlertSpec

DATASET = dataset_from_body("nps14", {
    "source": "submissions", "dimensions": ["department"],
    "measures": [{"key": "nps", "type": "nps", "field": "nps", "min_sample": 4}]})
ALERT = AlertSpec(key="low_nps", title={"en": "low"}, dataset="nps14", measure="nps",
                  group_by="department", op="<", value=20.0, window_days=14,
                  pending_minutes=24 * 60)
T0 = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)


def _evaluate(engine: Engine, at: datetime) -> list[tuple[str, str, bool]]:
    with frozen_now(at), transaction(engine) as session:
        return [(o.group, o.state, o.fired) for o in evaluate_alert(session, ALERT, DATASET)]


def _events(engine: Engine) -> list[dict[str, Any]]:
    with transaction(engine) as session:
        rows = session.scalars(select(DomainEventRow).where(
            DomainEventRow.type == "metric.alert").order_by(DomainEventRow.id)).all()
        return [dict(r.payload) for r in rows]


def test_fires_once_after_pending_then_rearms(engine: Engine, seed: Any) -> None:
    for v in (0, 0, 5, 10):  # NPS -50: breaching
        seed.submit("card", {"nps": v}, at=T0 - timedelta(hours=1))
    for v in (10, 10, 9, 9):  # NPS 100: fine
        seed.submit("ortho", {"nps": v}, at=T0 - timedelta(hours=1))
    assert _evaluate(engine, T0) == [("card", "pending", False), ("ortho", "ok", False)]
    assert _evaluate(engine, T0 + timedelta(hours=12)) == [("card", "pending", False),
                                                           ("ortho", "ok", False)]
    assert _evaluate(engine, T0 + timedelta(days=1)) == [("card", "firing", True),
                                                         ("ortho", "ok", False)]
    assert _evaluate(engine, T0 + timedelta(days=2))[0] == ("card", "firing", False)
    assert len(_events(engine)) == 1
    # recovery: enough promoters arrive, NPS rises above 20 -> ok (re-armed), no event
    for _ in range(8):
        seed.submit("card", {"nps": 10}, at=T0 + timedelta(days=2, hours=1))
    assert _evaluate(engine, T0 + timedelta(days=3))[0] == ("card", "ok", False)
    # 15 days later the window holds only new detractors: crosses again, pending, then fires
    later = T0 + timedelta(days=20)
    for v in (0, 0, 0, 10):
        seed.submit("card", {"nps": v}, at=later - timedelta(hours=1))
    assert _evaluate(engine, later)[0] == ("card", "pending", False)
    assert _evaluate(engine, later + timedelta(days=1))[0] == ("card", "firing", True)
    events = _events(engine)
    assert len(events) == 2
    assert events[0]["department_id"] == "card" and events[0]["value"] == -50.0
    assert events[1]["value"] == -50.0 and events[1]["threshold"] == 20.0
    with transaction(engine) as session:
        state = session.scalars(select(AlertState).where(AlertState.group_value == "card")).one()
        assert state.fired_count == 2


def test_too_few_responses_never_breach(engine: Engine, seed: Any) -> None:
    for v in (0, 0, 0):  # below min_sample: n/a, not a breach
        seed.submit("card", {"nps": v}, at=T0 - timedelta(hours=1))
    assert _evaluate(engine, T0) == [("card", "ok", False)]
    assert _evaluate(engine, T0 + timedelta(days=2)) == [("card", "ok", False)]
    assert _events(engine) == []
