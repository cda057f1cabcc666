"""Health management: cards of patients registered by hand (``health_cards``: the card number
unique in the hospital, one card a patient, the token of the patient's page) and each
department's booking-link template (``booking_links``)

Revision ID: 0030
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0012"
branch_labels = None
depends_on = ("0005",)  # the flows branch (patients and departments come with 0002)


def upgrade() -> None:
    op.create_table(
        "health_cards",
        sa.Column("card_no", sa.String(length=32), primary_key=True),
        sa.Column("patient_id", sa.String(length=64), sa.ForeignKey("patients.id"),
                  nullable=False, unique=True),
        sa.Column("department_id", sa.String(length=64), sa.ForeignKey("departments.id"),
                  nullable=False, index=True),
        sa.Column("page_token", sa.String(length=43), nullable=False, unique=True),
        sa.Column("registered_by", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "booking_links",
        sa.Column("department_id", sa.String(length=64), sa.ForeignKey("departments.id"),
                  primary_key=True),
        sa.Column("template", sa.String(length=500), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("booking_links")
    op.drop_table("health_cards")
