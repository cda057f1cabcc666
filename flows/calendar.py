"""Business calendars: working days and hours, public holidays and make-up working days (调休).

    >>> from datetime import date, time
    >>> cal = CalendarSpec("demo", "Asia/Shanghai", frozenset({1, 2, 3, 4, 5}), time(8), time(17),
    ...                    frozenset({date(2026, 10, 1)}), frozenset({date(2026, 10, 10)}))
    >>> cal.is_working_day(date(2026, 10, 1)), cal.is_working_day(date(2026, 10, 10))
    (False, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from careloop.engine.check import CompileContext, Definition
from careloop.engine.clock import ClockError
from careloop.engine.errors import CareloopError

DEFAULT_CALENDAR = "cn_mainland"
_BUNDLED = "app_definitions/common/calendars/cn_mainland.yaml"


class CalendarError(CareloopError):
    """Raised when a calendar is unknown or a computation is given a naive datetime."""


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """A compiled business calendar."""

    key: str
    timezone: str
    working_days: frozenset[int]  # ISO weekdays, 1 = Monday
    start: time
    end: time
    holidays: frozenset[date]
    workdays: frozenset[date]  # make-up working days on weekends

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.isoweekday() in self.working_days

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after ``day``."""
        day += timedelta(days=1)
        for _ in range(400):
            if self.is_working_day(day):
                return day
            day += timedelta(days=1)
        raise CalendarError(f"calendar {self.key}: no working day within 400 days")

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """``start`` plus ``days`` working days, moved into working hours.

        A start on a non-working day counts from the next working day; the result keeps the
        local time of day, clamped to the working hours (before start → start; after end → the
        next working day's start).

            >>> from datetime import UTC
            >>> cal = load_bundled_calendar()
            >>> cal.add_working_days(datetime(2026, 9, 30, 2, 0, tzinfo=UTC), 1).isoformat()
            '2026-10-08T10:00:00+08:00'
        """
        if start.tzinfo is None:
            raise CalendarError("add_working_days needs an aware datetime")
        local = start.astimezone(self.tz)
        day = local.date()
        if not self.is_working_day(day):
            day = self.next_working_day(day)
            local = datetime.combine(day, self.start, self.tz)
        for _ in range(days):
            day = self.next_working_day(day)
        at = local.timetz().replace(tzinfo=None)
        if at < self.start:
            at = self.start
        elif at > self.end:
            day, at = self.next_working_day(day), self.start
        return datetime.combine(day, at, self.tz)

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """``start`` plus ``hours`` counted only inside working hours on working days (nights,
        weekends and holidays do not count): a consultation's answer time.

            >>> from datetime import UTC
            >>> cal = load_bundled_calendar()   # 08:00–17:30, Monday to Friday
            >>> monday_night = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)  # 21:00 in Shanghai
            >>> cal.add_working_hours(monday_night, 4).isoformat()
            '2026-12-08T12:00:00+08:00'
        """
        if start.tzinfo is None:
            raise CalendarError("add_working_hours needs an aware datetime")
        left = timedelta(hours=hours)
        local = start.astimezone(self.tz)
        day, at = local.date(), local.timetz().replace(tzinfo=None)
        for _ in range(800):
            if not self.is_working_day(day) or at >= self.end:
                day, at = self.next_working_day(day), self.start
                continue
            at = max(at, self.start)
            begin = datetime.combine(day, at, self.tz)
            room = datetime.combine(day, self.end, self.tz) - begin
            if left <= room:
                return begin + left
            left -= room
            day, at = self.next_working_day(day), self.start
        raise CalendarError(f"calendar {self.key}: {hours} working hours do not fit 800 days")


def _dates(start: str, end: str) -> list[date]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _build(key: str, body: dict[str, Any]) -> CalendarSpec:
    hours = body["working_hours"]
    holidays: set[date] = set()
    for item in body.get("holidays", []) or []:
        holidays.update(_dates(item["from"], item["to"]))
    return CalendarSpec(
        key=key, timezone=str(body["timezone"]),
        working_days=frozenset(int(d) for d in body["working_days"]),
        start=time.fromisoformat(hours["start"]), end=time.fromisoformat(hours["end"]),
        holidays=frozenset(holidays),
        workdays=frozenset(date.fromisoformat(d) for d in body.get("workdays", []) or []))


def compile_calendar(definition: Definition, ctx: CompileContext) -> CalendarSpec | None:
    """Check dates and the time zone; ``{from: 2026-10-01, to: 2026-10-07}`` → 7 holidays."""
    doc, body = definition.doc, definition.body
    ok = True
    try:
        ZoneInfo(body["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        ctx.add(doc.problem("calendar.unknown-timezone",
                            f"unknown time zone {body['timezone']!r}", ("timezone",)))
        ok = False
    for i, item in enumerate(body.get("holidays", [])):
        try:
            if date.fromisoformat(item["to"]) < date.fromisoformat(item["from"]):
                ctx.add(doc.problem("calendar.bad-range", "'to' is before 'from'",
                                    ("holidays", i, "to")))
                ok = False
        except ValueError as exc:
            ctx.add(doc.problem("calendar.bad-date", str(exc), ("holidays", i)))
            ok = False
    for i, text in enumerate(body.get("workdays", [])):
        try:
            date.fromisoformat(text)
        except ValueError as exc:
            ctx.add(doc.problem("calendar.bad-date", f"'{text}' is not a date: {exc}",
                                ("workdays", i)))
            ok = False
    hours = body["working_hours"]
    if ok and hours["end"] <= hours["start"]:
        ctx.add(doc.problem("calendar.bad-hours", "working hours must end after they start",
                            ("working_hours", "end")))
        ok = False
    return _build(definition.key, body) if ok else None


@cache
def load_bundled_calendar() -> CalendarSpec:
    """The mainland China calendar shipped in ``app_definitions/common`` (no database needed)."""
    from careloop.engine.sources import load_text

    text = resources.files("careloop").joinpath(_BUNDLED).read_text("utf-8")
    doc = load_text(text, _BUNDLED)
    return _build(DEFAULT_CALENDAR, doc.data)


def get_calendar(session: Session | None, key: str | None = None) -> CalendarSpec:
    """A stored calendar (current version), else the bundled default."""
    key = key or DEFAULT_CALENDAR
    if session is not None:
        from careloop.engine import store

        row = store.current(session, "calendar", key)
        if row is not None:
            spec = store.compile_row(row, CalendarSpec)
            return spec
    if key == DEFAULT_CALENDAR:
        return load_bundled_calendar()
    raise CalendarError(f"no calendar '{key}'")


def add_working_days(session: Session | None, start: datetime, days: int,
                     calendar_key: str | None = None) -> datetime:
    """The ``calendar.add_working_days`` service (rules and flows use it)."""
    if start.tzinfo is None:
        raise ClockError("add_working_days needs an aware datetime")
    return get_calendar(session, calendar_key).add_working_days(start, days)
