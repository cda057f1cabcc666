"""governed definitions: the outbound allow-list, queued webhook calls, publish requests

Revision ID: 0016
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0016"
down_revision = "0012"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outbound_hosts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("allow_private", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("added_by", sa.String(length=128), nullable=True),
        sa.Column("added_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_hosts")),
        sa.UniqueConstraint("host", name=op.f("uq_outbound_hosts_host")),
    )
    op.create_table(
        "webhook_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("step_run_id", sa.Integer(), nullable=True),
        sa.Column("step_key", sa.String(length=64), nullable=True),
        sa.Column("flow_key", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_calls")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_webhook_calls_idempotency_key")),
    )
    with op.batch_alter_table("webhook_calls") as batch:
        batch.create_index(batch.f("ix_webhook_calls_run_id"), ["run_id"], unique=False)
        batch.create_index(batch.f("ix_webhook_calls_next_attempt_at"), ["next_attempt_at"],
                           unique=False)
    op.create_table(
        "publish_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("confirm_orphans", sa.Boolean(), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("requested_by_user_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publish_requests")),
    )
    with op.batch_alter_table("publish_requests") as batch:
        batch.create_index(batch.f("ix_publish_requests_app_id"), ["app_id"], unique=False)
        batch.create_index(batch.f("ix_publish_requests_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("publish_requests")
    op.drop_table("webhook_calls")
    op.drop_table("outbound_hosts")
