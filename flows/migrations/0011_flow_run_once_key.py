"""flow_runs.once_key (a trigger's uniqueness, held by the database); integration_queue (HIS
events with unknown reference codes parked for IT)

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0011"
down_revision = "0010"  # after the outbox migration, which joins the flows branch (0005) and 0008
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("once_key", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_flow_runs_once_key"), ["once_key"])
    op.create_table(
        "integration_queue",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("event", JSON, nullable=False),
        sa.Column("problems", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_queue")),
        sa.UniqueConstraint("event_id", name=op.f("uq_integration_queue_event_id")),
    )
    with op.batch_alter_table("integration_queue", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_integration_queue_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("integration_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_integration_queue_status"))
    op.drop_table("integration_queue")
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_flow_runs_once_key"), type_="unique")
        batch_op.drop_column("once_key")
