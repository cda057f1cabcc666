"""Indexes for the staff inbox and patient search at regional volume (issue 18)

Each inbox view reads open tasks of one assignee, one department or one role queue, due first:
``(assignee_user_id, status, due_at)``, ``(department_id, status, due_at)`` and
``(assignee_role, department_id, status)``; a cancelled stay closes its tasks by
``encounter_id``. Department scoping reads encounters by department
*or ward*: ``encounters.ward_id`` gets an index so that OR is two index scans. On PostgreSQL,
patient search (``name``/``mrn`` containing the text, ``id`` starting with it) uses trigram GIN
indexes (``pg_trgm``, created if the database allows; without it search still works, scanning).

Revision ID: 0032
Revises: 0012
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0012"
branch_labels = None
depends_on = ("0002",)  # tasks, encounters and patients come with the domain tables

log = logging.getLogger("careloop.migrations")

TRIGRAM = (("ix_patients_name_trgm", "name"), ("ix_patients_mrn_trgm", "mrn"),
           ("ix_patients_id_trgm", "id"))


def upgrade() -> None:
    op.create_index("ix_tasks_assignee_status_due", "tasks",
                    ["assignee_user_id", "status", "due_at"])
    op.create_index("ix_tasks_department_status_due", "tasks",
                    ["department_id", "status", "due_at"])
    op.create_index("ix_tasks_role_department_status", "tasks",
                    ["assignee_role", "department_id", "status"])
    op.create_index("ix_encounters_ward_id", "encounters", ["ward_id"])
    # a cancelled discharge closes the stay's tasks (and deleting a stay checks its tasks)
    op.create_index("ix_tasks_encounter_id", "tasks", ["encounter_id"])
    if op.get_bind().dialect.name == "postgresql":
        _trigram_indexes()


def _trigram_schema(bind: sa.Connection) -> str | None:
    """The schema holding pg_trgm (created in ``public`` when missing), or None when this
    database user may not create it."""
    find = sa.text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                   "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'")
    schema = bind.execute(find).scalar()
    if schema is not None:
        return str(schema)
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    except sa.exc.DBAPIError:
        log.warning("pg_trgm could not be created (ask the database administrator for "
                    "CREATE EXTENSION pg_trgm): patient search scans the patients table")
        return None
    return str(bind.execute(find).scalar())


def _trigram_indexes() -> None:
    bind = op.get_bind()
    schema = _trigram_schema(bind)
    if schema is None:
        return
    for name, column in TRIGRAM:
        # qualified: the schema the tables live in need not have pg_trgm on its search path
        op.execute(f'CREATE INDEX IF NOT EXISTS {name} ON patients '
                   f'USING gin ({column} "{schema}".gin_trgm_ops)')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, _ in TRIGRAM:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    op.drop_index("ix_tasks_encounter_id", table_name="tasks")
    op.drop_index("ix_encounters_ward_id", table_name="encounters")
    op.drop_index("ix_tasks_role_department_status", table_name="tasks")
    op.drop_index("ix_tasks_department_status_due", table_name="tasks")
    op.drop_index("ix_tasks_assignee_status_due", table_name="tasks")
