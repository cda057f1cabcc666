"""Index the timers of a step run: ending a step cancels its pending timers in one ``UPDATE`` by
``step_run_id`` (with the ended runs' by ``run_id``); without an index SQLite read every pending
timer for it (a sweep 17× slower per timer with a million pending than with ten thousand).

Revision ID: 0038
Revises: 0012
"""
from alembic import op

revision = "0038"
down_revision = "0012"
branch_labels = None
depends_on = ("0005",)  # the flows branch: flow_timers


def upgrade() -> None:
    op.create_index("ix_flow_timers_step_run", "flow_timers", ["step_run_id"])


def downgrade() -> None:
    op.drop_index("ix_flow_timers_step_run", table_name="flow_timers")
