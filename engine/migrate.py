"""Run Alembic migrations programmatically (``careloop db upgrade`` / ``db current``).

Every migration runs in its own transaction, on SQLite too: the driver's implicit transaction
handling is switched off for the migrating connection and each step is ``BEGIN IMMEDIATE`` …
``COMMIT`` with its revision recorded inside, so a process killed mid-upgrade leaves the
database at the last finished revision and the next upgrade simply continues. A database left
half-migrated by an older Careloop (tables of a step without its revision) is refused with what
to do (:class:`UpgradeRefused`), never with a stack trace.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event, inspect
from sqlalchemy.exc import OperationalError, ProgrammingError

from careloop.engine.db import default_engine, make_engine
from careloop.engine.errors import CareloopError

if TYPE_CHECKING:
    import pluggy

# Test hook: stop (for good) right after this revision's statements ran, before its commit, so a
# test can kill -9 a real ``careloop db upgrade`` in the middle of a step.
PAUSE_ENV = "CARELOOP_TEST_PAUSE_MIGRATION"

RECOVERY = ("restore the backup taken before the upgrade (careloop backup restore --force "
            "FILE), then run careloop db upgrade again")


class UpgradeRefused(CareloopError):
    """Raised when ``db upgrade`` will not touch a database: tables without a recorded
    revision (an upgrade by an older Careloop was interrupted), or a revision this Careloop
    does not know (the database was upgraded by a newer one). The message says what to do."""


def version_locations(plugins: pluggy.PluginManager | None = None) -> list[str]:
    """Every plugin's Alembic version folders (``migration_locations`` hook): the engine's own
    (``0001``, ``0002`` and the foundation's later revisions), then one branch per engine and per
    installed extension."""
    from careloop.engine.plugins import migration_locations

    return migration_locations(plugins)


def alembic_config(engine: Engine, plugins: pluggy.PluginManager | None = None) -> Config:
    """``plugins``: another plugin manager than the process's (a test's, with one more plugin)."""
    cfg = Config()
    cfg.set_main_option("script_location", "careloop.engine:migrations")
    cfg.set_main_option("version_locations", " ".join(version_locations(plugins)))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["engine"] = engine
    cfg.attributes["plugins"] = plugins
    return cfg


def script_directory(engine: Engine | None = None,
                     plugins: pluggy.PluginManager | None = None) -> ScriptDirectory:
    """The migration history (every engine's versions), as Alembic sees it."""
    return ScriptDirectory.from_config(alembic_config(engine or default_engine(), plugins))


def _transactional_sqlite(engine: Engine) -> Engine | None:
    """A second engine on the same SQLite file whose transactions include DDL: pysqlite opens
    no transaction before CREATE/ALTER/DROP, so without this each statement commits alone."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    migrating = make_engine(engine.url.render_as_string(hide_password=False))

    @event.listens_for(migrating, "connect")
    def _no_implicit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we say BEGIN ourselves

    @event.listens_for(migrating, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return migrating


def _pause_hook(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    if step.is_upgrade and step.up_revision_id == os.environ.get(PAUSE_ENV):
        print(f"paused in revision {step.up_revision_id}", file=sys.stderr, flush=True)
        while True:  # until the test kills this process
            time.sleep(1)


def _refuse_strays(connection: Connection, script: ScriptDirectory) -> None:
    current = set(MigrationContext.configure(connection).get_current_heads())
    unknown = sorted(r for r in current if not _known(script, r))
    if unknown:
        raise UpgradeRefused(
            f"the database is at revision {', '.join(unknown)}, which this Careloop does not "
            "know: it was upgraded by a newer version; run that version, or restore a backup "
            "made before (careloop backup restore --force FILE)")
    tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
    if not current and tables:
        raise UpgradeRefused(
            f"the database has {len(tables)} table(s) but no recorded revision: an upgrade "
            f"was interrupted before its first step was recorded; {RECOVERY}, or start from "
            "an empty database")


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        script.get_revision(revision)
    except Exception:  # alembic raises several kinds for an unknown id
        return False
    return True


def _half_migrated(exc: Exception, connection: Connection) -> UpgradeRefused:
    text = str(getattr(exc, "orig", exc))
    found = re.search(r'(?:table|relation) "?([\w.]+)"? already exists', text)
    where = ", ".join(sorted(MigrationContext.configure(connection).get_current_heads()))
    table = f"table {found.group(1)}" if found else "an object"
    return UpgradeRefused(
        f"the database is half-migrated: it is recorded at revision {where or '(none)'} but "
        f"{table} of a later step already exists (an upgrade by an older Careloop was "
        f"interrupted); {RECOVERY}")


def upgrade(engine: Engine | None = None, revision: str = "heads",
            plugins: pluggy.PluginManager | None = None) -> None:
    """Bring the database schema to the newest revision (idempotent); the audit key file is
    created first when there is none (``careloop up`` and ``careloop db upgrade`` come here).

    Raises:
        UpgradeRefused: the database is half-migrated or newer than this Careloop.
    """
    from careloop.engine.audit_key import ensure_key

    ensure_key()
    engine = engine or default_engine()
    cfg = alembic_config(engine, plugins)
    cfg.attributes["transaction_per_migration"] = True
    if os.environ.get(PAUSE_ENV):
        cfg.attributes["on_version_apply"] = _pause_hook
    migrating = _transactional_sqlite(engine)
    try:
        with (migrating or engine).connect() as connection:
            _refuse_strays(connection, ScriptDirectory.from_config(cfg))
            if connection.in_transaction():
                connection.commit()
            cfg.attributes["connection"] = connection
            try:
                command.upgrade(cfg, revision)
            except (OperationalError, ProgrammingError) as exc:
                if "already exists" not in str(exc):
                    raise
                connection.rollback()
                raise _half_migrated(exc, connection) from None
            if connection.in_transaction():
                connection.commit()
    finally:
        if migrating is not None:
            migrating.dispose()


def downgrade(engine: Engine, revision: str,
              plugins: pluggy.PluginManager | None = None) -> None:
    """Take the schema down to ``revision``; ``"<branch>@base"`` removes one plugin's tables and
    leaves every other branch as it is."""
    cfg = alembic_config(engine, plugins)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def current_revisions(engine: Engine | None = None) -> set[str]:
    engine = engine or default_engine()
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def head_revisions(engine: Engine | None = None,
                   plugins: pluggy.PluginManager | None = None) -> set[str]:
    return set(script_directory(engine, plugins).get_heads())


def applied_revisions(engine: Engine | None = None,
                      plugins: pluggy.PluginManager | None = None) -> set[str]:
    """Every revision the database holds: the current ones and all they stand on. A head that a
    later revision ``depends_on`` (0021 needs 0003 and 0011) leaves the version table once that
    revision is applied, yet stays applied."""
    engine = engine or default_engine()
    script = script_directory(engine, plugins)
    current = tuple(current_revisions(engine))
    return {rev.revision for rev in script.iterate_revisions(current, "base")
            if rev is not None} if current else set()


def is_current(engine: Engine | None = None,
               plugins: pluggy.PluginManager | None = None) -> bool:
    engine = engine or default_engine()
    return head_revisions(engine, plugins) <= applied_revisions(engine, plugins)
