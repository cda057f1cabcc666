"""Consult / Q&A: a patient's question to a department's consult desk and its answer
(``consults``), and the expiring links that open the thread on the phone (``consult_links``)

Revision ID: 0035
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0012"
branch_labels = None
depends_on = ("0005",)  # the flows branch (patients, departments, users, tasks come with 0002)


def upgrade() -> None:
    op.create_table(
        "consults",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(length=64), sa.ForeignKey("patients.id"),
                  nullable=False, index=True),
        sa.Column("desk_key", sa.String(length=64), nullable=False),
        sa.Column("department_id", sa.String(length=64), sa.ForeignKey("departments.id"),
                  nullable=True, index=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("locale", sa.String(length=16), nullable=False),
        sa.Column("via", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=True,
                  index=True),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("canned_key", sa.String(length=64), nullable=True),
        sa.Column("answered_by", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "consult_links",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("consult_id", sa.Integer(), sa.ForeignKey("consults.id"), nullable=False,
                  index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("consult_links")
    op.drop_table("consults")
