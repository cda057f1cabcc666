"""delivery you can trust: outbox claim tokens and send-once records, dead letters and the
delivery incidents they open

Revision ID: 0018
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0012"
branch_labels = None
depends_on = ("0010",)  # outbox_messages with its 0010 columns (reason, expiry)


def upgrade() -> None:
    op.create_table(
        "delivery_incidents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("dead_count", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_incidents")),
    )
    with op.batch_alter_table("delivery_incidents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_incidents_channel"), ["channel"],
                              unique=False)
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("attempt_started_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("first_failed_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("incident_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("provider_ref", sa.String(length=255), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_messages_incident_id_delivery_incidents"),
            "delivery_incidents", ["incident_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_outbox_messages_incident_id_delivery_incidents"), type_="foreignkey")
        for column in ("provider_ref", "incident_id", "dead_at", "first_failed_at",
                       "attempt_started_at", "claim_token"):
            batch_op.drop_column(column)
    with op.batch_alter_table("delivery_incidents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_incidents_channel"))
    op.drop_table("delivery_incidents")
