"""form engine tables: form_requests, submissions, submission_answers

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = ("forms",)
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "form_requests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("form_key", sa.String(length=64), nullable=False),
        sa.Column("form_version", sa.Integer(), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("encounter_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source_ref", sa.String(length=255), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("draft", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name=op.f("fk_form_requests_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_form_requests")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_form_requests_token_hash")),
    )
    op.create_index(op.f("ix_form_requests_form_key"), "form_requests", ["form_key"])
    op.create_index(op.f("ix_form_requests_patient_id"), "form_requests", ["patient_id"])
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("form_key", sa.String(length=64), nullable=False),
        sa.Column("form_version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("encounter_id", sa.String(length=64), nullable=True),
        sa.Column("department_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("entered_by", sa.String(length=64), nullable=True),
        sa.Column("locale", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("answers", JSON, nullable=False),
        sa.Column("scores", JSON, nullable=False),
        sa.Column("bands", JSON, nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name=op.f("fk_submissions_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
    )
    op.create_index(op.f("ix_submissions_patient_id"), "submissions", ["patient_id"])
    op.create_index(op.f("ix_submissions_department_id"), "submissions", ["department_id"])
    op.create_index("ix_submissions_form_key_submitted_at", "submissions",
                    ["form_key", "submitted_at"])
    op.create_table(
        "submission_answers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("form_key", sa.String(length=64), nullable=False),
        sa.Column("field_key", sa.String(length=130), nullable=False),
        sa.Column("row_key", sa.String(length=64), nullable=True),
        sa.Column("value_number", sa.Float(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.Column("value_code", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"],
                                name=op.f("fk_submission_answers_submission_id_submissions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submission_answers")),
    )
    op.create_index(op.f("ix_submission_answers_submission_id"), "submission_answers",
                    ["submission_id"])
    op.create_index("ix_submission_answers_form_field", "submission_answers",
                    ["form_key", "field_key"])


def downgrade() -> None:
    op.drop_table("submission_answers")
    op.drop_table("submissions")
    op.drop_table("form_requests")
