"""Stage summaries sent to patients: the PDF as sent and its expiring link (``summary_links``)

Revision ID: 0023
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0012"
branch_labels = None
depends_on = ("0005",)  # the flows branch (patients come with 0002)


def upgrade() -> None:
    op.create_table(
        "summary_links",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(length=64), sa.ForeignKey("patients.id"),
                  nullable=False, index=True),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("summary_links")
