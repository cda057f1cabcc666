"""Phone follow-up calls: the call log of a task (``call_records``) and the recordings the app
keeps (``call_recordings``)

Revision ID: 0037
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0037"
down_revision = "0012"
branch_labels = None
depends_on = ("0005",)  # the flows branch (tasks and patients come with 0002)


def upgrade() -> None:
    op.create_table(
        "call_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=False,
                  index=True),
        sa.Column("patient_id", sa.String(length=64), sa.ForeignKey("patients.id"),
                  nullable=True, index=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("caller", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("recording_url", sa.String(length=1000), nullable=True),
        sa.Column("external_id", sa.String(length=128), nullable=True, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "call_recordings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.Integer(), sa.ForeignKey("call_records.id"), nullable=False,
                  unique=True),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("call_recordings")
    op.drop_table("call_records")
