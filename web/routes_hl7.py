"""HL7 v2 over HTTP and the HL7 part of the integration page.

``POST /api/v1/hl7`` — for integration engines that prefer HTTP to MLLP: an API key holding
``events:write`` (``X-API-Key``), the body one HL7 v2 message (``Content-Type:
x-application/hl7-v2+er7``), the answer the ACK message (same content type, 200 whatever the
MSA-1 code: the ACK says AA/AE/AR). ``POST /admin/integration/hl7/{id}/replay`` processes a
failed message again after IT fixed the mapping or a code table (audited).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.db import transaction
from careloop.engine.errors import CareloopError
from careloop.flows.inbound import hl7 as hl7_in
from careloop.flows.models import Hl7Message
from careloop.web.api_models import COMMON_ERRORS, ErrorBody
from careloop.web.deps import record, request_body, require
from careloop.web.permissions import BUNDLE_IMPORT, MAX_ID, Principal
from careloop.web.routes_flows import _require_key

router = APIRouter()
MEDIA_TYPE = "x-application/hl7-v2+er7"
KNOWN_TYPES = {f"ADT_{event}" for event in hl7_in.ADT_EVENTS} | {"ORU_R01"}
ACCEPTED_TYPES = (MEDIA_TYPE, "application/hl7-v2", "text/plain")


ACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The message's HL7 v2 acknowledgement (MSH and MSA, ERR when refused); "
                         "header X-HL7-Ack-Code carries MSA-1 (AA, AE or AR).",
          "content": {MEDIA_TYPE: {"schema": {"type": "string",
                                              "description": "An ACK message, segments "
                                                             "separated by CR"}}}},
    **COMMON_ERRORS,
    415: {"description": "Not sent as an HL7 v2 message",
          "model": ErrorBody},
}


@router.post("/api/v1/hl7", include_in_schema=True, responses=ACK_RESPONSES)
def post_hl7(request: Request, x_api_key: str | None = Header(default=None),
             content_type: str | None = Header(default=None),
             raw: bytes = Depends(request_body)) -> Response:
    """Receive one HL7 v2 message; answers its ACK (MSA-1 AA, AE or AR)."""
    name = _require_key(request, x_api_key, "events:write", "api.hl7").name
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in ACCEPTED_TYPES:
        raise HTTPException(status_code=415, detail=f"send the message as {MEDIA_TYPE}")
    outcome = hl7_in.receive(raw.strip(b"\r\n") + b"\r", source=f"hl7:api:{name}"[:64])
    return Response(outcome.ack_bytes(), media_type=MEDIA_TYPE,
                    headers={"X-HL7-Ack-Code": outcome.code})


NEEDS_BUNDLE_IMPORT = Depends(require(BUNDLE_IMPORT))


@router.post("/admin/integration/hl7/{message_id}/replay", include_in_schema=False)
def replay(request: Request, message_id: int = Path(ge=1, le=MAX_ID),
           me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Process a failed HL7 message again with the current mapping; audited."""
    try:
        outcome = hl7_in.replay(message_id, me.username)
    except CareloopError:
        raise HTTPException(status_code=409) from None
    with transaction() as session:
        record(request, me, "integration.hl7_replay", session=session,
               object_type="hl7_message", object_id=str(message_id))
    return RedirectResponse(f"/admin/integration?hl7={outcome.code}#hl7", status_code=303)


def recent(session: Session, replayed: str | None = None,
           limit: int = 50) -> dict[str, object]:
    """What the integration page shows: the latest messages and those waiting for IT, masked."""
    def row(m: Hl7Message) -> dict[str, object]:
        kind = (m.message_type or "").replace("^", "_")
        return {"id": m.id, "received_at": m.received_at,
                "type_key": f"hl7.type.{kind}" if kind in KNOWN_TYPES else "hl7.type.other",
                "state": m.state, "ack_code": m.ack_code or "", "errors": m.errors or [],
                "sender": m.sending_application, "attempts": m.attempts,
                "masked": hl7_in.masked(bytes(m.raw), m.charset)}
    latest = session.scalars(select(Hl7Message).order_by(Hl7Message.received_at.desc(),
                                                         Hl7Message.id.desc()).limit(limit)).all()
    failed = session.scalars(select(Hl7Message).where(Hl7Message.state.in_(hl7_in.WAITING))
                             .order_by(Hl7Message.received_at).limit(limit)).all()
    return {"latest": [row(m) for m in latest], "failed": [row(m) for m in failed],
            "replayed": replayed if replayed in ("AA", "AE", "AR") else None}
