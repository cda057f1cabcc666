"""Shared fixtures: a migrated database per test session, emptied after each test.

The database is SQLite in a temporary folder unless ``CARELOOP_DATABASE_URL`` names PostgreSQL;
then each session works in its own fresh schema, dropped at the end. With
``CARELOOP_REQUIRE_POSTGRES=1`` (CI) an unreachable PostgreSQL is an error, never a skip, and with
``CARELOOP_NO_SKIPS=1`` any skipped test fails the run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from careloop.engine import db as dbmod
from careloop.engine.models import Base, load_all_models
from careloop.engine.registry import Registry

load_all_models()

ROOT = Path(__file__).resolve().parent.parent

# The audit chain's key and checkpoints live outside the database: the suite gets its own
# (inherited by every child process: builder simulations, CLI runs).
_AUDIT_DIR = Path(tempfile.mkdtemp(prefix="careloop-audit-"))
# Under pytest-xdist each worker inherits the controller's environment: a worker gets its own
# files (a cleanup in one worker must not delete another's checkpoints).
_set = os.environ.__setitem__ if os.environ.get("PYTEST_XDIST_WORKER") else os.environ.setdefault
_set("CARELOOP_AUDIT_KEY_FILE", str(_AUDIT_DIR / "audit.key"))
_set("CARELOOP_AUDIT_CHECKPOINTS", str(_AUDIT_DIR / "checkpoints.jsonl"))
# Tables a test's cleanup keeps: the audit chain's anchor is written once per database.
KEPT = {"audit_anchor"}


def empty_tables(engine: Engine) -> None:
    """Empty every table but the anchor; the audit table's append-only triggers are lifted for
    the cleanup only (the test database's owner may; the application has no such switch)."""
    from careloop.engine import audit_guard

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            audit_guard.remove(conn)
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in KEPT:
                conn.execute(table.delete())
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            audit_guard.install(conn)
    Path(os.environ["CARELOOP_AUDIT_CHECKPOINTS"]).unlink(missing_ok=True)


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
    empty_tables(db_engine)


Tamper = Callable[..., None]


@pytest.fixture
def tamper(db_engine: Engine) -> Tamper:
    """Run SQL as an attacker holding the tables' owner rights would: the append-only triggers
    dropped, the statement run, the triggers put back."""
    from careloop.engine import audit_guard

    def run(statement: str, params: dict[str, object] | None = None,
            engine: Engine | None = None) -> None:
        with (engine or db_engine).begin() as conn:
            audit_guard.remove(conn)
            conn.execute(text(statement), params or {})
            audit_guard.install(conn)
    return run


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


def core_registry() -> Registry:
    """The registry as the built-ins alone fill it (no installed extension): what core docs and
    golden files describe. CI installs the example extension package (tests/plugins/)."""
    from careloop.engine.plugins import make_manager

    core = Registry()
    core.load_plugins(make_manager(installed=False))
    return core


def extension_names() -> set[str]:
    """Names an installed extension added to any catalogue of the loaded registry."""
    from careloop.engine.registry import loaded_registry

    full, core = loaded_registry(), core_registry()
    return {name for sort in full.sorts() for name in full.catalogue(sort).names()
            if name not in core.catalogue(sort)}


def without_extensions(text: str) -> str:
    """``text`` with the names an installed extension added taken out of the lists it names
    ("one of 'approval', 'phone_robot', 'wait'" → "one of 'approval', 'wait'")."""
    import re

    for name in sorted(extension_names()):
        quoted = rf"'?{re.escape(name)}'?"
        text = re.sub(rf"{quoted}, ", "", text)
        text = re.sub(rf", {quoted}(?=[)\s\]])", "", text)
    return text
