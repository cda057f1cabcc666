"""Each department's booking link: the hospital's appointment system, opened with the patient's
context (seeds 000/003: 一键预约 in the revisit reminder).

    check_template("https://yy.example.cn/book?card={card_no}&dept={department}")  →  []
    check_template("https://yy.example.cn/book?card={card}")
        →  [{"path": "$.template", "code": "unknown_placeholder",
             "params": {"placeholder": "card", "hint": "card_no", "known": "card_no, …"}}]
    link_for(session, "health_management", patient)
        →  "https://yy.example.cn/book?card=HM0001&dept=health_management"

Placeholders name no personal data beyond the patient's card number (the name and phone never
leave in a URL); each value is URL-encoded. A department without a setting has no link, and a
message or page then shows none (never a dead one).
"""

from __future__ import annotations

import difflib
import string
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy.orm import Session

from careloop.engine import txcache
from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Patient
from careloop.flows.health.models import BookingLink, HealthCard

PLACEHOLDERS = ("card_no", "mrn", "patient_id", "department")
MAX_LENGTH = 500


class BookingLinkRefused(Exception):
    """Raised when a booking-link template is refused: ``problems`` as :func:`check_template`
    gives them."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(", ".join(p["code"] for p in problems))
        self.problems = problems


def _problem(code: str, **params: Any) -> dict[str, Any]:
    return {"path": "$.template", "code": code, "params": params}


def check_template(template: str) -> list[dict[str, Any]]:
    """Every problem of a template: not an absolute http(s) URL, too long, a brace left open,
    an unknown placeholder (named, with the closest known one)."""
    if not template or len(template) > MAX_LENGTH:
        return [_problem("length", limit=MAX_LENGTH)]
    parts = urlsplit(template)
    found = [] if parts.scheme in ("http", "https") and parts.netloc else [_problem("not_url")]
    try:
        names = [name for _, name, spec, conv in string.Formatter().parse(template)
                 if name is not None]
        odd = [f"{{{name}!{conv}}}" if conv else f"{{{name}:{spec}}}"
               for _, name, spec, conv in string.Formatter().parse(template)
               if name is not None and (spec or conv)]
    except ValueError:
        return [*found, _problem("braces")]
    for name in dict.fromkeys(names):
        if name not in PLACEHOLDERS:
            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
            found.append(_problem("unknown_placeholder", placeholder=f"{{{name}}}",
                                  hint=f"{{{close[0]}}}" if close else "",
                                  known=", ".join(f"{{{p}}}" for p in PLACEHOLDERS)))
    found += [_problem("placeholder_format", placeholder=text) for text in odd]
    return found


def set_template(session: Session, department_id: str, template: str, actor: str) -> None:
    """Store a department's template (an empty one removes the link).

    Raises:
        BookingLinkRefused: for a bad template or an unknown department (nothing stored).
    """
    if session.get(Department, department_id) is None:
        raise BookingLinkRefused([{"path": "$.department", "code": "unknown_department",
                                   "params": {}}])
    row = session.get(BookingLink, department_id)
    template = template.strip()
    if not template:
        if row is not None:
            session.delete(row)
        return
    problems = check_template(template)
    if problems:
        raise BookingLinkRefused(problems)
    if row is None:
        row = BookingLink(department_id=department_id)
        session.add(row)
    row.template, row.updated_by, row.updated_at = template, actor[:64], now_utc()
    session.flush()


def template_of(session: Session, department_id: str | None) -> str | None:
    """The department's booking-link template (asked once per transaction: every message a
    flow sends carries the link, and most departments have none — a miss is a query each time
    otherwise)."""
    if not department_id:
        return None

    def read() -> str | None:
        row = session.get(BookingLink, department_id)
        return row.template if row is not None else None

    return txcache.remember(session, ("booking_link", department_id), read, (BookingLink,))


def link_for(session: Session, department_id: str | None, patient: Patient | None) -> str:
    """The absolute booking link for the patient in that department, or ``""`` without one.
    ``{card_no}`` is the health-management card, else the HIS's MRN (the card it issued)."""
    template = template_of(session, department_id)
    if template is None or patient is None or department_id is None:
        return ""
    card = session.get(HealthCard, (patient.attributes or {}).get("card_no") or "")
    values = {"card_no": card.card_no if card is not None else patient.mrn, "mrn": patient.mrn,
              "patient_id": patient.id, "department": department_id}
    return template.format(**{k: quote(str(v), safe="") for k, v in values.items()})
