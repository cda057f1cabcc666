"""report engine: alert states and result cache

Revision ID: 0006
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0002"
branch_labels = ("reports",)
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "report_alert_states",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_key", sa.String(length=64), nullable=False),
        sa.Column("group_value", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.Column("last_evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_alert_states")),
        sa.UniqueConstraint("alert_key", "group_value",
                            name="uq_report_alert_states_alert_group"),
    )
    op.create_table(
        "report_cache",
        sa.Column("cache_key", sa.String(length=80), nullable=False),
        sa.Column("dataset_key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("result", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cache_key", name=op.f("pk_report_cache")),
    )
    op.create_index("ix_report_cache_dataset", "report_cache", ["dataset_key"])


def downgrade() -> None:
    op.drop_index("ix_report_cache_dataset", table_name="report_cache")
    op.drop_table("report_cache")
    op.drop_table("report_alert_states")
