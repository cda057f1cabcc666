"""The tables reports read, looked up by name in ``Base.metadata`` (never by importing engines).

The forms engine owns ``submissions``, ``submission_answers`` and ``form_requests`` (contract 2).
Reports reflect them from the shared metadata after :func:`load_all_models`; while an engine's
models are not installed, a private copy of the contract's columns stands in so datasets still
compile (:func:`contract_fallback` — used by tests and the benchmark, never migrated).
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from careloop.engine.models import Base, load_all_models

_FALLBACK = MetaData()

Table(
    "submissions", _FALLBACK,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("form_key", String(64), nullable=False, index=True),
    Column("form_version", Integer, nullable=False),
    Column("content_hash", String(80), nullable=False),
    Column("patient_id", String(64), ForeignKey("patients.id"), nullable=False),
    Column("encounter_id", String(64), nullable=True),
    Column("department_id", String(64), nullable=True, index=True),
    Column("request_id", String(64), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("entered_by", String(64), nullable=True),
    Column("locale", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("answers", JSON, nullable=False),
    Column("scores", JSON, nullable=False),
    Column("bands", JSON, nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False, index=True),
)
Table(
    "submission_answers", _FALLBACK,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("submission_id", Integer, ForeignKey("submissions.id"), nullable=False, index=True),
    Column("form_key", String(64), nullable=False),
    Column("field_key", String(128), nullable=False),
    Column("row_key", String(64), nullable=True),
    Column("value_number", Float, nullable=True),
    Column("value_text", Text, nullable=True),
    Column("value_code", String(128), nullable=True),
)
Table(
    "form_requests", _FALLBACK,
    Column("id", String(64), primary_key=True),
    Column("token_hash", String(128), nullable=False, unique=True),
    Column("form_key", String(64), nullable=False),
    Column("form_version", Integer, nullable=True),
    Column("patient_id", String(64), ForeignKey("patients.id"), nullable=False),
    Column("encounter_id", String(64), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("source_ref", String(255), nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("opened_at", DateTime(timezone=True), nullable=True),
    Column("answered_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("draft", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

FORMS_TABLES = ("submissions", "submission_answers", "form_requests")


def _with_domain() -> None:
    # The fallback's foreign keys name domain tables; give it their definitions too.
    meta = load_all_models()
    for name in ("patients", "departments", "encounters", "users", "tasks"):
        if name not in _FALLBACK.tables:
            meta.tables[name].to_metadata(_FALLBACK)


def contract_fallback() -> list[Table]:
    """The stand-in forms tables still missing from ``Base.metadata`` (empty once forms exists)."""
    meta = load_all_models()
    _with_domain()
    return [_FALLBACK.tables[n] for n in FORMS_TABLES if n not in meta.tables]


@cache
def _resolved(name: str) -> Table:
    meta = load_all_models()
    if name in meta.tables:
        return meta.tables[name]
    _with_domain()
    return _FALLBACK.tables[name]


def table(name: str) -> Table:
    """A table by name: the owning engine's model if installed, else the contract stand-in."""
    if name in Base.metadata.tables:
        return Base.metadata.tables[name]
    return _resolved(name)
