"""Working-day arithmetic on the bundled mainland China calendar (2026 State Council notice)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from careloop.engine.registry import loaded_registry
from careloop.flows.calendar import CalendarError, get_calendar, load_bundled_calendar

SH = ZoneInfo("Asia/Shanghai")
CASES = [  # (start local, working days, expected local)
    ("2026-09-30T10:00", 1, "2026-10-08T10:00"),   # National Day week off
    ("2026-10-09T10:00", 1, "2026-10-10T10:00"),   # Saturday 10/10 is a make-up working day
    ("2026-02-13T16:00", 1, "2026-02-14T16:00"),   # Saturday 2/14 works before Spring Festival
    ("2026-02-14T16:00", 1, "2026-02-24T16:00"),   # 2/15–2/23 off
    ("2026-12-31T18:30", 1, "2027-01-05T08:00"),   # after hours → next working day's start
    ("2026-06-18T07:00", 1, "2026-06-22T08:00"),   # before hours; Dragon Boat 6/19–6/21
    ("2026-01-03T09:00", 0, "2026-01-04T08:00"),   # holiday start → Sunday 1/4 works
    ("2026-05-08T09:00", 1, "2026-05-09T09:00"),   # Saturday 5/9 works
    ("2026-09-18T09:00", 1, "2026-09-20T09:00"),   # Sunday 9/20 works
]


@pytest.mark.parametrize(("start", "days", "expected"), CASES, ids=[c[0] for c in CASES])
def test_add_working_days(start: str, days: int, expected: str) -> None:
    at = datetime.fromisoformat(start).replace(tzinfo=SH)
    result = load_bundled_calendar().add_working_days(at, days)
    assert result.astimezone(SH).strftime("%Y-%m-%dT%H:%M") == expected


def test_holidays_and_makeup_days_of_2026() -> None:
    cal = load_bundled_calendar()
    off = ["2026-01-01", "2026-02-15", "2026-02-23", "2026-04-06", "2026-05-05", "2026-06-19",
           "2026-09-27", "2026-10-07"]
    work = ["2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10"]
    assert not any(cal.is_working_day(date.fromisoformat(d)) for d in off)
    assert all(cal.is_working_day(date.fromisoformat(d)) for d in work)


def test_service_is_registered_and_refuses_naive_and_unknown() -> None:
    service = loaded_registry().catalogue("service")["calendar.add_working_days"]
    at = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)
    assert service(None, at, 1).astimezone(SH).date() == date(2026, 10, 8)
    with pytest.raises(Exception) as naive:
        service(None, datetime(2026, 9, 30, 10, 0), 1)
    assert "aware" in str(naive.value)
    with pytest.raises(CalendarError) as unknown:
        get_calendar(None, "mars")
    assert "mars" in str(unknown.value)
