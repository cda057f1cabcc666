"""Health-education library: items sent to patients and their opening and reading
(``education_sends``), uploaded videos and PDFs (``education_media``)

Revision ID: 0034
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0012"
branch_labels = None
depends_on = ("0005",)  # the flows branch (patients and encounters come with 0002)


def upgrade() -> None:
    op.create_table(
        "education_sends",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False, unique=True),
        sa.Column("article_key", sa.String(length=64), nullable=False, index=True),
        sa.Column("article_version", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), sa.ForeignKey("patients.id"),
                  nullable=False, index=True),
        sa.Column("encounter_id", sa.String(length=64), sa.ForeignKey("encounters.id"),
                  nullable=True),
        sa.Column("department_id", sa.String(length=64), nullable=False, index=True),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("source_ref", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "education_media",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(length=64), nullable=False, unique=True),
        sa.Column("department_id", sa.String(length=64), nullable=False, index=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("education_media")
    op.drop_table("education_sends")
