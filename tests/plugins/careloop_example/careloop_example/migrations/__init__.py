"""Alembic revisions of the example package: one branch, ``careloop_example``."""
