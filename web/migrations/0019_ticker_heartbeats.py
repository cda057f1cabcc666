"""the ticker's heartbeat: one row per process, read by /readyz

Revision ID: 0019
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0012"
branch_labels = None
depends_on = ("0007",)  # the web runtime's tables


def upgrade() -> None:
    op.create_table(
        "ticker_heartbeats",
        sa.Column("process", sa.String(length=128), primary_key=True),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ticker_heartbeats")
