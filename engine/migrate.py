"""Run Alembic migrations programmatically (``careloop db upgrade`` / ``db current``)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from careloop.engine.db import default_engine

# Engines that add tables ship their own versions folder; all are one linear history.
VERSION_LOCATIONS = ("careloop.engine:migrations/versions",)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "careloop.engine:migrations")
    cfg.set_main_option("version_locations", " ".join(VERSION_LOCATIONS))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine | None = None, revision: str = "heads") -> None:
    """Bring the database schema to the newest revision (idempotent); the audit key file is
    created first when there is none (``careloop up`` and ``careloop db upgrade`` come here)."""
    from careloop.engine.audit_key import ensure_key

    ensure_key()
    engine = engine or default_engine()
    cfg = alembic_config(engine)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def current_revisions(engine: Engine | None = None) -> set[str]:
    engine = engine or default_engine()
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def head_revisions(engine: Engine | None = None) -> set[str]:
    script = ScriptDirectory.from_config(alembic_config(engine or default_engine()))
    return set(script.get_heads())


def applied_revisions(engine: Engine | None = None) -> set[str]:
    """Every revision the database holds: the current ones and all they stand on. A head that a
    later revision ``depends_on`` (0021 needs 0003 and 0011) leaves the version table once that
    revision is applied, yet stays applied."""
    engine = engine or default_engine()
    script = ScriptDirectory.from_config(alembic_config(engine))
    current = tuple(current_revisions(engine))
    return {rev.revision for rev in script.iterate_revisions(current, "base")
            if rev is not None} if current else set()


def is_current(engine: Engine | None = None) -> bool:
    engine = engine or default_engine()
    return head_revisions(engine) <= applied_revisions(engine)
