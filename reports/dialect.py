"""What SQLite and PostgreSQL spell differently: local-time buckets, ages, durations, medians;
and which database definitions are validated for (:func:`target_dialect`).

Times are stored in UTC. Buckets are computed in the hospital's time zone
(:func:`careloop.engine.clock.hospital_tz`). PostgreSQL converts with the zone's name, so daylight
saving is exact; SQLite has no time-zone database, so it shifts by the zone's current UTC offset,
which is exact for zones without daylight saving (Asia/Shanghai, the default).

Every bucket is a text label the same on both databases::

    day 2026-03-05 · week 2026-03-02 (its Monday) · month 2026-03 · quarter 2026-Q1 · year 2026
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Date, Float, Integer, cast, func, literal
from sqlalchemy.sql.elements import ColumnElement

from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.errors import CareloopError

GRAINS = ("day", "week", "month", "quarter", "year")


class ReportError(CareloopError):
    """Raised when a dataset cannot run as asked (an unsupported measure on this database, a bad
    parameter value, a dataset that does not exist)."""


def _sqlite_shift() -> str:
    offset = now_utc().astimezone(hospital_tz()).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    return f"{minutes:+d} minutes"


def time_bucket(dialect: str, column: Any, grain: str) -> ColumnElement[Any]:
    """A text label of ``column``'s local-time bucket (see the module docstring)."""
    if dialect == "postgresql":
        local = func.timezone(hospital_tz().key, column)
        fmt = {"day": "YYYY-MM-DD", "week": "YYYY-MM-DD", "month": "YYYY-MM",
               "quarter": 'YYYY-"Q"Q', "year": "YYYY"}[grain]
        if grain == "week":
            local = func.date_trunc("week", local)
        return func.to_char(local, fmt)
    shift = literal(_sqlite_shift())
    if grain == "week":
        return func.date(column, shift, "weekday 0", "-6 days")
    if grain == "quarter":
        month = cast(func.strftime("%m", column, shift), Integer)
        return func.printf("%s-Q%d", func.strftime("%Y", column, shift), (month + 2) / 3)
    fmt = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}[grain]
    return func.strftime(fmt, column, shift)


def age_years(dialect: str, at: Any, birth_date: Any) -> ColumnElement[Any]:
    """Whole years between ``birth_date`` and the local date of ``at`` (exact on both)."""
    if dialect == "postgresql":
        local_day = cast(func.timezone(hospital_tz().key, at), Date)
        return func.date_part("year", func.age(local_day, birth_date))
    shift = literal(_sqlite_shift())
    return cast((cast(func.strftime("%Y%m%d", at, shift), Integer)
                 - cast(func.strftime("%Y%m%d", birth_date), Integer)) / 10000, Integer)


def hours_between(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` in hours, as a float."""
    if dialect == "postgresql":
        return func.extract("epoch", end - start) / 3600.0
    return (func.julianday(end) - func.julianday(start)) * 24.0


def percentile(dialect: str, fraction: float, value: Any) -> ColumnElement[Any]:
    """An exact percentile, interpolated between the two nearest values (PostgreSQL's
    ``percentile_cont``). SQLite has no ordered-set aggregates: there it is the aggregate
    ``careloop_percentile`` that :func:`prepare_connection` installs on the connection, with the
    same result."""
    if dialect == "postgresql":
        return cast(func.percentile_cont(fraction).within_group(value), Float)
    return cast(func.careloop_percentile(value, fraction), Float)


class _Percentile:
    """SQLite aggregate ``careloop_percentile(value, fraction)``: NULLs ignored, like
    ``percentile_cont``; no values gives NULL."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value: Any, fraction: Any) -> None:
        if value is not None:
            self.values.append(float(value))
            self.fraction = float(fraction)

    def finalize(self) -> float | None:
        return percentile_cont(self.values, self.fraction)


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """``percentile_cont`` of ``values``.

    >>> percentile_cont([1, 2, 3, 4, 10], 0.5), percentile_cont([1, 2, 3, 4], 0.9)
    (3.0, 3.7)
    """
    if not values:
        return None
    ordered = sorted(values)
    at = fraction * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (at - low), 12)


def prepare_connection(dbapi_connection: Any, dialect: str) -> None:
    """Install what a dataset query may call that the database lacks (SQLite: the percentile
    aggregate). Idempotent; cheap enough to do before each query."""
    if dialect == "sqlite":
        dbapi_connection.create_aggregate("careloop_percentile", 2, _Percentile)


DIALECT_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def target_dialect() -> str:
    """The database definitions are validated for: the one this installation is configured with
    (:func:`careloop.engine.db.configured_dialect`). A measure that cannot be computed there is
    refused by ``careloop validate`` and the builder's check, not when a dashboard first runs."""
    from careloop.engine.db import configured_dialect

    return configured_dialect()
