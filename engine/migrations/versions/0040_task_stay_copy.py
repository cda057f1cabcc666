"""Tasks carry their stay's department and ward: the inbox's sensitive-stay check reads the task

``tasks.stay_department_id`` and ``tasks.stay_ward_id`` copy the department and ward of the
task's encounter (filled now for the tasks stored), kept by triggers when a task is made or
re-linked and when a stay moves (``engine/task_stay.py``). The inbox's scoping condition then
needs no look-up of ``encounters`` per task (two correlated ``NOT EXISTS`` before: seconds for a
view of 100,000 open tasks).

Revision ID: 0040
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

from careloop.engine import task_stay

revision = "0040"
down_revision = "0012"
branch_labels = None
depends_on = ("0039",)  # the inbox's indexes (tasks and encounters come with 0002)


def upgrade() -> None:
    op.add_column("tasks", sa.Column("stay_department_id", sa.String(length=64), nullable=True))
    op.add_column("tasks", sa.Column("stay_ward_id", sa.String(length=64), nullable=True))
    task_stay.install(op.get_bind())


def downgrade() -> None:
    task_stay.remove(op.get_bind())
    op.drop_column("tasks", "stay_ward_id")
    op.drop_column("tasks", "stay_department_id")
