"""A pooled connection is pinged only after it sat idle (issue 18): every transaction paid a
round trip for the ping before, the events API's and the dispatcher's alike. Counted, not
timed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine.default import DefaultDialect

from careloop.engine import db


@pytest.fixture
def pinged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[Any]]]:
    """A SQLite engine whose dialect's own ping (what :func:`db.make_engine` wraps) is counted."""
    calls: list[Any] = []
    ping = DefaultDialect.do_ping

    def counted(self: DefaultDialect, dbapi_connection: Any) -> bool:
        calls.append(dbapi_connection)
        return ping(self, dbapi_connection)

    monkeypatch.setattr(DefaultDialect, "do_ping", counted)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'ping.db'}")
    yield engine, calls
    engine.dispose()


def _one_transaction(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT 1"))


def test_a_connection_back_from_the_pool_just_now_is_not_pinged(
        pinged: tuple[Engine, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    engine, calls = pinged
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 3600.0)
    for _ in range(5):
        _one_transaction(engine)
    assert calls == []  # the wrapped ping answered without asking the database


def test_an_idle_connection_is_pinged(pinged: tuple[Engine, list[Any]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine, calls = pinged
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)  # every connection counts as idle
    for _ in range(3):
        _one_transaction(engine)
    assert len(calls) == 2  # the first checkout is a new connection: nothing to ping
