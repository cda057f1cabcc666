"""builder drafts

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builder_drafts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_builder_drafts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builder_drafts")),
        sa.UniqueConstraint("user_id", "kind", "key", name="uq_builder_drafts_user_id_kind_key"),
    )
    with op.batch_alter_table("builder_drafts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_builder_drafts_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("builder_drafts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_builder_drafts_user_id"))
    op.drop_table("builder_drafts")
