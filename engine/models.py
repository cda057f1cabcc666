"""Tables of the foundation. Later engines add theirs (and their Alembic migrations).

Times are stored as aware UTC on every database (SQLite included, via :class:`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from careloop.engine import txcache

if TYPE_CHECKING:
    import pluggy

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    from careloop.engine.clock import now_utc

    return now_utc()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONType,
                                                      datetime: UTCDateTime}


class BundleRow(Base):
    """An imported app bundle (its latest manifest)."""

    __tablename__ = "bundles"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[dict[str, Any]]
    version: Mapped[str] = mapped_column(String(64))
    description: Mapped[dict[str, Any] | None]
    format: Mapped[int] = mapped_column(Integer)
    default_locale: Mapped[str] = mapped_column(String(16))
    manifest: Mapped[dict[str, Any]]
    manifest_text: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DefinitionRow(Base):
    """One version of one definition. Rows are never updated except ``retired_at``."""

    __tablename__ = "definitions"
    __table_args__ = (
        UniqueConstraint("kind", "key", "version", name="uq_definitions_kind_key_version"),
        Index("ix_definitions_kind_key", "kind", "key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(80))
    title: Mapped[dict[str, Any]]
    body: Mapped[dict[str, Any]]
    source_text: Mapped[str] = mapped_column(Text)
    source_path: Mapped[str] = mapped_column(String(255))
    app_id: Mapped[str | None] = mapped_column(ForeignKey("bundles.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))
    retired_at: Mapped[datetime | None]


class DefinitionImportRow(Base):
    """Per definition, what its bundle last brought: the stored version that was live then and
    the bundle's content hash. A current version with another hash was published in the builder
    since; a bundle with another hash changed since. Both at once is a :class:`BundleConflictRow`.
    """

    __tablename__ = "definition_imports"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("bundles.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(80))
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class BundleConflictRow(Base):
    """A definition changed both in the builder and in its bundle: the bundle's side, kept until
    an administrator keeps the builder's version or takes the bundle's (a new version).
    ``content_hash`` is null when the bundle removed the definition."""

    __tablename__ = "bundle_conflicts"
    __table_args__ = (Index("ix_bundle_conflicts_kind_key", "kind", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("bundles.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))
    bundle_version: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(80))
    title: Mapped[dict[str, Any]]
    body: Mapped[dict[str, Any] | None]
    source_text: Mapped[str | None] = mapped_column(Text)
    source_path: Mapped[str | None] = mapped_column(String(255))
    live_version: Mapped[int] = mapped_column(Integer)
    diff: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolution: Mapped[str | None] = mapped_column(String(16))  # builder | bundle | agreed


class DomainEventRow(Base):
    """Log of domain events, and the durable queue their handlers run from.

    ``event_id`` (the sender's id) is unique. ``state``: ``handled`` (its handlers' effects are
    committed), ``pending`` (stored and acknowledged; :mod:`careloop.engine.dispatcher` runs its
    handlers, in order per ``patient_id``) or ``parked`` (its handlers failed ``attempts`` times;
    shown to IT, replayed by hand). Only the queue columns ever change.
    """

    __tablename__ = "domain_events"
    __table_args__ = (
        Index("ix_domain_events_pending", "id", postgresql_where=text("state = 'pending'"),
              sqlite_where=text("state = 'pending'")),
        Index("ix_domain_events_patient_pending", "patient_id", "id",
              postgresql_where=text("state = 'pending'"),
              sqlite_where=text("state = 'pending'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    # The sender's unique id orders a multi-row insert's RETURNING ids (SQLAlchemy's "insert
    # sentinel"): a batch of events is one INSERT on SQLite too (no DDL change).
    event_id: Mapped[str] = mapped_column(String(128), unique=True, insert_sentinel=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default="handled", server_default="handled",
                                       index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    available_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    handled_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(200))


class AuditRow(Base):
    """Append-only, hash-chained audit trail (``hash`` covers the row and the previous hash)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    actor_role: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str | None] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(128))
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(80))
    hash: Mapped[str] = mapped_column(String(80), unique=True)


class AuditAnchor(Base):
    """Where the keyed (HMAC) audit chain starts: written once by migration 0014, signed with the
    audit key. Rows up to ``legacy_last_id`` carry the older unkeyed SHA-256 chain."""

    __tablename__ = "audit_anchor"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    chain_id: Mapped[str] = mapped_column(String(64), unique=True)
    legacy_last_id: Mapped[int]
    legacy_last_hash: Mapped[str] = mapped_column(String(80))
    legacy_count: Mapped[int]
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(100))


class InstanceSecret(Base):
    """A random secret of this installation, made once and shared by every process (used when
    the hospital does not set it in the environment): ``link`` seals patient-link tokens in
    stored messages (``engine/links.py``)."""

    __tablename__ = "instance_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def load_all_models(plugins: pluggy.PluginManager | None = None) -> MetaData:
    """Import every plugin's table modules (``model_modules`` hook) so ``Base.metadata`` knows all
    tables (migrations, tests). ``plugins``: another plugin manager than the process's."""
    import importlib

    from careloop.engine.plugins import model_modules

    for name in model_modules(plugins):
        importlib.import_module(name)
    return Base.metadata


# read by every scope check and spec lookup of a transaction: kept once read (txcache)
txcache.pin_class(BundleRow)
txcache.pin_class(DefinitionRow)
txcache.pin_class(InstanceSecret)  # the link-sealing key, read for every message
