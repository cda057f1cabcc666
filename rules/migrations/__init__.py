"""Alembic revisions of the rules engine's tables (its own branch; see docs/architecture.md)."""
