"""SQLite under two writers: a transaction that starts with a savepoint (the demo timeline, batch
imports, every ``begin_nested``) must wait for the write lock, not fail with "database is locked"
because another connection (the event dispatcher thread of ``careloop serve``) committed between
its first read and its first write. CI failed on this: `careloop up --demo` beside a serving
dispatcher."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from careloop.engine import db as dbmod


def test_a_savepoint_first_transaction_waits_for_a_concurrent_writer(tmp_path: Path) -> None:
    engine = dbmod.make_engine(f"sqlite:///{tmp_path / 'two.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    read = threading.Event()
    other: list[BaseException] = []

    def other_writer() -> None:
        read.wait(5)
        try:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (1)"))
        except BaseException as exc:  # reported below
            other.append(exc)

    thread = threading.Thread(target=other_writer)
    thread.start()
    with dbmod.transaction(engine) as session, session.begin_nested():
        assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
        read.set()
        time.sleep(0.5)  # the other writer commits here unless this transaction holds the lock
        session.execute(text("INSERT INTO t VALUES (2)"))
    thread.join(10)
    assert not other
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT x FROM t")).scalars()) == [1, 2]
    engine.dispose()


def test_what_a_savepoint_wrote_rolls_back_with_its_transaction(tmp_path: Path) -> None:
    """SQLite commits a savepoint opened outside a transaction when it is released: what the
    demo timeline's or an import's ``begin_nested`` wrote stayed even when their transaction
    rolled back. It is now part of the transaction."""
    engine = dbmod.make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    try:
        with dbmod.transaction(engine) as session:
            with session.begin_nested():
                session.execute(text("INSERT INTO t VALUES (1)"))
            raise LookupError("the rest of the transaction failed")
    except LookupError:
        pass
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
    engine.dispose()
