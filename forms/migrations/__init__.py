"""Alembic revisions of the forms engine's tables (its own branch; see docs/architecture.md)."""
