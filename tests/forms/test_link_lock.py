"""A patient's post of a form link locks the link first, on SQLite as on PostgreSQL: a second
post of the same link (a double tap on a slow phone, a retried request) waits for the first and
then finds it answered, instead of both reading the link as open and both being accepted."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from careloop.engine.db import transaction
from careloop.forms.requests import by_token, hash_token
from tests.forms.test_submit_reads import PLAIN, _link


def _other_writer_refused(engine: Engine, token: str) -> bool:
    """Whether another connection, not waiting, is refused the link's row (PostgreSQL) or the
    database's write lock (SQLite) while the first transaction is open."""
    with engine.connect() as conn:  # another pooled connection than the open transaction's
        try:
            if engine.dialect.name == "sqlite":
                raw: Any = conn.connection.dbapi_connection
                raw.execute("PRAGMA busy_timeout=0")
                try:
                    raw.execute("BEGIN IMMEDIATE")
                    raw.execute("ROLLBACK")
                finally:
                    raw.execute("PRAGMA busy_timeout=10000")
            else:
                conn.execute(text("SELECT id FROM form_requests WHERE token_hash = :h "
                                  "FOR UPDATE NOWAIT"), {"h": hash_token(token)})
            return False
        except (OperationalError, sqlite3.OperationalError):
            return True
        finally:
            conn.rollback()


def test_a_post_locks_its_link_before_reading_it(engine: Engine, patient: str,
                                                 publish: Any) -> None:
    publish(PLAIN)
    token = _link(engine, "plain_check").rsplit("/f/", 1)[1]
    assert not _other_writer_refused(engine, token)  # nobody holds it yet
    with transaction(engine) as session:
        request = by_token(session, token, for_update=True)
        assert request.status == "opened"
        assert _other_writer_refused(engine, token)
    assert not _other_writer_refused(engine, token)  # released with the transaction


def test_reading_a_link_to_show_it_takes_no_lock(engine: Engine, patient: str,
                                                 publish: Any) -> None:
    publish(PLAIN)
    token = _link(engine, "plain_check").rsplit("/f/", 1)[1]
    with transaction(engine) as session:
        by_token(session, token)
        assert not _other_writer_refused(engine, token)
