"""rule alerts: acknowledged with a note

Revision ID: 0012
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rule_alerts") as batch:
        batch.add_column(sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("acknowledged_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rule_alerts") as batch:
        batch.drop_column("note")
        batch.drop_column("acknowledged_by")
        batch.drop_column("acknowledged_at")
