"""Laboratory results pushed to the patient: the expiring links of the notices
(``result_links``; the results themselves are ``result.recorded`` events)

Revision ID: 0029
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0029"
down_revision = "0012"
branch_labels = None
depends_on = ("0005",)  # the flows branch (patients come with 0002)

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "result_links",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(length=64), sa.ForeignKey("patients.id"),
                  nullable=False, index=True),
        sa.Column("result_ids", JSON, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("result_links")
