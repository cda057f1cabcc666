"""Alembic migrations of the foundation tables (``careloop db upgrade``)."""
