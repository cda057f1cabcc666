"""What the patient reads after discharge: the summary and the take-home medicines the HIS sent
with ``encounter.discharged``, and the expiring token links messages carry to them.

    encounter.discharged payload            discharge_documents row        /d/{token}
    {"summary": "…", "medications": [...]} ──▶ (per encounter) ◀── DocumentLink (kind, expires_at)

A link is made only when there is something to show: :func:`create_link` returns ``None`` for an
encounter without a summary (or without medicines), and the message then carries no link. Tokens
are 192-bit random and stored only as SHA-256, like form links; nothing guessable (an encounter
id) opens a patient page.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import txcache
from careloop.engine.clock import now_utc
from careloop.engine.errors import CareloopError, NotFound
from careloop.flows.models import DischargeDocument, DocumentLink

KINDS = ("discharge_summary", "medication_guidance")
MEDICATION_FIELDS = ("name", "dose", "usage", "days", "note")


class LinkExpired(CareloopError):
    """Raised when a document link is past its expiry."""


@dataclass(frozen=True, slots=True)
class Document:
    """One page's content: the kind, the summary text and/or the medicines, the encounter."""

    kind: str
    encounter_id: str
    patient_id: str
    summary: str | None
    medications: tuple[dict[str, Any], ...]
    discharged_at: datetime | None
    department_id: str | None


def store_from_payload(session: Session, payload: dict[str, Any]) -> None:
    """Keep ``summary`` and ``medications`` of an ``encounter.discharged`` payload (a later
    discharge event for the same encounter replaces them; absent fields leave them as they are).
    """
    if "summary" not in payload and "medications" not in payload:
        return
    row = session.get(DischargeDocument, payload["encounter_id"])
    if row is None:
        row = DischargeDocument(encounter_id=payload["encounter_id"],
                                patient_id=payload["patient_id"], medications=[])
        session.add(row)
    if "summary" in payload:
        row.summary = (payload["summary"] or "").strip() or None
    if "medications" in payload:
        row.medications = [{k: m[k] for k in MEDICATION_FIELDS if m.get(k) not in (None, "")}
                           for m in payload["medications"]]
    row.updated_at = now_utc()
    session.flush()


def has_content(row: DischargeDocument | None, kind: str) -> bool:
    if row is None:
        return False
    return bool(row.summary) if kind == "discharge_summary" else bool(row.medications)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_link(session: Session, *, kind: str, encounter_id: str | None, patient_id: str | None,
                expires_at: datetime, source_ref: str | None = None) -> dict[str, Any] | None:
    """A new link to one document page, or ``None`` when there is nothing to show.

        create_link(session, kind="discharge_summary", encounter_id="E1", patient_id="P1",
                    expires_at=…) ──▶ {"url": "/d/…", "expires_at": …}
    """
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r}")
    if not encounter_id or not patient_id:
        return None
    # both links of a discharge read it: once a transaction, an absent one too
    row = txcache.remember(session, ("documents", encounter_id),
                           lambda: session.get(DischargeDocument, encounter_id),
                           (DischargeDocument,))
    if row is None or row.patient_id != patient_id or not has_content(row, kind):
        return None
    token = secrets.token_urlsafe(24)  # 192 bits
    session.add(DocumentLink(token_hash=hash_token(token), kind=kind, patient_id=patient_id,
                             encounter_id=encounter_id, source_ref=source_ref,
                             expires_at=expires_at, created_at=now_utc()))
    session.flush()
    return {"url": f"/d/{token}", "expires_at": expires_at}


def open_link(session: Session, token: str) -> Document:
    """The document a token opens; raises :class:`NotFound` (unknown or tampered token) or
    :class:`LinkExpired`. The first opening is recorded."""
    from careloop.engine.domain import Encounter

    if not token or len(token) > 128:
        raise NotFound("no such document link")
    link = session.scalars(select(DocumentLink).where(
        DocumentLink.token_hash == hash_token(token))).first()
    if link is None:
        raise NotFound("no such document link")
    if link.expires_at <= now_utc():
        raise LinkExpired("document link expired")
    row = session.get(DischargeDocument, link.encounter_id)
    if row is None or not has_content(row, link.kind):
        raise NotFound("document no longer available")
    if link.opened_at is None:
        link.opened_at = now_utc()
    encounter = session.get(Encounter, link.encounter_id)
    return Document(kind=link.kind, encounter_id=link.encounter_id, patient_id=link.patient_id,
                    summary=row.summary if link.kind == "discharge_summary" else None,
                    medications=tuple(row.medications)
                    if link.kind == "medication_guidance" else (),
                    discharged_at=encounter.discharged_at if encounter is not None else None,
                    department_id=encounter.department_id if encounter is not None else None)
