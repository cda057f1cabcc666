"""The daily ``scheduled`` event: recorded once per hospital-local day after CARELOOP_DAILY_AT by
whichever process ticks first, and rule sets with ``on: [scheduled]`` act on it (a Monday review
reminder here)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.events import daily_at, emit_daily
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.rules.models import RuleAlert

RULESET = """kind: ruleset
key: weekly_review
title: {zh-CN: 每周复盘提醒, en: Weekly review reminder}
on: [scheduled]
rules:
  - key: monday
    title: {zh-CN: 周一, en: Monday}
    when: "event.weekday == 1"
    then:
      - do: raise_alert
        level: info
        message:
          zh-CN: "{{ event.date }} 请复盘上周投诉"
          en: "{{ event.date }}: review last week's complaints"
"""


@pytest.fixture
def weekly(engine: Engine, tmp_path: Path) -> Engine:
    app = tmp_path / "review"
    (app / "rules").mkdir(parents=True)
    (app / "app.yaml").write_text("id: review\nname: {zh-CN: 复盘, en: Review}\nversion: 1.0.0\n"
                                  "format: 1\ndefault_locale: zh-CN\n", "utf-8")
    (app / "rules" / "weekly_review.yaml").write_text(RULESET, "utf-8")
    import_bundle(app, engine=engine, actor="test")
    return engine


def _alerts(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return [a.message for a in session.scalars(select(RuleAlert).order_by(RuleAlert.id))]


def _events(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return list(session.scalars(select(DomainEventRow.event_id).where(
            DomainEventRow.type == "scheduled").order_by(DomainEventRow.id)))


def test_once_a_day_after_the_configured_time(weekly: Engine) -> None:
    # Monday 2026-11-23, Asia/Shanghai (UTC+8): 05:30 local is too early, 07:00 fires
    assert emit_daily(weekly, datetime(2026, 11, 22, 21, 30, tzinfo=UTC)) is False
    assert _events(weekly) == []
    assert emit_daily(weekly, datetime(2026, 11, 22, 23, 0, tzinfo=UTC)) is True
    assert emit_daily(weekly, datetime(2026, 11, 23, 3, 0, tzinfo=UTC)) is False  # same day
    assert _events(weekly) == ["scheduled:2026-11-23"]
    assert _alerts(weekly) == ["2026-11-23 请复盘上周投诉"]
    # Tuesday: the event is recorded, the Monday rule does not act
    assert emit_daily(weekly, datetime(2026, 11, 23, 23, 0, tzinfo=UTC)) is True
    assert _events(weekly) == ["scheduled:2026-11-23", "scheduled:2026-11-24"]
    assert _alerts(weekly) == ["2026-11-23 请复盘上周投诉"]
    with transaction(weekly) as session:
        payload = session.scalars(select(DomainEventRow.payload).where(
            DomainEventRow.event_id == "scheduled:2026-11-24")).one()
    assert payload == {"date": "2026-11-24", "weekday": 2, "day": 24, "month": 11,
                       "at": "06:00"}


def test_the_time_is_configurable(weekly: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DAILY_AT", "08:30")
    assert daily_at().hour == 8 and daily_at().minute == 30
    assert emit_daily(weekly, datetime(2026, 11, 23, 0, 0, tzinfo=UTC)) is False   # 08:00
    assert emit_daily(weekly, datetime(2026, 11, 23, 0, 30, tzinfo=UTC)) is True   # 08:30
    monkeypatch.setenv("CARELOOP_DAILY_AT", "8h")
    with pytest.raises(ValueError, match="CARELOOP_DAILY_AT must be HH:MM"):
        daily_at()


def test_the_ticker_runs_it(engine: Engine) -> None:
    assert "engine.daily" in loaded_registry().catalogue("tick").names()
