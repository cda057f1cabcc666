"""Laboratory results: read back for a patient, and pushed to the patient as a notice.

    ORU^R01 OBX, FHIR Observation ──▶ result.recorded events (flows.inbound.hl7_obx, fhir_results)
    staff on patient 360 ──push_notice──▶ result_links row (192-bit token stored as SHA-256,
        30 days) + outbox.enqueue("lab_results_notice", the patient's channel,
        results_link = absolute /r/{token})
    the patient opens /r/{token} ──open_link──▶ exactly the results of that notice

A result is read in words by :func:`label` (the shipped name of a common LOINC code in the
reader's language, else the name the laboratory sent, never the bare code) and
:func:`flag_words` (HL7 table 0078 / FHIR interpretation letters).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import links
from careloop.engine.clock import now_utc
from careloop.engine.domain import Patient
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.i18n import catalogue, t
from careloop.engine.models import DomainEventRow
from careloop.flows.models import OutboxMessage, ResultLink
from careloop.flows.outbox import consented, enqueue

EVENT = "result.recorded"
TEMPLATE = "lab_results_notice"
LINK_DAYS = 30
LIMIT = 200
# the letters of HL7 v2 table 0078 and FHIR's ObservationInterpretation that have words
FLAGS = ("H", "L", "HH", "LL", "A", "AA", "N", ">", "<", "POS", "NEG")


class ResultsError(CareloopError):
    """Raised when a notice names no result of the patient, or a result of another patient."""


class LinkExpired(CareloopError):
    """Raised when a results link is past its expiry."""


@dataclass(frozen=True, slots=True)
class Result:
    """One stored laboratory result."""

    event_id: str
    code: str
    system: str
    display: str | None
    value: float | int | str
    comparator: str | None
    unit: str | None
    reference_range: str | None
    flag: str | None
    status: str
    observed_at: datetime
    encounter_id: str | None

    @classmethod
    def of(cls, row: DomainEventRow) -> Result:
        p: dict[str, Any] = row.payload or {}
        at = p.get("observed_at")
        observed = datetime.fromisoformat(at) if isinstance(at, str) else row.occurred_at
        return cls(event_id=row.event_id or str(row.id), code=str(p.get("code", "")),
                   system=str(p.get("system", "local")), display=p.get("display"),
                   value=p.get("value", ""), comparator=p.get("comparator"), unit=p.get("unit"),
                   reference_range=p.get("reference_range"), flag=p.get("abnormal_flag"),
                   status=str(p.get("status", "final")), observed_at=observed,
                   encounter_id=p.get("encounter_id"))


def results_for(session: Session, patient_id: str, ids: list[str] | None = None,
                limit: int = LIMIT) -> list[Result]:
    """The patient's results, newest first (only ``ids`` when given)."""
    query = select(DomainEventRow).where(
        DomainEventRow.type == EVENT,
        DomainEventRow.payload["patient_id"].as_string() == patient_id)
    if ids is not None:
        query = query.where(DomainEventRow.event_id.in_(ids))
    rows = session.scalars(query.order_by(DomainEventRow.occurred_at.desc(),
                                          DomainEventRow.id.desc()).limit(limit)).all()
    found = [Result.of(r) for r in rows]
    found.sort(key=lambda r: r.observed_at, reverse=True)
    return found


def label(result: Result, locale: str) -> str:
    """The test's name a person reads: ``糖化血红蛋白`` for LOINC 4548-4 in zh-CN."""
    key = f"lis.loinc.{result.code}"
    if result.system == "loinc" and key in catalogue(locale):
        return t(key, locale)
    return result.display or t("lis.unnamed_test", locale)


def flag_words(flag: str | None, locale: str) -> str:
    """``H`` → 偏高 / High; an unknown letter → 异常提示 / Flagged; none → ""."""
    if not flag:
        return ""
    return t(f"lis.flag.{flag}" if flag in FLAGS else "lis.flag.other", locale)


def abnormal(result: Result) -> bool:
    return bool(result.flag) and result.flag not in ("N", "NEG")


def value_text(result: Result) -> str:
    """``7.2 %``, ``< 0.5 mmol/L``, ``阴性``: the value as the laboratory gave it, with its unit."""
    value = result.value
    text = (f"{value:g}" if isinstance(value, float) else str(value))
    if result.comparator:
        text = f"{result.comparator} {text}"
    return f"{text} {result.unit}" if result.unit else text


def patient_channel(patient: Patient) -> str:
    """WeChat when the patient bound it (and has not withdrawn consent), else SMS."""
    if patient.attributes.get("wechat_openid") and consented(patient, "wechat"):
        return "wechat"
    return "sms"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def push_notice(session: Session, patient_id: str, result_ids: list[str], actor: str,
                *, channel: str | None = None, idempotency_key: str | None = None) -> int:
    """Send the patient a notice with a link to these results (the patient's channel unless
    ``channel``); returns the outbox message id (service ``results.notify``; a known
    ``idempotency_key`` returns its message and writes nothing). Raises :class:`ResultsError`
    for an empty choice or an id that is not a result of this patient, :class:`NotFound` for
    no patient."""
    if idempotency_key is not None:
        known = session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.idempotency_key == idempotency_key)).first()
        if known is not None:
            return known
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise NotFound(f"no patient {patient_id!r}")
    wanted = sorted(set(result_ids))
    if not wanted:
        raise ResultsError("choose at least one result to send")
    found = results_for(session, patient_id, wanted)
    if len(found) != len(wanted):
        raise ResultsError("a chosen result is not one of this patient's")
    token = secrets.token_urlsafe(24)
    expires = now_utc() + timedelta(days=LINK_DAYS)
    link = ResultLink(token_hash=_hash(token), patient_id=patient_id, result_ids=wanted,
                      created_by=actor[:64], created_at=now_utc(), expires_at=expires)
    session.add(link)
    session.flush()
    return enqueue(session, template_key=TEMPLATE, channel=channel or patient_channel(patient),
                   patient_id=patient_id, values={
                       "patient_name": patient.name, "count": len(found),
                       "abnormal_count": sum(1 for r in found if abnormal(r)),
                       "results_link": links.absolute(f"/r/{token}")},
                   idempotency_key=idempotency_key or f"results:{link.id}",
                   source_ref=f"results:{link.id}",
                   link_expires_at=expires)


def open_link(session: Session, token: str) -> tuple[str, list[Result]]:
    """The patient and the results a notice's token opens (the first opening is recorded);
    raises :class:`NotFound` (unknown token) or :class:`LinkExpired`."""
    if not token or len(token) > 128:
        raise NotFound("no such results link")
    link = session.scalars(select(ResultLink).where(
        ResultLink.token_hash == _hash(token))).first()
    if link is None:
        raise NotFound("no such results link")
    if link.expires_at <= now_utc():
        raise LinkExpired("results link expired")
    if link.opened_at is None:
        link.opened_at = now_utc()
    return link.patient_id, results_for(session, link.patient_id, list(link.result_ids))
