"""HIS semantics (issue 20 parts 5-6): what each accepted HIS event looked like (per-field hashes,
so a re-sent event id with another body is a located 409); parked events waiting for their
patient (reason, patient id, the incident raised when one waits too long); why a form request was
closed (a cancelled encounter: the link says the follow-up is no longer needed)

Revision ID: 0021
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0021"
down_revision = "0012"
branch_labels = None
depends_on = ("0003", "0011")  # form_requests (forms), integration_queue


def upgrade() -> None:
    op.create_table(
        "his_event_fingerprints",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_his_event_fingerprints")),
    )
    with op.batch_alter_table("integration_queue", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("patient_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("incident_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_integration_queue_patient_id"), ["patient_id"],
                              unique=False)
    with op.batch_alter_table("form_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closed_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("form_requests", schema=None) as batch_op:
        batch_op.drop_column("closed_reason")
    with op.batch_alter_table("integration_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_integration_queue_patient_id"))
        batch_op.drop_column("incident_at")
        batch_op.drop_column("patient_id")
        batch_op.drop_column("reason")
    op.drop_table("his_event_fingerprints")
