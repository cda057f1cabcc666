"""domain events as a durable queue: each row's handling state, per-patient ordering key, retries
and claims; rows already stored are handled (their handlers ran in their own transaction)

Revision ID: 0031
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0012"
branch_labels = None
depends_on = None  # domain_events comes with 0001, before 0012

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("domain_events") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False,
                                   server_default="handled"))
        batch.add_column(sa.Column("patient_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("available_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_error", sa.String(length=200), nullable=True))
    op.create_index("ix_domain_events_pending", "domain_events", ["id"],
                    postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index("ix_domain_events_patient_pending", "domain_events", ["patient_id", "id"],
                    postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index("ix_domain_events_state", "domain_events", ["state"])


def downgrade() -> None:
    op.drop_index("ix_domain_events_state", table_name="domain_events")
    op.drop_index("ix_domain_events_patient_pending", table_name="domain_events")
    op.drop_index("ix_domain_events_pending", table_name="domain_events")
    with op.batch_alter_table("domain_events") as batch:
        for name in ("last_error", "handled_at", "claimed_until", "claimed_by", "available_at",
                     "attempts", "patient_id", "state"):
            batch.drop_column(name)
