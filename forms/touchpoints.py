"""The ``touchpoint`` kind: a place where patients answer a short form by scanning a QR code.

    kind: touchpoint                                TouchpointSpec(key="outpatient_pharmacy",
    key: outpatient_pharmacy                  ──▶       type="pharmacy", form="touchpoint_quick",
    type: pharmacy                                      department="pharmacy",
    form: touchpoint_quick                              owner_role="pharmacy_head",
    department: pharmacy                                owner_department="pharmacy", …)
    owner: {role: pharmacy_head}

The QR code carries ``/t/<key>.<signature>``: the signature is an HMAC of the key under the
installation's link secret, so a printed code cannot be edited into another place's, and no code
names a patient (the answers are anonymous). :func:`qr_svg` draws the code locally (segno).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import NotFound
from careloop.engine.links import absolute, link_secret

TYPES = ("window", "pharmacy", "clinic_room", "ward", "other")
MAX_QUESTIONS = 6  # answerable in 30 seconds on a phone


@dataclass(frozen=True, slots=True)
class TouchpointSpec:
    """A compiled touchpoint: where it is, which form it asks, who owns it."""

    key: str
    title: tuple[tuple[str, str], ...]
    type: str
    form: str
    department: str
    owner_role: str
    owner_department: str
    location: tuple[tuple[str, str], ...] = ()
    per_hour: int = 5
    duplicate_minutes: int = 10

    @property
    def owner(self) -> dict[str, str]:
        """The ``owner`` an answer's event carries (a rule's ``assignee: {relation: owner}``)."""
        return {"role": self.owner_role, "department": self.owner_department}


def compile_touchpoint(definition: Definition, ctx: CompileContext) -> TouchpointSpec | None:
    """Check the form reference (it must be short: one page, at most six questions)."""
    doc, body = definition.doc, definition.body
    found = ctx.reference("form", body["form"], doc, ("form",), code="touchpoint.unknown-form")
    if found is None and ("form", body["form"]) not in ctx.specs:
        return None
    spec = ctx.specs.get(("form", body["form"]))
    if spec is not None:
        questions = [f for f in spec.fields if f.type not in ("display", "section", "hidden")]
        if spec.pages > 1 or len(questions) > MAX_QUESTIONS:
            ctx.add(doc.problem(
                "touchpoint.form-too-long",
                f"form '{body['form']}' has {spec.pages} page(s) and {len(questions)} "
                f"question(s); a touchpoint asks one page of at most {MAX_QUESTIONS}",
                ("form",), hint="answerable in 30 seconds: split the long form"))
            return None
    owner, limits = body["owner"], body.get("limits") or {}
    return TouchpointSpec(
        key=definition.key, title=tuple(dict(body["title"]).items()), type=body["type"],
        form=body["form"], department=body["department"], owner_role=owner["role"],
        owner_department=owner.get("department") or body["department"],
        location=tuple(dict(body.get("location") or {}).items()),
        per_hour=int(limits.get("per_hour", 5)),
        duplicate_minutes=int(limits.get("duplicate_minutes", 10)))


def load(session: Session, key: str) -> TouchpointSpec:
    """The current version of a touchpoint.

    Raises:
        NotFound: if there is no such touchpoint.
    """
    row = store.get_version(session, "touchpoint", key, None)
    return store.compile_row(row, TouchpointSpec)


def all_touchpoints(session: Session) -> list[TouchpointSpec]:
    """Every current touchpoint, by key."""
    return sorted((store.compile_row(row, TouchpointSpec)
                   for row in store.list_current(session, "touchpoint")),
                  key=lambda spec: spec.key)


def _signature(secret: bytes, key: str) -> str:
    digest = hmac.new(secret, f"touchpoint:{key}".encode(), hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def token_for(session: Session, key: str) -> str:
    """``outpatient_pharmacy.Xb3…``: the key and its signature."""
    return f"{key}.{_signature(link_secret(session), key)}"


def key_of(session: Session, token: str) -> str:
    """The touchpoint a token names, if its signature is right.

    Raises:
        NotFound: for a token that is malformed or whose signature does not match.
    """
    key, _, signature = token.partition(".")
    if not key or len(token) > 128 or not hmac.compare_digest(
            signature.encode(), _signature(link_secret(session), key).encode()):
        raise NotFound("no such touchpoint code")
    return key


def url_for(session: Session, key: str) -> str:
    """The absolute address the QR code holds (``CARELOOP_BASE_URL`` + ``/t/<token>``)."""
    return absolute(f"/t/{token_for(session, key)}")


def qr_svg(data: str) -> str:
    """The QR code of ``data`` as an inline SVG element (drawn here: no network)."""
    import segno

    code = segno.make(data, error="m")
    svg: str = code.svg_inline(scale=6, border=2, title="QR")
    return svg


__all__ = [
    "TYPES",
    "NotFound",
    "TouchpointSpec",
    "all_touchpoints",
    "compile_touchpoint",
    "key_of",
    "load",
    "qr_svg",
    "token_for",
    "url_for",
]
