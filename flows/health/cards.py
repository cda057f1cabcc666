"""Patients registered by hand at the health-management centre (客户开卡, seed 001).

Staff fill in the registration form; the patient goes through the same events path as a HIS
patient (:func:`careloop.flows.ingest.ingest`, source ``manual``), so the flows, rules and pages
see them exactly as they see the HIS's::

    register(session, {"name": "李四", "gender": "female", "birth_date": "1980-05-02",
                       "phone": "13800000001", "id_number": "11010519800502…",
                       "card_no": "HM0001", "department": "health_management",
                       "consent_sms": True, "consent_wechat": False, "consent_phone": False},
             actor="hm_nurse", departments={"health_management"})
    ── patient.upserted   {patient_id: "hm-HM0001", mrn: "HM0001", consents: {sms: true,
                           wechat: false, phone: false}, attributes: {card_no: "HM0001"}, …}
    ── encounter.admitted {encounter_id: "hm-HM0001-reg", type: outpatient,
                           department_id: "health_management"}   (the registration visit: the
                           department's staff see the patient, as for a clinic visit)
    ── health_cards row   (card number unique in the hospital, the patient page's token)

Every problem is collected with the form field it is about (``$.card_no``); nothing is written
when there is one. The resident ID number is checked with python-stdnum (``stdnum.cn.ric``), its
birth date and sex cross-checked with the form's, as the patient import does.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from stdnum.cn import ric
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidLength, ValidationError

from careloop.engine.clock import now_utc, to_local
from careloop.engine.domain import Department, Patient
from careloop.flows.health.models import HealthCard

CARD_NO = re.compile(r"^[A-Za-z0-9-]{4,32}$")
MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
GENDERS = ("male", "female")
CHANNELS = ("sms", "wechat", "phone")  # consent asked per channel on the form
SOURCE = "manual"


class Refused(Exception):
    """Raised when the registration form has problems: each ``{"path", "code", "params"}``
    (``$.card_no``, ``card_taken``); the page shows them in words next to the field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(", ".join(p["path"] for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Registered:
    patient_id: str
    card_no: str
    page_token: str


def _problem(path: str, code: str, **params: Any) -> dict[str, Any]:
    return {"path": f"$.{path}", "code": code, "params": params}


def _text(form: dict[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def check(session: Session, form: dict[str, Any],
          departments: frozenset[str] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The cleaned fields of a registration form and every problem with its field path.

    ``departments``: where the user may register (None: anywhere in the hospital).
    """
    clean: dict[str, Any] = {}
    found: list[dict[str, Any]] = []
    name = _text(form, "name")
    if not 1 <= len(name) <= 128:
        found.append(_problem("name", "required"))
    clean["name"] = name
    gender = _text(form, "gender")
    if gender not in GENDERS:
        found.append(_problem("gender", "required"))
    clean["gender"] = gender
    born = _birth_date(_text(form, "birth_date"), found)
    clean["birth_date"] = born
    phone = re.sub(r"[\s-]", "", _text(form, "phone"))
    if not MOBILE.match(phone):
        found.append(_problem("phone", "bad_phone"))
    clean["phone"] = phone
    clean["id_number"] = _id_number(session, _text(form, "id_number"), born, gender, found)
    clean["card_no"] = _card_no(session, _text(form, "card_no"), found)
    clean["department"] = _department(session, _text(form, "department"), departments, found)
    clean["consents"] = {channel: bool(form.get(f"consent_{channel}")) for channel in CHANNELS}
    locale = _text(form, "locale") or "zh-CN"
    clean["locale"] = locale if locale in ("zh-CN", "en") else "zh-CN"
    return clean, found


def _birth_date(text: str, found: list[dict[str, Any]]) -> date | None:
    try:
        born = date.fromisoformat(text)
    except ValueError:
        found.append(_problem("birth_date", "bad_date"))
        return None
    if not date(1900, 1, 1) <= born <= to_local(now_utc()).date():
        found.append(_problem("birth_date", "date_out_of_range"))
        return None
    return born


def _id_number(session: Session, text: str, born: date | None, gender: str,
               found: list[dict[str, Any]]) -> str | None:
    """The resident ID number (optional; checked when given)."""
    if not text:
        return None
    try:
        number = str(ric.validate(text.upper().replace(" ", "")))
    except InvalidChecksum:
        code = "id_checksum"
    except InvalidLength:
        code = "id_length"
    except InvalidComponent:
        code = "id_birth_date"
    except ValidationError:
        code = "id_format"
    else:
        if born is not None and ric.get_birth_date(number) != born:
            found.append(_problem("birth_date", "birth_date_mismatch"))
        sex = "male" if int(number[16]) % 2 else "female"
        if gender in GENDERS and gender != sex:
            found.append(_problem("gender", "gender_mismatch"))
        if session.scalars(select(Patient.id).where(Patient.id_number == number)).first():
            found.append(_problem("id_number", "id_taken"))
        return number
    found.append(_problem("id_number", code))
    return None


def _card_no(session: Session, text: str, found: list[dict[str, Any]]) -> str:
    if not CARD_NO.match(text):
        found.append(_problem("card_no", "bad_card_no"))
    elif session.get(HealthCard, text) is not None or session.scalars(
            select(Patient.id).where(Patient.mrn == text)).first() is not None:
        found.append(_problem("card_no", "card_taken"))
    return text


def _department(session: Session, text: str, departments: frozenset[str] | None,
                found: list[dict[str, Any]]) -> str:
    if session.get(Department, text) is None:
        found.append(_problem("department", "unknown_department"))
    elif departments is not None and text not in departments:
        found.append(_problem("department", "not_yours"))
    return text


def patient_id_for(card_no: str) -> str:
    """``HM0001`` → ``hm-HM0001`` (patient ids of the HIS never start so)."""
    return f"hm-{card_no}"


def events_of(clean: dict[str, Any], event_id: str) -> list[dict[str, Any]]:
    """The ``patient.upserted`` and registration-visit ``encounter.admitted`` events."""
    pid, card = patient_id_for(clean["card_no"]), clean["card_no"]
    patient: dict[str, Any] = {
        "patient_id": pid, "mrn": card, "name": clean["name"], "gender": clean["gender"],
        "birth_date": clean["birth_date"].isoformat(), "phone": clean["phone"],
        "locale": clean["locale"], "consents": clean["consents"],
        "attributes": {"card_no": card, "registered_in": clean["department"]}}
    if clean["id_number"]:
        patient["id_number"] = clean["id_number"]
    visit = {"encounter_id": f"{pid}-reg", "patient_id": pid, "type": "outpatient",
             "department_id": clean["department"], "admitted_at": now_utc().isoformat()}
    return [{"event_id": f"{event_id}-patient", "type": "patient.upserted", "payload": patient},
            {"event_id": f"{event_id}-visit", "type": "encounter.admitted", "payload": visit}]


def register(session: Session, form: dict[str, Any], *, actor: str,
             departments: frozenset[str] | None) -> Registered:
    """Register a patient by hand through the events path; the caller audits and commits.

    Raises:
        Refused: with every problem of the form (nothing written).
    """
    from careloop.flows.ingest import ingest

    clean, found = check(session, form, departments)
    if found:
        raise Refused(found)
    event_id = f"manual-{secrets.token_hex(8)}"
    for event in events_of(clean, event_id):
        status, _ = ingest(session, event, source=SOURCE, park=False)
        if status != 200:  # checked above; a race with another registration ends here
            raise Refused([_problem("card_no", "card_taken")])
    token = secrets.token_urlsafe(32)
    session.add(HealthCard(card_no=clean["card_no"], patient_id=patient_id_for(clean["card_no"]),
                           department_id=clean["department"], page_token=token,
                           registered_by=actor[:64], registered_at=now_utc()))
    session.flush()
    return Registered(patient_id_for(clean["card_no"]), clean["card_no"], token)


def card_of(session: Session, patient_id: str) -> HealthCard | None:
    return session.scalars(select(HealthCard).where(HealthCard.patient_id == patient_id)).first()


def by_token(session: Session, token: str) -> HealthCard | None:
    """The card whose patient page the token opens (None for an unknown token)."""
    if not token or len(token) > 64:
        return None
    return session.scalars(select(HealthCard).where(HealthCard.page_token == token)).first()
