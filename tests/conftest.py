"""Shared fixtures: a migrated database per test session, emptied after each test.

The database is SQLite in a temporary folder unless ``CARELOOP_DATABASE_URL`` names PostgreSQL;
then each session works in its own fresh schema, dropped at the end. With
``CARELOOP_REQUIRE_POSTGRES=1`` (CI) an unreachable PostgreSQL is an error, never a skip, and with
``CARELOOP_NO_SKIPS=1`` any skipped test fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from careloop.engine import db as dbmod
from careloop.engine.models import Base, load_all_models

load_all_models()

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def db_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A migrated, empty database for the whole session (SQLite file or a PostgreSQL schema)."""
    from careloop.engine.migrate import upgrade

    url = os.environ.get("CARELOOP_DATABASE_URL")
    schema = None
    if url and make_url(url).get_backend_name() == "postgresql":
        engine, schema = dbmod.schema_engine(url, "careloop_test")
    else:
        path = tmp_path_factory.mktemp("db") / "careloop.db"
        engine = dbmod.make_engine(f"sqlite:///{path}")
    upgrade(engine)
    try:
        with dbmod.use_engine(engine):
            yield engine
    finally:
        engine.dispose()
        if schema is not None and url:
            dbmod.drop_schema(url, schema)


@pytest.fixture
def engine(db_engine: Engine) -> Iterator[Engine]:
    """The session database, emptied after the test."""
    yield db_engine
    with db_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with dbmod.transaction(engine) as s:
        yield s


@pytest.fixture
def dialect(db_engine: Engine) -> str:
    return db_engine.dialect.name


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CARELOOP_REQUIRE_POSTGRES") == "1":
        url = os.environ.get("CARELOOP_DATABASE_URL", "")
        if not url or make_url(url).get_backend_name() != "postgresql":
            raise pytest.UsageError("CARELOOP_REQUIRE_POSTGRES=1 but CARELOOP_DATABASE_URL "
                                    "does not name a PostgreSQL database")
        probe = dbmod.make_engine(url)
        try:
            with probe.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            probe.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    skipped = len(terminalreporter.stats.get("skipped", []))
    if os.environ.get("CARELOOP_NO_SKIPS") == "1" and skipped:
        terminalreporter.write_line(f"FAILED: {skipped} test(s) were skipped and "
                                    "CARELOOP_NO_SKIPS=1 forbids skips", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CARELOOP_NO_SKIPS") == "1" and skipped and exitstatus == 0:
        session.exitstatus = 1
