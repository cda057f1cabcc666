"""Alembic environment: run programmatically by careloop.engine.migrate (no alembic.ini)."""

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
)
with context.begin_transaction():
    context.run_migrations()
