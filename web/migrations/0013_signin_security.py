"""sign-in security: TOTP replay step and pending secret, password history, sign-in throttle

Revision ID: 0013
Revises: 0012 (needs 0007)
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = ("0007",)  # the web tables (user_credentials)


def upgrade() -> None:
    with op.batch_alter_table("user_credentials") as batch:
        batch.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("totp_pending_secret", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("totp_pending_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "password_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_password_history_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_history")),
    )
    with op.batch_alter_table("password_history") as batch:
        batch.create_index(batch.f("ix_password_history_user_id"), ["user_id"], unique=False)
    op.create_table(
        "signin_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_signin_throttle")),
    )
    with op.batch_alter_table("signin_throttle") as batch:
        batch.create_index(batch.f("ix_signin_throttle_blocked_until"), ["blocked_until"],
                           unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signin_throttle") as batch:
        batch.drop_index(batch.f("ix_signin_throttle_blocked_until"))
    op.drop_table("signin_throttle")
    with op.batch_alter_table("password_history") as batch:
        batch.drop_index(batch.f("ix_password_history_user_id"))
    op.drop_table("password_history")
    with op.batch_alter_table("user_credentials") as batch:
        batch.drop_column("totp_pending_at")
        batch.drop_column("totp_pending_secret")
        batch.drop_column("totp_last_step")
