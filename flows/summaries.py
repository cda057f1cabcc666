"""A stage summary sent to the patient: the PDF kept as sent, its expiring link, the message.

    staff on patient 360 ──send──▶ summary_links row (the PDF bytes; 192-bit token stored as
        SHA-256; 30 days) + outbox.enqueue("stage_summary_notice", the patient's channel,
        summary_link = absolute /s/{token})
    the patient opens /s/{token} ──open_link──▶ exactly that PDF (the first opening is recorded)

The PDF is written by the web layer (it holds the labels and the viewer's scope); this module
only keeps it and carries the link, as :mod:`careloop.flows.results` does for lab results.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import links
from careloop.engine.clock import now_utc
from careloop.engine.domain import Patient
from careloop.engine.errors import CareloopError, NotFound
from careloop.flows.models import SummaryLink
from careloop.flows.outbox import enqueue
from careloop.flows.results import patient_channel

TEMPLATE = "stage_summary_notice"
LINK_DAYS = 30
MAX_PDF_BYTES = 8 * 1024 * 1024


class SummaryError(CareloopError):
    """Raised when a summary cannot be sent (no PDF, one too large)."""


class LinkExpired(CareloopError):
    """Raised when a summary link is past its expiry."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def send(session: Session, patient_id: str, pdf: bytes, actor: str, *, start: datetime,
         end: datetime, start_text: str, end_text: str, channel: str | None = None) -> int:
    """Keep ``pdf`` behind a new link and message the patient on their channel (unless
    ``channel``); returns the outbox message id. ``start_text``/``end_text`` are the period in
    the patient's words (local dates).

    Raises:
        NotFound: for no such patient.
        SummaryError: for an empty or oversized PDF.
    """
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise NotFound(f"no patient {patient_id!r}")
    if not pdf.startswith(b"%PDF") or len(pdf) > MAX_PDF_BYTES:
        raise SummaryError("the summary is not a PDF of a sendable size")
    token = secrets.token_urlsafe(24)  # 192 bits
    expires = now_utc() + timedelta(days=LINK_DAYS)
    link = SummaryLink(token_hash=_hash(token), patient_id=patient_id, pdf=pdf,
                       period_start=start, period_end=end, created_by=actor[:64],
                       created_at=now_utc(), expires_at=expires)
    session.add(link)
    session.flush()
    return enqueue(session, template_key=TEMPLATE, channel=channel or patient_channel(patient),
                   patient_id=patient_id, values={
                       "patient_name": patient.name, "start": start_text, "end": end_text,
                       "summary_link": links.absolute(f"/s/{token}")},
                   idempotency_key=f"summary:{link.id}", source_ref=f"summary:{link.id}",
                   link_expires_at=expires)


def open_link(session: Session, token: str) -> SummaryLink:
    """The summary a token opens; raises :class:`NotFound` (unknown or tampered token) or
    :class:`LinkExpired`. The first opening is recorded."""
    if not token or len(token) > 128:
        raise NotFound("no such summary link")
    link = session.scalars(select(SummaryLink).where(
        SummaryLink.token_hash == _hash(token))).first()
    if link is None:
        raise NotFound("no such summary link")
    if link.expires_at <= now_utc():
        raise LinkExpired("summary link expired")
    if link.opened_at is None:
        link.opened_at = now_utc()
    return link
