"""Alembic revisions of the reports engine's tables (its own branch; see docs/architecture.md)."""
