"""Database connection: SQLite by default (a file under ``var/``), PostgreSQL by URL.

``CARELOOP_DATABASE_URL`` selects the database, e.g.
``postgresql+psycopg://careloop@127.0.0.1:5432/careloop``. Without it, Careloop uses
``sqlite:///<CARELOOP_HOME or cwd>/var/careloop.db`` in WAL mode with foreign keys on.
No state that another process needs is kept here: engines are per-process connection pools only.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets its pragmas on every new connection."""
    url = url or database_url()
    engine = create_engine(url, future=True, pool_pre_ping=True, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
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
    session = session_factory(engine)()
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
