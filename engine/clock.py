"""The one clock: the hospital's time zone, "now", and time travel for tests and flows.

Every engine asks this module for the current time instead of calling :func:`datetime.now` (a
test, ``tests/engine/test_clock.py``, fails on any other read of the wall clock in the package), so
time is controlled in three ways, from narrowest to widest:

- :func:`frozen_now` freezes time inside a ``with`` block (tests, scenario steps, dry runs);
- ``careloop --now ISO COMMAND`` starts the command's clock at that instant; it then runs on;
- ``CARELOOP_CLOCK_OFFSET`` (``+365d``, ``-2h``, ``+31536000`` seconds) shifts every process that
  reads it, so several processes on one database agree. CI runs the whole suite a year ahead this
  way, so a test that only passes before some real date fails now, not on that date.

The expression functions ``today()`` and ``now()`` read the same clock.

    >>> from datetime import datetime, UTC
    >>> with frozen_now(datetime(2026, 1, 31, 20, 0, tzinfo=UTC)):
    ...     to_local(now_utc()).date().isoformat()   # already 1 February in Shanghai
    '2026-02-01'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from careloop.engine.errors import CareloopError

TIMEZONE_ENV = "CARELOOP_TIMEZONE"
OFFSET_ENV = "CARELOOP_CLOCK_OFFSET"
DEFAULT_TIMEZONE = "Asia/Shanghai"

_frozen: ContextVar[datetime | None] = ContextVar("careloop_frozen_now", default=None)


class ClockError(CareloopError):
    """Raised when ``CARELOOP_TIMEZONE`` names no known time zone, or a naive datetime is given
    where an aware one is required."""


def hospital_tz() -> ZoneInfo:
    """The hospital's time zone, from ``CARELOOP_TIMEZONE`` (default ``Asia/Shanghai``).

    Raises:
        ClockError: if the variable names no known IANA time zone.
    """
    name = os.environ.get(TIMEZONE_ENV, "").strip() or DEFAULT_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ClockError(f"{TIMEZONE_ENV}={name!r} is not a known time zone") from exc


_OFFSET = re.compile(r"^([+-]?)([0-9]+(?:\.[0-9]+)?)([smhdw]?)$")
_OFFSET_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_offset_cache: tuple[str, timedelta] = ("", timedelta(0))


def parse_offset(text: str) -> timedelta:
    """A clock offset: signed seconds or a signed number with a unit (s, m, h, d, w).

    >>> parse_offset("+365d"), parse_offset("-2h"), parse_offset("90")
    (datetime.timedelta(days=365), datetime.timedelta(days=-1, seconds=79200), \
datetime.timedelta(seconds=90))

    Raises:
        ClockError: if the text is not such an offset.
    """
    found = _OFFSET.match(text.strip())
    if found is None:
        raise ClockError(f"{OFFSET_ENV}={text!r} is not an offset such as +365d, -2h or 3600")
    sign = -1 if found.group(1) == "-" else 1
    return timedelta(seconds=sign * float(found.group(2)) * _OFFSET_UNITS[found.group(3)])


def clock_offset() -> timedelta:
    """How far this process's clock runs from the wall clock (``CARELOOP_CLOCK_OFFSET``)."""
    global _offset_cache
    text = os.environ.get(OFFSET_ENV, "")
    if text != _offset_cache[0]:
        _offset_cache = (text, parse_offset(text) if text.strip() else timedelta(0))
    return _offset_cache[1]


def wall_clock_utc() -> datetime:
    """The machine's own clock, unshifted. Only for measuring and for this module: business
    time is :func:`now_utc`."""
    return datetime.now(UTC)


def now_utc() -> datetime:
    """The current instant as an aware UTC datetime: the frozen one inside :func:`frozen_now`,
    else the wall clock moved by ``CARELOOP_CLOCK_OFFSET``."""
    frozen = _frozen.get()
    if frozen is not None:
        return frozen
    return wall_clock_utc() + clock_offset()


def start_clock_at(at: datetime) -> None:
    """Make this process's clock (and its child processes') read ``at`` now and run on from there.

    Used by ``careloop --now ISO COMMAND``; sets ``CARELOOP_CLOCK_OFFSET`` so that worker
    processes started by the command agree. A naive ``at`` is hospital-local wall time.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        at = at.replace(tzinfo=hospital_tz())
    seconds = (at.astimezone(UTC) - wall_clock_utc()).total_seconds()
    os.environ[OFFSET_ENV] = f"{seconds:+.3f}"


@contextmanager
def frozen_now(at: datetime) -> Iterator[None]:
    """Make :func:`now_utc` return ``at`` inside the ``with`` block (this context only).

    Args:
        at: the instant to freeze at. A naive datetime is read as hospital-local wall time.

    Yields:
        Nothing; the override is undone when the block exits, even on error.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        at = at.replace(tzinfo=hospital_tz())
    token = _frozen.set(at.astimezone(UTC))
    try:
        yield
    finally:
        _frozen.reset(token)


def to_local(dt: datetime) -> datetime:
    """Convert an aware datetime to the hospital's time zone.

    Raises:
        ClockError: if ``dt`` is naive (its instant would be a guess).
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ClockError(f"cannot convert naive datetime {dt.isoformat()} to hospital time")
    return dt.astimezone(hospital_tz())
