"""Database connection: SQLite by default (a file under ``var/``), PostgreSQL by URL.

``CARELOOP_DATABASE_URL`` selects the database, e.g.
``postgresql+psycopg://careloop@127.0.0.1:5432/careloop``. Without it, Careloop uses
``sqlite:///<CARELOOP_HOME or cwd>/var/careloop.db`` in WAL mode with foreign keys on.
No state that another process needs is kept here: engines are per-process connection pools only.

Every connection has time bounds (:class:`Timeouts`, read from the environment when an engine is
made; seconds, ``0`` = none): ``CARELOOP_DB_CONNECT_TIMEOUT`` (5; connecting, and waiting for a
pooled connection), ``CARELOOP_DB_STATEMENT_TIMEOUT`` (30), ``CARELOOP_DB_LOCK_TIMEOUT`` (10),
``CARELOOP_DB_IDLE_TX_TIMEOUT`` (60; a transaction left open) — on PostgreSQL as connection
options — and ``CARELOOP_DB_BUSY_TIMEOUT`` (10; SQLite's wait for a write lock). A database that
does not answer at all (frozen, a dropped network) cannot enforce its own statement timeout: the
web layer watches :data:`waiting` (when the current statement started) and answers 503 at the
statement timeout (the web layer's request deadline).
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import InsertmanyvaluesSentinelOpts


def home() -> Path:
    """Where ``var/`` lives: ``CARELOOP_HOME``, or the current directory."""
    return Path(os.environ.get("CARELOOP_HOME") or os.getcwd())


def database_url() -> str:
    url = os.environ.get("CARELOOP_DATABASE_URL")
    if url:
        return url
    var = home() / "var"
    var.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{var / 'careloop.db'}"


def redact(url: str) -> str:
    """A URL fit for logs and messages: the password replaced by ``***``."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Time bounds of every database connection, in seconds (``0``: none)."""

    connect: float = 5.0
    statement: float = 30.0
    lock: float = 10.0
    idle_in_transaction: float = 60.0
    busy: float = 10.0  # SQLite

    @classmethod
    def from_env(cls) -> Timeouts:
        """``CARELOOP_DB_CONNECT_TIMEOUT`` … (see the module docstring); a bad value is an
        error that names the variable."""
        def read(name: str, default: float) -> float:
            raw = os.environ.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name} has value {raw!r}: not a number of seconds") from None
            if value < 0 or math.isnan(value):
                raise ValueError(f"{name} has value {raw!r}: must be 0 or more seconds")
            return value

        d = cls()
        return cls(connect=read("CARELOOP_DB_CONNECT_TIMEOUT", d.connect),
                   statement=read("CARELOOP_DB_STATEMENT_TIMEOUT", d.statement),
                   lock=read("CARELOOP_DB_LOCK_TIMEOUT", d.lock),
                   idle_in_transaction=read("CARELOOP_DB_IDLE_TX_TIMEOUT",
                                            d.idle_in_transaction),
                   busy=read("CARELOOP_DB_BUSY_TIMEOUT", d.busy))

    def postgres_options(self) -> str:
        """``-c name=value`` settings for libpq's ``options`` (milliseconds), and JIT off:
        Careloop's queries are short index reads whose estimated cost can still pass
        ``jit_above_cost`` (the inbox's scoped ``UNION ALL`` at a million open tasks: 3.5 s of
        compiling for a 15 ms query), and nothing here runs long enough to repay it."""
        settings = (("statement_timeout", self.statement), ("lock_timeout", self.lock),
                    ("idle_in_transaction_session_timeout", self.idle_in_transaction))
        return " ".join([*(f"-c {name}={int(value * 1000)}" for name, value in settings),
                         "-c jit=off"])


class DatabaseWait:
    """When the statement (or connection ping) now running for one request started, or None.

    The web layer puts one in :data:`waiting` per request; the hooks below fill it on whatever
    thread runs the request's database work (context variables follow the thread pool)."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: float | None = None


waiting: ContextVar[DatabaseWait | None] = ContextVar("careloop_db_waiting", default=None)


def _started(*_: Any, **__: Any) -> None:
    wait = waiting.get()
    if wait is not None:
        wait.since = time.monotonic()


def _finished(*_: Any, **__: Any) -> None:
    wait = waiting.get()
    if wait is not None:
        wait.since = None


# A connection handed out again within this many seconds of going back to the pool is not
# pinged: every transaction paid a round trip for it (the events API's request and the
# dispatcher's group each: ~0.3 ms of CPU on PostgreSQL). A connection the server dropped within
# that window fails its first statement instead; SQLAlchemy then discards every connection the
# pool held before the failure, so the next transaction connects afresh.
PING_AFTER_IDLE = 5.0


def _timed_ping(ping: Any, returned: dict[int, float]) -> Any:
    def do_ping(dbapi_connection: Any) -> bool:
        back = returned.get(id(dbapi_connection))
        if back is not None and time.monotonic() - back < PING_AFTER_IDLE:
            return True
        _started()
        try:
            return bool(ping(dbapi_connection))
        finally:
            _finished()
    return do_ping


def _sqlite_pragmas(busy: float) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
    return apply


def _savepoint_takes_the_write_lock(conn: Any, _name: str) -> None:
    """SQLite: a transaction whose first statement is a SAVEPOINT starts as a *reader*; if another
    connection commits before its first write, that write fails at once with "database is
    locked" (WAL's stale snapshot: the busy timeout does not apply). Such a transaction (the
    demo's timeline, batch imports, every ``begin_nested``) takes the write lock first instead,
    waiting for it like any writer. Other transactions keep the driver's usual start at their
    first write. It also keeps the savepoint inside its transaction: SQLite commits a savepoint
    opened outside one when it is released, so what it wrote stayed even when the
    transaction then rolled back."""
    _begin_immediate(conn)


def _begin_immediate(conn: Any) -> None:
    """SQLite: ``BEGIN IMMEDIATE`` (the write lock, waited for) unless a transaction is open."""
    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection is not None and not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN IMMEDIATE")


def write_lock_first(session: Any) -> None:
    """SQLite: take the database's write lock now, before a read the transaction then acts on
    (what ``SELECT … FOR UPDATE`` does for a row on PostgreSQL, which SQLite ignores). Without
    it pysqlite begins the transaction only at its first write, so two requests may both read
    a form link as open and both answer it. Nothing on other databases."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        _begin_immediate(connection)


def pool_size() -> tuple[int, int]:
    """Connections one process keeps open and may open beyond them:
    ``CARELOOP_DB_POOL_SIZE`` (5) and ``CARELOOP_DB_MAX_OVERFLOW`` (10). Size them to the
    database: processes × (pool size + overflow) + the ticker's/worker's stays under
    PostgreSQL's ``max_connections`` (docs/operations.md, "Processes and connections")."""
    def read(name: str, default: int) -> int:
        text = os.environ.get(name, "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{name} must be a whole number, not {text!r}") from None
        if value < 0:
            raise ValueError(f"{name} must be 0 or more, not {value}")
        return value

    return max(1, read("CARELOOP_DB_POOL_SIZE", 5)), read("CARELOOP_DB_MAX_OVERFLOW", 10)


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine with the :class:`Timeouts` of the environment; SQLite gets its pragmas
    on every new connection."""
    from sqlalchemy.engine import make_url

    url = url or database_url()
    timeouts = Timeouts.from_env()
    backend = make_url(url).get_backend_name()
    connect_args = dict(kwargs.pop("connect_args", {}))
    if backend == "postgresql":
        if timeouts.connect:
            connect_args.setdefault("connect_timeout", max(1, math.ceil(timeouts.connect)))
        connect_args["options"] = " ".join(
            part for part in (connect_args.get("options"), timeouts.postgres_options()) if part)
    elif backend == "sqlite":
        connect_args.setdefault("timeout", timeouts.busy)
    if backend != "sqlite" and timeouts.connect:
        kwargs.setdefault("pool_timeout", timeouts.connect)
    if backend != "sqlite" or make_url(url).database not in (None, "", ":memory:"):
        size, overflow = pool_size()
        kwargs.setdefault("pool_size", size)
        kwargs.setdefault("max_overflow", overflow)
    engine = create_engine(url, future=True, pool_pre_ping=True, connect_args=connect_args,
                           **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(timeouts.busy))
        event.listen(engine, "savepoint", _savepoint_takes_the_write_lock)
        # New rows of one flush share one INSERT … RETURNING (as on PostgreSQL) instead of a
        # statement each: SQLite gives the rows of a multi-row VALUES ascending ids in VALUES
        # order (each row's id is one more than the largest so far), so the ids returned,
        # sorted, match the rows in order — what MySQL's dialect assumes of AUTO_INCREMENT.
        # SQLAlchemy leaves it off for SQLite; tests/engine/test_txcache_batch.py checks it.
        engine.dialect.insertmanyvalues_implicit_sentinel = (
            InsertmanyvaluesSentinelOpts.ANY_AUTOINCREMENT)
    event.listen(engine, "before_cursor_execute", _started)
    event.listen(engine, "after_cursor_execute", _finished)
    event.listen(engine, "handle_error", _finished)
    returned: dict[int, float] = {}  # id of a pooled DBAPI connection → when it came back

    def checkin(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            returned[id(dbapi_connection)] = time.monotonic()

    def closed(dbapi_connection: Any, *_: Any) -> None:
        returned.pop(id(dbapi_connection), None)

    event.listen(engine, "checkin", checkin)
    for name in ("close", "close_detached", "invalidate", "soft_invalidate"):
        event.listen(engine, name, closed)
    engine.dialect.do_ping = _timed_ping(  # type: ignore[method-assign]
        engine.dialect.do_ping, returned)
    return engine


@cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


_override: list[Engine] = []


def default_engine() -> Engine:
    """The process's engine for ``database_url()`` (or the one installed by :func:`use_engine`)."""
    if _override:
        return _override[-1]
    return _engine_for(database_url())


@contextmanager
def use_engine(engine: Engine) -> Iterator[None]:
    """Make ``engine`` the default for code that does not pass one (tests, embedding)."""
    _override.append(engine)
    try:
        yield
    finally:
        _override.remove(engine)


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or default_engine(), expire_on_commit=False, future=True)


@contextmanager
def transaction(engine: Engine | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back (writing nothing) on any exception."""
    # a Session, not ``session_factory(engine)()``: each sessionmaker is a new Session subclass
    # whose event dispatch SQLAlchemy builds again on first use (≈ 0.3 ms a transaction)
    session = Session(bind=engine or default_engine(), expire_on_commit=False)
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def schema_engine(url: str, prefix: str) -> tuple[Engine, str]:
    """A fresh PostgreSQL schema ``<prefix>_<random>`` in ``url``'s database and an engine whose
    connections work in it: the test suite's and each journey scenario's own database.

    Drop it with :func:`drop_schema` when done."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return make_engine(url, connect_args={"options": f"-csearch_path={schema}"}), schema


def drop_schema(url: str, schema: str) -> None:
    """Drop a schema made by :func:`schema_engine`, with everything in it."""
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def configured_dialect() -> str:
    """The database this process works against, by dialect name (``sqlite``, ``postgresql``):
    the engine installed by :func:`use_engine`, else ``CARELOOP_DATABASE_URL``'s backend, else
    SQLite. Connects to nothing and creates nothing (``careloop validate`` asks it)."""
    if _override:
        return _override[-1].dialect.name
    url = os.environ.get("CARELOOP_DATABASE_URL")
    if not url:
        return "sqlite"
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name()
