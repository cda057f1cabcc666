"""inbound adapters (issue 15): the poll state of each HIS database view (watermark, lease, last
error), column mappings remembered per patient-import source, and patient import jobs

Revision ID: 0024
Revises: 0021
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0024"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "his_view_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("watermark", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=96), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows_seen", sa.Integer(), nullable=False),
        sa.Column("events_accepted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_his_view_state")),
    )
    op.create_table(
        "import_mappings",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("mapping", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_import_mappings")),
    )
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("mapping", JSON, nullable=False),
        sa.Column("report", JSON, nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("done_rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_jobs")),
    )


def downgrade() -> None:
    op.drop_table("import_jobs")
    op.drop_table("import_mappings")
    op.drop_table("his_view_state")
