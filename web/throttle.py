"""Progressive delays after failed sign-in attempts, kept in the database.

Three scopes, each counted separately (``signin_throttle`` rows, so every app process sharing
the database sees the same counts):

- ``account``: failed passwords for one username (known or not, so the answers do not tell
  which usernames exist);
- ``ip``: failed passwords from one source address — refused *before* any password hashing once
  the delay is in force, so a flood from one address costs the server nothing;
- ``totp``: wrong second-factor codes for one user.

The first ``free`` failures cost nothing; from then on each failure blocks the scope for a delay
that doubles (1 s, 2 s, 4 s … capped). An attempt made while blocked is refused without being
checked and without lengthening the delay, so nobody can lock an account for long: the delay
ends by itself, and failures are forgotten ``window`` after the last one. A success clears the
account and second-factor scopes (not the address: one good account must not reset a flood).

Keys are SHA-256 digests of ``scope:value``: neither usernames (people type passwords into the
username box) nor addresses are stored in clear.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from careloop.engine.clock import now_utc
from careloop.web.models import SigninThrottle


@dataclass(frozen=True, slots=True)
class Limit:
    """How a scope is throttled."""

    free: int
    base: timedelta
    cap: timedelta
    window: timedelta


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


def limit(scope: str) -> Limit:
    """The limits of ``scope``; the free attempts are settings (``CARELOOP_SIGNIN_*_FREE``)."""
    hour, cap = timedelta(hours=1), timedelta(minutes=15)
    if scope == "ip":
        return Limit(_env_int("CARELOOP_SIGNIN_IP_FREE", 20), timedelta(seconds=1), cap, hour)
    if scope == "totp":
        return Limit(_env_int("CARELOOP_SIGNIN_TOTP_FREE", 5), timedelta(seconds=1), cap, hour)
    return Limit(_env_int("CARELOOP_SIGNIN_ACCOUNT_FREE", 5), timedelta(seconds=1), cap, hour)


def key_of(scope: str, value: str) -> str:
    return hashlib.sha256(f"{scope}:{value}".encode("utf-8", "replace")).hexdigest()


def delay_after(failures: int, rule: Limit) -> timedelta | None:
    """The delay that ``failures`` consecutive failures earn.

    >>> rule = Limit(5, timedelta(seconds=1), timedelta(minutes=15), timedelta(hours=1))
    >>> [delay_after(n, rule) for n in (4, 5, 6, 7)]  # doctest: +NORMALIZE_WHITESPACE
    [None, datetime.timedelta(seconds=1), datetime.timedelta(seconds=2),
     datetime.timedelta(seconds=4)]
    >>> delay_after(60, rule)
    datetime.timedelta(seconds=900)
    """
    if failures < rule.free:
        return None
    steps = min(failures - rule.free, 30)
    delay: timedelta = min(rule.cap, rule.base * (2 ** steps))
    return delay


def blocked_until(session: Session, scope: str, value: str) -> datetime | None:
    """When the delay in force for ``value`` ends, or None when an attempt may be checked."""
    row = session.get(SigninThrottle, key_of(scope, value), populate_existing=True)
    now = now_utc()
    if row is None or row.blocked_until is None or row.blocked_until <= now:
        return None
    return row.blocked_until


def delayed_accounts(session: Session, usernames: dict[str, int]) -> set[int]:
    """Which of ``usernames`` (username → user id) are under an account delay now."""
    keys = {key_of("account", name.lower()): uid for name, uid in usernames.items()}
    if not keys:
        return set()
    rows = session.scalars(select(SigninThrottle.key).where(
        SigninThrottle.key.in_(list(keys)), SigninThrottle.blocked_until > now_utc())).all()
    return {keys[k] for k in rows}


def fail(session: Session, scope: str, value: str) -> datetime | None:
    """Count one failure (atomically, several processes at once); returns the new block's end."""
    rule, now, key = limit(scope), now_utc(), key_of(scope, value)
    table = SigninThrottle.__table__
    assert isinstance(table, Table)
    fresh = SigninThrottle.last_failure_at < now - rule.window
    dialect = session.get_bind().dialect.name
    values = {"key": key, "scope": scope, "failures": 1, "last_failure_at": now,
              "blocked_until": None}
    counted = case((fresh, 1), else_=SigninThrottle.failures + 1)
    changes = {"failures": counted, "last_failure_at": now}
    stmt: ReturningInsert[Any]
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_update(
            index_elements=["key"], set_=changes).returning(table.c.failures)
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_update(
            index_elements=["key"], set_=changes).returning(table.c.failures)
    failures = int(session.execute(stmt).scalar_one())
    delay = delay_after(failures, rule)
    until = now + delay if delay is not None else None
    session.execute(update(SigninThrottle).where(SigninThrottle.key == key)
                    .values(blocked_until=until)
                    .execution_options(synchronize_session=False))
    return until


def clear(session: Session, scope: str, value: str) -> None:
    session.execute(delete(SigninThrottle).where(SigninThrottle.key == key_of(scope, value)))


def purge(session: Session) -> int:
    """Forget rows whose last failure is older than every scope's window (housekeeping)."""
    oldest = now_utc() - max(limit(s).window for s in ("account", "ip", "totp"))
    result = session.execute(delete(SigninThrottle).where(
        SigninThrottle.last_failure_at < oldest))
    return int(getattr(result, "rowcount", 0) or 0)
