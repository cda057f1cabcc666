"""Sending education items to patients, and what the patient did with them.

    send_education step / rule action ──send──▶ pick the items fitting the encounter's diagnosis
        codes, department and stage ──▶ education_sends row (192-bit token stored as SHA-256,
        90 days) + outbox.enqueue("education_article", the patient's channel,
        education_link = absolute /e/{token})
    the patient opens /e/{token} ──open_link──▶ opened_at (first opening), the item's version
        as it was sent
    the page's end comes into view ──mark_read──▶ read_at (the page's own script posts once)

Uploaded videos and PDFs (:func:`store_media`) are kept in ``education_media`` under their
SHA-256 and served only through a patient's link or to signed-in staff.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import links
from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.hospital import hospital_name
from careloop.engine.i18n import pick as pick_text
from careloop.flows.education import EducationSpec, load, pick
from careloop.flows.education_models import EducationMedia, EducationSend
from careloop.flows.outbox import consented, enqueue

TEMPLATE = "education_article"
LINK_DAYS = 90
MAX_MEDIA_BYTES = 50 * 1024 * 1024
# what an upload must start with to be taken for its type (never trusted from the browser)
MEDIA_TYPES = {"application/pdf": "pdf", "video/mp4": "video", "video/webm": "video"}


class EducationError(CareloopError):
    """Raised when an upload is refused (type, size, empty) or a send names no patient."""


class LinkExpired(CareloopError):
    """Raised when an education link is past its expiry."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What a link opens: the row and the item as it was when sent."""

    send: EducationSend
    spec: EducationSpec


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def patient_channel(patient: Patient) -> str:
    """WeChat when the patient bound it (and has not withdrawn consent), else SMS."""
    if patient.attributes.get("wechat_openid") and consented(patient, "wechat"):
        return "wechat"
    return "sms"


def send_education(session: Session, *, patient_id: str, encounter_id: str | None, stage: str,
                   idempotency_key: str, articles: Sequence[str] = (),
                   channel: str | None = None, template: str = TEMPLATE, limit: int = 1,
                   source_ref: str | None = None) -> list[int]:
    """Send the patient up to ``limit`` items fitting the encounter (service ``education.send``);
    returns the outbox message ids. An item already sent for this encounter is not sent again;
    a known ``idempotency_key`` writes nothing more.

        send_education(session, patient_id="P1", encounter_id="E1", stage="discharge_day1",
                       idempotency_key="flow_run:3:step:9") ──▶ [41]

    Raises:
        NotFound: for no such patient.
    """
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise NotFound(f"no patient {patient_id!r}")
    encounter = session.get(Encounter, encounter_id) if encounter_id else None
    codes = [str(c) for c in ((encounter.diagnoses or {}).get("codes") or [])] \
        if encounter is not None else []
    department = encounter.department_id if encounter is not None else None
    sent: list[int] = []
    for version, spec in pick(session, codes=codes, department=department, stage=stage,
                              only=articles)[:limit]:
        message_id = _send_one(session, patient, encounter_id, spec, version, stage=stage,
                               key=f"{idempotency_key}:{spec.key}", channel=channel,
                               template=template, source_ref=source_ref)
        if message_id is not None:
            sent.append(message_id)
    return sent


def _send_one(session: Session, patient: Patient, encounter_id: str | None, spec: EducationSpec,
              version: int, *, stage: str, key: str, channel: str | None, template: str,
              source_ref: str | None) -> int | None:
    known = session.scalars(select(EducationSend).where(
        EducationSend.idempotency_key == key)).first()
    if known is not None:
        return known.message_id
    already = session.scalars(select(EducationSend.id).where(
        EducationSend.patient_id == patient.id, EducationSend.article_key == spec.key,
        EducationSend.encounter_id.is_(None) if encounter_id is None
        else EducationSend.encounter_id == encounter_id)).first()
    if already is not None:
        return None
    token = secrets.token_urlsafe(24)  # 192 bits
    expires = now_utc() + timedelta(days=LINK_DAYS)
    used = channel or patient_channel(patient)
    row = EducationSend(token_hash=_hash(token), idempotency_key=key, article_key=spec.key,
                        article_version=version, patient_id=patient.id,
                        encounter_id=encounter_id, department_id=spec.department, stage=stage,
                        channel=used, source_ref=source_ref, status="sent", sent_at=now_utc(),
                        expires_at=expires)
    session.add(row)
    session.flush()
    locale = patient.locale or "zh-CN"
    owner = session.get(Department, spec.department)
    row.message_id = enqueue(
        session, template_key=template, channel=used, patient_id=patient.id,
        values={"patient_name": patient.name,
                "article_title": pick_text(dict(spec.title), locale),
                "department_name": pick_text(owner.name, locale) if owner is not None else "",
                "hospital_name": hospital_name(locale),
                "education_link": links.absolute(f"/e/{token}")},
        idempotency_key=f"education:{row.id}", source_ref=source_ref or f"education:{row.id}",
        link_expires_at=expires)
    return row.message_id


def _row(session: Session, token: str) -> EducationSend:
    if not token or len(token) > 128:
        raise NotFound("no such education link")
    row = session.scalars(select(EducationSend).where(
        EducationSend.token_hash == _hash(token))).first()
    if row is None:
        raise NotFound("no such education link")
    if row.expires_at <= now_utc():
        raise LinkExpired("education link expired")
    return row


def open_link(session: Session, token: str) -> Reading:
    """The item a link opens, in the version that was sent; the first opening is recorded.

    Raises:
        NotFound: for an unknown token or an item no longer stored.
        LinkExpired: after the link's expiry.
    """
    row = _row(session, token)
    spec = load(session, row.article_key, row.article_version)
    if row.opened_at is None:
        row.opened_at = now_utc()
        row.status = "read" if row.read_at is not None else "opened"
    return Reading(send=row, spec=spec)


def mark_read(session: Session, token: str) -> bool:
    """The patient reached the end of the page; ``False`` when it was recorded already.

    Raises:
        NotFound, LinkExpired: as :func:`open_link`.
    """
    row = _row(session, token)
    if row.read_at is not None:
        return False
    row.read_at = now_utc()
    row.opened_at = row.opened_at or row.read_at
    row.status = "read"
    return True


def sends_for(session: Session, patient_id: str, limit: int = 100) -> list[EducationSend]:
    """The patient's education sends, newest first."""
    return list(session.scalars(select(EducationSend).where(
        EducationSend.patient_id == patient_id).order_by(EducationSend.id.desc()).limit(limit)))


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def store_media(session: Session, data: bytes, *, filename: str, department: str,
                actor: str) -> EducationMedia:
    """Keep an uploaded video or PDF (the same bytes again: the file already kept).

    Raises:
        EducationError: for an empty or oversized file, or one that is no PDF, MP4 or WebM.
    """
    if not data:
        raise EducationError("edu.upload.empty")
    if len(data) > MAX_MEDIA_BYTES:
        raise EducationError("edu.upload.too_large")
    content_type = _sniff(data)
    if content_type is None:
        raise EducationError("edu.upload.bad_type")
    digest = hashlib.sha256(data).hexdigest()
    found = session.scalars(select(EducationMedia).where(EducationMedia.sha256 == digest)).first()
    if found is not None:
        return found
    row = EducationMedia(sha256=digest, department_id=department, filename=filename[:255],
                         content_type=content_type, size=len(data), data=data,
                         uploaded_by=actor[:64], created_at=now_utc())
    session.add(row)
    session.flush()
    return row


def media(session: Session, sha256: str) -> EducationMedia:
    """An uploaded file by its reference.

    Raises:
        NotFound: when no such file was uploaded.
    """
    found = session.scalars(select(EducationMedia).where(EducationMedia.sha256 == sha256)).first()
    if found is None:
        raise NotFound("no such education file")
    return found


def uploads(session: Session, departments: Sequence[str] | None) -> list[dict[str, Any]]:
    """Uploaded files (of these departments; ``None``: all), newest first, without their bytes."""
    query = select(EducationMedia.sha256, EducationMedia.filename, EducationMedia.content_type,
                   EducationMedia.size, EducationMedia.department_id,
                   EducationMedia.created_at).order_by(EducationMedia.id.desc()).limit(200)
    if departments is not None:
        query = query.where(EducationMedia.department_id.in_(list(departments)))
    return [dict(r._mapping) for r in session.execute(query)]


__all__ = ["EducationError", "LinkExpired", "Reading", "mark_read", "media", "open_link",
           "send_education", "sends_for", "store_media", "uploads"]


def opened_article(session: Session, token: str) -> str | None:
    """The item a link names (without opening it), for journey checks; ``None``: no such link."""
    row = session.scalars(select(EducationSend).where(
        EducationSend.token_hash == _hash(token))).first()
    return row.article_key if row is not None else None
