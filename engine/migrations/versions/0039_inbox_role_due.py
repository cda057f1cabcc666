"""The role queue's index ends with the due date: the inbox reads a queue in due order

``(assignee_role, department_id, status)`` becomes ``(assignee_role, department_id, status,
due_at)``: a ward nurse's *mine* view reads her ward's queue as an ordered index range (the first
200 in due order) instead of sorting the whole queue (120,000 open tasks at regional volume).
The new index serves every lookup the old one did, which is dropped.

Revision ID: 0039
Revises: 0012
"""
from alembic import op

revision = "0039"
down_revision = "0012"
branch_labels = None
depends_on = ("0032",)  # the inbox indexes (tasks come with the domain tables, 0002)


def upgrade() -> None:
    op.create_index("ix_tasks_role_department_status_due", "tasks",
                    ["assignee_role", "department_id", "status", "due_at"])
    op.drop_index("ix_tasks_role_department_status", table_name="tasks")


def downgrade() -> None:
    op.create_index("ix_tasks_role_department_status", "tasks",
                    ["assignee_role", "department_id", "status"])
    op.drop_index("ix_tasks_role_department_status_due", table_name="tasks")
