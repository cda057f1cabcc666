"""Run Alembic migrations programmatically (``careloop db upgrade`` / ``db current``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from careloop.engine.db import default_engine

if TYPE_CHECKING:
    import pluggy


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


def upgrade(engine: Engine | None = None, revision: str = "heads",
            plugins: pluggy.PluginManager | None = None) -> None:
    """Bring the database schema to the newest revision (idempotent); the audit key file is
    created first when there is none (``careloop up`` and ``careloop db upgrade`` come here)."""
    from careloop.engine.audit_key import ensure_key

    ensure_key()
    engine = engine or default_engine()
    cfg = alembic_config(engine, plugins)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


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
    script = ScriptDirectory.from_config(alembic_config(engine or default_engine(), plugins))
    return set(script.get_heads())


def is_current(engine: Engine | None = None,
               plugins: pluggy.PluginManager | None = None) -> bool:
    engine = engine or default_engine()
    return current_revisions(engine) == head_revisions(engine, plugins)
