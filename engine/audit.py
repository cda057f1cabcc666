"""The append-only, hash-chained audit trail.

Each row's ``hash`` is ``sha256(prev_hash + canonical JSON of the row's fields)``; the first row's
``prev_hash`` is :data:`GENESIS`. Changing or deleting any row breaks every later link, which
:func:`verify` reports. Details must not carry personal data beyond the patient id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from careloop.engine.check import canonical_json
from careloop.engine.clock import now_utc
from careloop.engine.models import AuditRow

GENESIS = "sha256:" + "0" * 64
_LOCK_ID = 0x6361_7265  # "care": serialises chain appends across processes on PostgreSQL


def _row_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = prev_hash + canonical_json(fields)
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _fields(row: AuditRow) -> dict[str, Any]:
    at: datetime = row.at
    return {
        "at": at.isoformat(timespec="microseconds"), "actor": row.actor,
        "actor_role": row.actor_role, "ip": row.ip, "action": row.action,
        "object_type": row.object_type, "object_id": row.object_id,
        "patient_id": row.patient_id, "outcome": row.outcome, "request_id": row.request_id,
        "details": row.details,
    }


def append(session: Session, *, actor: str, action: str, object_type: str | None = None,
           object_id: str | None = None, patient_id: str | None = None,
           outcome: str = "success", details: dict[str, Any] | None = None,
           actor_role: str | None = None, ip: str | None = None,
           request_id: str | None = None) -> AuditRow:
    """Add one audit row in the caller's transaction: it commits or rolls back with the action."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    last = session.scalars(select(AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)).first()
    row = AuditRow(
        at=now_utc(), actor=actor, actor_role=actor_role, ip=ip, action=action,
        object_type=object_type, object_id=object_id, patient_id=patient_id, outcome=outcome,
        request_id=request_id, details=details or {}, prev_hash=last or GENESIS,
    )
    row.hash = _row_hash(row.prev_hash, _fields(row))
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True, slots=True)
class AuditBreak:
    """Where the chain is broken and why."""

    row_id: int
    reason: str


def verify(session: Session, batch: int = 1000) -> Iterator[AuditBreak]:
    """Walk the chain in id order and yield every break (altered, inserted or deleted rows)."""
    expected_prev = GENESIS
    last_id = 0
    while True:
        rows = session.scalars(select(AuditRow).where(AuditRow.id > last_id)
                               .order_by(AuditRow.id).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            if row.prev_hash != expected_prev:
                yield AuditBreak(row.id, "previous hash does not match: a row before it was "
                                         "changed or deleted")
            if _row_hash(row.prev_hash, _fields(row)) != row.hash:
                yield AuditBreak(row.id, "row content does not match its hash: the row was changed")
            expected_prev = row.hash
            last_id = row.id
