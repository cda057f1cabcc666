"""separation of duties: pending administrative requests (a second administrator approves),
sensitive departments (their stays are seen by their own staff only), scoped API keys with
expiry and last use

Revision ID: 0015
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0015"
down_revision = "0012"
branch_labels = None
depends_on = ("0005", "0007")

SENSITIVE_BY_DEFAULT = ("psychiatry",)


def upgrade() -> None:
    with op.batch_alter_table("departments") as batch:
        batch.add_column(sa.Column("sensitive", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    departments = sa.table("departments", sa.column("id", sa.String()),
                           sa.column("sensitive", sa.Boolean()))
    op.execute(departments.update().where(departments.c.id.in_(SENSITIVE_BY_DEFAULT))
               .values(sensitive=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", JSON, nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(length=128), nullable=True))
    op.create_table(
        "admin_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("department_id", sa.String(length=64), nullable=True),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_admin_requests_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_requests")),
    )
    op.create_index(op.f("ix_admin_requests_status"), "admin_requests", ["status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_admin_requests_status"), table_name="admin_requests")
    op.drop_table("admin_requests")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("created_by")
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
        batch.drop_column("scopes")
    with op.batch_alter_table("departments") as batch:
        batch.drop_column("sensitive")
