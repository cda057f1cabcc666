"""WeChat and WeCom: the access-token cache shared by processes (``channel_tokens``), one-time
openid binding tokens (``wechat_bindings``) and staff members' WeCom user ids
(``staff_addresses``)

Revision ID: 0028
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0012"
branch_labels = None
depends_on = ("0005",)  # the flows branch (patients and users come with 0002)


def upgrade() -> None:
    op.create_table(
        "channel_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("channel_type", sa.String(length=32), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=1024), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("refreshing_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshed_by", sa.String(length=128), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("channel_type", "app_id", name="uq_channel_tokens_type_app"),
    )
    op.create_table(
        "wechat_bindings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(length=64), sa.ForeignKey("patients.id"),
                  nullable=False, index=True),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "staff_addresses",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False,
                  index=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=128), nullable=False),
        sa.UniqueConstraint("user_id", "channel", name="uq_staff_addresses_user"),
    )


def downgrade() -> None:
    op.drop_table("staff_addresses")
    op.drop_table("wechat_bindings")
    op.drop_table("channel_tokens")
