"""One working-days implementation: due dates in working days come from the hospital calendar
(holidays and make-up days), never from a Monday-to-Friday count beside it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from careloop.engine.errors import CareloopError
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import due_at


def test_working_days_skip_the_national_day_holiday() -> None:
    start = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)  # Wednesday 10:00 in Shanghai
    assert due_at({"working_days": 1}, start).isoformat() == "2026-10-08T02:00:00+00:00"


def test_without_the_calendar_working_days_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    services = loaded_registry().catalogue("service")
    monkeypatch.delitem(services._items, "calendar.add_working_days")
    with pytest.raises(CareloopError) as exc:
        due_at({"working_days": 1}, datetime(2026, 9, 30, 2, 0, tzinfo=UTC))
    assert "calendar.add_working_days" in str(exc.value)
    # hours need no calendar
    assert due_at({"hours": 2}, datetime(2026, 9, 30, 2, 0, tzinfo=UTC)) == datetime(
        2026, 9, 30, 4, 0, tzinfo=UTC)
