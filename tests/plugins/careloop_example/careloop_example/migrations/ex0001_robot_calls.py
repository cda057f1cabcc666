"""robot_calls: the phone robot's calls (the example package's own branch)

Revision ID: careloop_example_0001
Revises: (a branch root; needs the core domain tables, revision 0002)
"""
import sqlalchemy as sa
from alembic import op

revision = "careloop_example_0001"
down_revision = None
branch_labels = ("careloop_example",)
depends_on = ("0002",)  # patients


def upgrade() -> None:
    op.create_table(
        "robot_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name=op.f("fk_robot_calls_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_robot_calls")),
    )
    with op.batch_alter_table("robot_calls") as batch:
        batch.create_index(batch.f("ix_robot_calls_patient_id"), ["patient_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("robot_calls") as batch:
        batch.drop_index(batch.f("ix_robot_calls_patient_id"))
    op.drop_table("robot_calls")
