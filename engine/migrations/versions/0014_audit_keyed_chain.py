"""audit trail: keyed chain anchor, append-only triggers

The rows already in ``audit_log`` keep their unkeyed SHA-256 chain: the anchor records where it
ends (last id, last hash, row count), signed with the audit key (created now under ``var/`` when
missing), and every later row is chained with HMAC-SHA256 from that hash. Triggers refuse UPDATE
and DELETE (and TRUNCATE on PostgreSQL) on both audit tables.

Revision ID: 0014
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

from careloop.engine import audit, audit_guard
from careloop.engine.models import UTCDateTime

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    anchor = op.create_table(
        "audit_anchor",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("legacy_last_id", sa.Integer(), nullable=False),
        sa.Column("legacy_last_hash", sa.String(length=80), nullable=False),
        sa.Column("legacy_count", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_anchor")),
        sa.UniqueConstraint("chain_id", name=op.f("uq_audit_anchor_chain_id")),
    )
    connection = op.get_bind()
    op.bulk_insert(anchor, [audit.anchor_values(connection)])
    audit_guard.install(connection)


def downgrade() -> None:
    audit_guard.remove(op.get_bind())
    op.drop_table("audit_anchor")
