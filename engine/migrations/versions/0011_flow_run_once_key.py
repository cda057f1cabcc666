"""flow_runs.once_key: a trigger's uniqueness (once per patient / encounter) held by the database

Revision ID: 0011
Revises: 0008, 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
# 0005 made flow_runs on the flows branch; the history is branched per engine, so this merges
# the flows branch with 0008 (the latest) rather than only depending on it.
down_revision = ("0008", "0005")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("once_key", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_flow_runs_once_key"), ["once_key"])


def downgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_flow_runs_once_key"), type_="unique")
        batch_op.drop_column("once_key")
