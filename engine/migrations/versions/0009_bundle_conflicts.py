"""definition imports and bundle conflicts

Revision ID: 0009
Revises: 0008

Backfill: for every stored definition, the newest version that was *not* published in the
builder (``builder.publish`` audit rows name the versions) is recorded as what its bundle last
brought, so the first import after upgrading keeps what staff published.
"""
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "definition_imports",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["bundles.id"],
                                name=op.f("fk_definition_imports_app_id_bundles")),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_definition_imports")),
    )
    with op.batch_alter_table("definition_imports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_definition_imports_app_id"), ["app_id"],
                              unique=False)
    op.create_table(
        "bundle_conflicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("bundle_version", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=True),
        sa.Column("title", JSON, nullable=False),
        sa.Column("body", JSON, nullable=True),
        sa.Column("source_text", sa.Text(), nullable=True),
        sa.Column("source_path", sa.String(length=255), nullable=True),
        sa.Column("live_version", sa.Integer(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["app_id"], ["bundles.id"],
                                name=op.f("fk_bundle_conflicts_app_id_bundles")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bundle_conflicts")),
    )
    with op.batch_alter_table("bundle_conflicts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bundle_conflicts_app_id"), ["app_id"], unique=False)
        batch_op.create_index("ix_bundle_conflicts_kind_key", ["kind", "key"], unique=False)
    _backfill()


def _backfill() -> None:
    bind = op.get_bind()
    audit = sa.table("audit_log", sa.column("action", sa.String), sa.column("object_type"),
                     sa.column("object_id"), sa.column("outcome"), sa.column("details", JSON))
    published: set[tuple[Any, Any, Any]] = set()
    for kind, key, details in bind.execute(
            sa.select(audit.c.object_type, audit.c.object_id, audit.c.details)
            .where(audit.c.action == "builder.publish", audit.c.outcome == "success")):
        if isinstance(details, dict):
            published.add((kind, key, details.get("version")))
    definitions = sa.table("definitions", sa.column("kind"), sa.column("key"),
                           sa.column("version"), sa.column("app_id"),
                           sa.column("content_hash"),
                           sa.column("created_at", sa.DateTime(timezone=True)))
    imported: dict[tuple[Any, Any], dict[str, Any]] = {}
    for row in bind.execute(sa.select(definitions).order_by(definitions.c.version)).mappings():
        if row["app_id"] is None or (row["kind"], row["key"], row["version"]) in published:
            continue
        imported[(row["kind"], row["key"])] = {
            "kind": row["kind"], "key": row["key"], "app_id": row["app_id"],
            "version": row["version"], "content_hash": row["content_hash"],
            "imported_at": row["created_at"]}
    if imported:
        table = sa.table("definition_imports", sa.column("kind"), sa.column("key"),
                         sa.column("app_id"), sa.column("version"),
                         sa.column("content_hash"),
                         sa.column("imported_at", sa.DateTime(timezone=True)))
        op.bulk_insert(table, list(imported.values()))


def downgrade() -> None:
    with op.batch_alter_table("bundle_conflicts", schema=None) as batch_op:
        batch_op.drop_index("ix_bundle_conflicts_kind_key")
        batch_op.drop_index(batch_op.f("ix_bundle_conflicts_app_id"))
    op.drop_table("bundle_conflicts")
    with op.batch_alter_table("definition_imports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_definition_imports_app_id"))
    op.drop_table("definition_imports")
