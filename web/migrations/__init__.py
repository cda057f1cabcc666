"""Alembic revisions of the web engine's tables (its own branch; see docs/architecture.md)."""
