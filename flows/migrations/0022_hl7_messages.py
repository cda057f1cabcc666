"""HL7 v2 in (issue 15): every message received over MLLP or HTTP, stored with its raw bytes,
charset, state, the ACK answered and the events it became; unique per sender and MSH-10

Revision ID: 0022
Revises: 0021
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sending_application", sa.String(length=180), nullable=False),
        sa.Column("sending_facility", sa.String(length=180), nullable=False),
        sa.Column("control_id", sa.String(length=64), nullable=True),
        sa.Column("message_type", sa.String(length=16), nullable=True),
        sa.Column("version", sa.String(length=16), nullable=True),
        sa.Column("charset", sa.String(length=32), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("ack_code", sa.String(length=2), nullable=True),
        sa.Column("ack", sa.Text(), nullable=True),
        sa.Column("errors", JSON, nullable=False),
        sa.Column("event_ids", JSON, nullable=False),
        sa.Column("merged_patient_id", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_messages")),
        sa.UniqueConstraint("sending_application", "sending_facility", "control_id",
                            name="uq_hl7_messages_sender_control_id"),
    )
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hl7_messages_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_hl7_messages_received_at"), ["received_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hl7_messages_received_at"))
        batch_op.drop_index(batch_op.f("ix_hl7_messages_state"))
    op.drop_table("hl7_messages")
