"""The one clock: the hospital's time zone, "now", and time travel for tests and flows.

Every engine asks this module for the current time instead of calling :func:`datetime.now`, so a
test (or a flow simulation) can freeze time with :func:`frozen_now` and get the same answer
everywhere, including from the expression functions ``today()`` and ``now()``.

    >>> from datetime import datetime, UTC
    >>> with frozen_now(datetime(2026, 1, 31, 20, 0, tzinfo=UTC)):
    ...     to_local(now_utc()).date().isoformat()   # already 1 February in Shanghai
    '2026-02-01'
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from careloop.engine.errors import CareloopError

TIMEZONE_ENV = "CARELOOP_TIMEZONE"
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


def now_utc() -> datetime:
    """The current instant as an aware UTC datetime (the frozen one inside :func:`frozen_now`)."""
    frozen = _frozen.get()
    if frozen is not None:
        return frozen
    return datetime.now(UTC)


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
