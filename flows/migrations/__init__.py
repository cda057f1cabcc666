"""Alembic revisions of the flows engine's tables (its own branch; see docs/architecture.md)."""
