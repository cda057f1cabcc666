"""rule engine tables

Revision ID: 0004
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0002"
branch_labels = ("rules",)
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rule_evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ruleset_key", sa.String(length=64), nullable=False),
        sa.Column("ruleset_version", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("submission_id", sa.Integer(), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("matched", JSON, nullable=False),
        sa.Column("actions", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name=op.f("fk_rule_evaluations_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_evaluations")),
        sa.UniqueConstraint("ruleset_key", "ruleset_version", "event_id",
                            name="uq_rule_evaluations_ruleset_version_event"),
    )
    for column in ("ruleset_key", "patient_id", "submission_id", "task_id"):
        op.create_index(op.f(f"ix_rule_evaluations_{column}"), "rule_evaluations", [column])
    op.create_table(
        "rule_classifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dictionary_key", sa.String(length=64), nullable=False),
        sa.Column("dictionary_version", sa.Integer(), nullable=False),
        sa.Column("source_ref", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("submission_id", sa.Integer(), nullable=True),
        sa.Column("field_key", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("negative", sa.Boolean(), nullable=False),
        sa.Column("words", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name=op.f("fk_rule_classifications_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_classifications")),
        sa.UniqueConstraint("dictionary_key", "source_ref", "field_key", "category",
                            name="uq_rule_classifications_source_category"),
    )
    for column in ("source_ref", "patient_id", "submission_id", "category"):
        op.create_index(op.f(f"ix_rule_classifications_{column}"), "rule_classifications",
                        [column])
    op.create_table(
        "rule_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("ruleset_key", sa.String(length=64), nullable=False),
        sa.Column("rule_key", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("department_id", sa.String(length=64), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name=op.f("fk_rule_alerts_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_alerts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_rule_alerts_idempotency_key")),
    )
    op.create_index(op.f("ix_rule_alerts_patient_id"), "rule_alerts", ["patient_id"])
    op.create_index("ix_rule_alerts_status_level", "rule_alerts", ["status", "level"])


def downgrade() -> None:
    op.drop_table("rule_alerts")
    op.drop_table("rule_classifications")
    op.drop_table("rule_evaluations")
