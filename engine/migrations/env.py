"""Alembic environment: run programmatically by careloop.engine.migrate (no alembic.ini).

Each migration is its own transaction (``transactional_ddl`` also on SQLite, whose migrating
connection ``careloop.engine.migrate`` opens with explicit ``BEGIN``): a step and its revision
are committed together or not at all.
"""

from __future__ import annotations

from alembic import context

from careloop.engine.models import load_all_models

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through careloop.engine.migrate
    raise RuntimeError("run migrations with 'careloop db upgrade'")

context.configure(
    connection=connection,
    target_metadata=load_all_models(config.attributes.get("plugins")),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    transactional_ddl=True,
    transaction_per_migration=bool(config.attributes.get("transaction_per_migration")),
    **({"on_version_apply": config.attributes["on_version_apply"]}
       if "on_version_apply" in config.attributes else {}),
)
with context.begin_transaction():
    context.run_migrations()
