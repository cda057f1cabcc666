"""People reports: the minimum-sample setting, staff opt-ins to their own report, and the
monthly PDF per department (``people_report_settings``, ``people_report_optins``,
``people_report_files``)

Revision ID: 0036
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0036"
down_revision = "0012"
branch_labels = None
depends_on = ("0006",)  # the reports branch (after the domain tables: users, departments)


def upgrade() -> None:
    op.create_table(
        "people_report_settings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("min_sample", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "people_report_optins",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("opted_in_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "people_report_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("department_id", sa.String(length=64), sa.ForeignKey("departments.id"),
                  nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("min_sample", sa.Integer(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("department_id", "month",
                            name="uq_people_report_files_department_month"),
    )


def downgrade() -> None:
    op.drop_table("people_report_files")
    op.drop_table("people_report_optins")
    op.drop_table("people_report_settings")
