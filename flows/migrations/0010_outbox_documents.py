"""outbox expiry and reasons; discharge documents and their patient links

Revision ID: 0010
Revises: 0005, 0008
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = ("0005", "0008")  # after the outbox table (flows) and 0008
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("link_expires_at", sa.DateTime(timezone=True),
                                      nullable=True))
    op.create_table(
        "discharge_documents",
        sa.Column("encounter_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("medications", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["encounter_id"], ["encounters.id"],
                                name=op.f("fk_discharge_documents_encounter_id_encounters")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name=op.f("fk_discharge_documents_patient_id_patients")),
        sa.PrimaryKeyConstraint("encounter_id", name=op.f("pk_discharge_documents")),
    )
    with op.batch_alter_table("discharge_documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_discharge_documents_patient_id"), ["patient_id"],
                              unique=False)
    op.create_table(
        "document_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("encounter_id", sa.String(length=64), nullable=False),
        sa.Column("source_ref", sa.String(length=255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["encounter_id"], ["encounters.id"],
                                name=op.f("fk_document_links_encounter_id_encounters")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name=op.f("fk_document_links_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_document_links_token_hash")),
    )
    with op.batch_alter_table("document_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_document_links_patient_id"), ["patient_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("document_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_document_links_patient_id"))
    op.drop_table("document_links")
    with op.batch_alter_table("discharge_documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_discharge_documents_patient_id"))
    op.drop_table("discharge_documents")
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_column("link_expires_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("reason")
