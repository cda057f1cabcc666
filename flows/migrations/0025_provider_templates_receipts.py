"""provider templates and delivery receipts: each provider's rendered template entry on the
message, the reference of the link it carries, the provider's later report (delivered / failed /
read) and when the patient opened the link

Revision ID: 0025
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0025"
down_revision = "0012"
branch_labels = None
depends_on = ("0018",)  # outbox_messages with provider_ref (0018)


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_params", JSON, nullable=True))
        batch_op.add_column(sa.Column("link_ref", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("receipt_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("receipt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("receipt_detail", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_outbox_messages_link_ref"), ["link_ref"],
                              unique=False)
        batch_op.create_index("ix_outbox_messages_provider_ref", ["provider_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_messages_provider_ref")
        batch_op.drop_index(batch_op.f("ix_outbox_messages_link_ref"))
        for column in ("opened_at", "receipt_detail", "receipt_at", "receipt_state", "link_ref",
                       "provider_params"):
            batch_op.drop_column(column)
