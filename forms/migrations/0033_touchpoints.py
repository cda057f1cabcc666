"""Touchpoint feedback and proxy answering: anonymous submissions (``submissions.patient_id``
nullable, ``touchpoint_key``), who answered for the patient (``proxy_relation``), and the
per-device record of accepted touchpoint answers (``touchpoint_visits``)

Revision ID: 0033
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0012"
branch_labels = None
depends_on = ("0003",)  # the forms branch (submissions)


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column("patient_id", existing_type=sa.String(length=64), nullable=True)
        batch.add_column(sa.Column("touchpoint_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("proxy_relation", sa.String(length=32), nullable=True))
        batch.create_index("ix_submissions_touchpoint_key", ["touchpoint_key"])
    op.create_table(
        "touchpoint_visits",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("touchpoint_key", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("answers_hash", sa.String(length=64), nullable=False),
        sa.Column("submission_id", sa.Integer(), sa.ForeignKey("submissions.id"),
                  nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_touchpoint_visits_device_at", "touchpoint_visits",
                    ["device", "created_at"])
    op.create_index("ix_touchpoint_visits_address", "touchpoint_visits", ["address"])


def downgrade() -> None:
    op.drop_index("ix_touchpoint_visits_address", table_name="touchpoint_visits")
    op.drop_index("ix_touchpoint_visits_device_at", table_name="touchpoint_visits")
    op.drop_table("touchpoint_visits")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_index("ix_submissions_touchpoint_key")
        batch.drop_column("proxy_relation")
        batch.drop_column("touchpoint_key")
        batch.alter_column("patient_id", existing_type=sa.String(length=64), nullable=False)
