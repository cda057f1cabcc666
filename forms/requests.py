"""Form requests: the link a patient opens. Tokens are 192-bit random, stored only as SHA-256,
expiring, and bound to one request (one patient, one form). No personal data is in the URL.

    create_request(session, form_key="discharge_day3", patient_id="p1", channel="sms",
                   expires_at=…) ──▶ {"request_id": "frq_…", "token": "…", "url": "/f/…"}
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session, load_only

from careloop.engine import audit, store
from careloop.engine.clock import now_utc
from careloop.engine.db import write_lock_first
from careloop.engine.domain import Encounter, Patient
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.models import DefinitionRow, DomainEventRow
from careloop.engine.tasks import ENCOUNTER_CANCELLED
from careloop.forms.models import FormRequest
from careloop.forms.runtime import known_version

# ``closed_reason`` of a request whose encounter the HIS cancelled; its link then reads
# "no longer needed" (``RequestUnavailable("not_needed")``), not "cancelled by the hospital".
ENCOUNTER_CANCELLED_REASON = "encounter_cancelled"


class RequestUnavailable(CareloopError):
    """Raised when a link's request is expired, cancelled or already answered."""

    def __init__(self, status: str) -> None:
        super().__init__(f"form request is {status}")
        self.status = status


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_request(session: Session, *, form_key: str, patient_id: str,
                   encounter_id: str | None = None, channel: str, expires_at: datetime,
                   source_ref: str | None = None) -> dict[str, Any]:
    """Create a request and its token (service ``forms.create_request``)."""
    row = store.get_version(session, "form", form_key)  # raises NotFound for an unknown form
    if session.get(Patient, patient_id) is None:
        raise NotFound(f"no patient '{patient_id}'")
    token = secrets.token_urlsafe(24)  # 192 bits
    request = FormRequest(
        id="frq_" + secrets.token_hex(10), token_hash=hash_token(token), form_key=form_key,
        form_version=row.version, patient_id=patient_id, encounter_id=encounter_id,
        channel=channel, status="sent", source_ref=source_ref, sent_at=now_utc(),
        expires_at=expires_at, created_at=now_utc())
    session.add(request)  # written with the next flush: its id is made here, not by the database
    return {"request_id": request.id, "token": token, "url": f"/f/{token}"}


# The request with its patient, its encounter and its form version's stored row (what the page
# reads next: the patient and encounter from the identity map, both pinned for the transaction;
# the form version through :func:`careloop.forms.runtime.load_form`), in one statement built
# once: a statement object keeps its cache key, so opening a link builds no query. Only the
# request's row is locked. The version's row comes without its ``body`` and ``title`` (the page
# compiles the spec from ``source_text``, remembered per content hash: no JSON to decode).
_FORM_VERSION = and_(DefinitionRow.kind == "form", DefinitionRow.key == FormRequest.form_key,
                     DefinitionRow.version == FormRequest.form_version)
_BY_HASH = (select(FormRequest, Patient, Encounter, DefinitionRow)
            .outerjoin(Patient, Patient.id == FormRequest.patient_id)
            .outerjoin(Encounter, Encounter.id == FormRequest.encounter_id)
            .outerjoin(DefinitionRow, _FORM_VERSION)
            .options(load_only(DefinitionRow.kind, DefinitionRow.key, DefinitionRow.version,
                               DefinitionRow.content_hash, DefinitionRow.source_text,
                               DefinitionRow.source_path))
            .where(FormRequest.token_hash == bindparam("token_hash")))
_BY_HASH_FOR_UPDATE = _BY_HASH.with_for_update(of=FormRequest)


def by_token(session: Session, token: str, *, for_update: bool = False) -> FormRequest:
    """The open request a token belongs to; raises :class:`NotFound` or
    :class:`RequestUnavailable`. Opening marks it ``opened``."""
    if not token or len(token) > 128:
        raise NotFound("no such form link")
    if for_update:
        write_lock_first(session)  # SQLite: a second post of the link waits for this one
    query = _BY_HASH_FOR_UPDATE if for_update else _BY_HASH
    found = session.execute(query, {"token_hash": hash_token(token)}).first()
    if found is None:
        raise NotFound("no such form link")
    request, version_row = found[0], found[3]
    if version_row is not None:  # load_form of this version: no second read
        known_version(session, version_row)
    if request.status == "cancelled" and request.closed_reason == ENCOUNTER_CANCELLED_REASON:
        raise RequestUnavailable("not_needed")
    if request.status in ("answered", "cancelled", "expired"):
        raise RequestUnavailable(request.status)
    if request.expires_at <= now_utc():
        request.status = "expired"
        raise RequestUnavailable("expired")
    if request.status == "sent":
        request.status, request.opened_at = "opened", now_utc()
    return request


def close_for_encounter(session: Session, encounter_id: str, *, reason: str,
                        event_id: str | None = None, actor: str = "his") -> list[FormRequest]:
    """Close the open requests (sent or opened) of a cancelled encounter: their links answer
    "no longer needed" and accept no answer. One audit row per request, saying why."""
    closed = list(session.scalars(select(FormRequest).where(
        FormRequest.encounter_id == encounter_id,
        FormRequest.status.in_(("sent", "opened"))).order_by(FormRequest.id)).all())
    for request in closed:
        request.status, request.closed_reason = "cancelled", ENCOUNTER_CANCELLED_REASON
        audit.append(session, actor=actor, action="form_request.closed",
                     object_type="form_request", object_id=request.id,
                     patient_id=request.patient_id,
                     details={"reason": reason, "event_id": event_id,
                              "why": "the HIS cancelled the encounter; the follow-up is no "
                                     "longer needed"})
    session.flush()
    return closed


def handle_event(session: Session, event: DomainEventRow) -> None:
    """The ``forms`` event handler: a cancelled encounter closes its open form requests."""
    encounter_id = event.payload.get("encounter_id")
    if event.type in ENCOUNTER_CANCELLED and isinstance(encounter_id, str):
        close_for_encounter(session, encounter_id, reason=event.type, event_id=event.event_id,
                            actor=event.source)
