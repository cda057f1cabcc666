"""The delivery page (``/admin/delivery``): open delivery incidents, dead letters (offered for
resend in one go once their channel has recovered), messages whose outcome is unknown (a person
confirms, resends or cancels). No message text, no address, no patient id: what is shown is the
template, the channel, the state and reason in words and hospital-local times. Every action is
audited (``outbox.*``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.i18n import t
from careloop.flows import outbox
from careloop.flows.models import OutboxMessage
from careloop.web.deps import locale_of, record, require
from careloop.web.display import label, local_time
from careloop.web.permissions import BUNDLE_IMPORT, Principal
from careloop.web.render import render

router = APIRouter(prefix="/admin", include_in_schema=False)
NEEDS_BUNDLE_IMPORT = Depends(require(BUNDLE_IMPORT))
MAX_ID = 2**31 - 1
RECENT = 100  # sent messages shown with their delivery receipts
NOTICES = ("resent", "cancelled", "confirmed", "resolved", "resent_recovered")


def _local(value: datetime | None) -> str:
    return local_time(value) if value is not None else ""


def receipt_words(m: OutboxMessage, locale: str) -> list[str]:
    """What became of a sent message at the handset, in words with hospital-local times: the
    provider's receipt (已送达手机 / 送达失败（原因）/ 已读) and the patient opening its link."""
    from careloop.flows.outbox import channel_for

    words: list[str] = []
    if m.status == "logged":
        words.append(t("delivery.receipt.logged", locale))
    elif m.receipt_state in ("delivered", "read"):
        words.append(t(f"delivery.receipt.{m.receipt_state}", locale, at=_local(m.receipt_at)))
    elif m.receipt_state == "failed":
        reason = m.receipt_detail or t("delivery.receipt.failed_unknown", locale)
        words.append(t("delivery.receipt.failed_at", locale, reason=reason,
                       at=_local(m.receipt_at)) if m.receipt_at
                     else t("delivery.receipt.failed", locale, reason=reason))
    else:
        try:
            reports = channel_for(m.channel).receipts
        except Exception:  # a channel type since removed: say nothing it cannot know
            reports = False
        words.append(t("delivery.receipt.waiting" if reports else "delivery.receipt.no_receipts",
                       locale))
    if m.opened_at is not None:
        words.append(t("delivery.receipt.opened", locale, at=_local(m.opened_at)))
    return words


def _message(m: OutboxMessage, locale: str, now: datetime) -> dict[str, Any]:
    return {"id": m.id, "template": label("template", m.template_key, locale) or m.template_key,
            "channel": label("channel", m.channel, locale) or m.channel,
            "status": t(f"web.outbox.status.{m.status}", locale),
            "reason": t(f"flows.outbox.reason.{m.reason}", locale) if m.reason else "",
            "attempts": m.attempts, "dead_at": _local(m.dead_at or m.attempt_started_at),
            "expires_at": _local(m.expires_at), "can_resend": outbox.resendable(m, now),
            "can_confirm": m.status == "unknown"}


@router.get("/delivery")
def delivery(request: Request, done: str = "", me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    locale, now = locale_of(request), now_utc()
    with transaction() as session:
        incidents = [{"id": i.id, "channel": label("channel", i.channel, locale) or i.channel,
                      "reason": t(f"flows.outbox.reason.{i.reason}", locale) if i.reason
                      else "", "count": i.dead_count, "opened_at": _local(i.opened_at),
                      "last_at": _local(i.last_at)} for i in outbox.open_incidents(session)]
        recovered = [_message(m, locale, now) for m in outbox.recovered_dead(session, now)]
        recovered_ids = {m["id"] for m in recovered}
        rows = session.scalars(select(OutboxMessage).where(
            OutboxMessage.status.in_(("dead", "unknown")))
            .order_by(OutboxMessage.id.desc()).limit(200)).all()
        unknown = [_message(m, locale, now) for m in rows if m.status == "unknown"]
        dead = [_message(m, locale, now) for m in rows
                if m.status == "dead" and m.id not in recovered_ids]
        recent = [{**_message(m, locale, now), "sent_at": _local(m.sent_at),
                   "receipt": receipt_words(m, locale)}
                  for m in session.scalars(select(OutboxMessage).where(
                      OutboxMessage.status.in_(outbox.DELIVERED))
                      .order_by(OutboxMessage.sent_at.desc(), OutboxMessage.id.desc())
                      .limit(RECENT)).all()]
    kind, _, number = done.partition(":")
    notice = t(f"delivery.done.{kind}", locale, n=number) \
        if kind in NOTICES and number.isdigit() else None
    return render(request, "admin_delivery.html", incidents=incidents, recovered=recovered,
                  unknown=unknown, dead=dead, recent=recent, notice=notice)


@router.post("/delivery/resend-recovered")
def resend_recovered(request: Request, me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Resend every dead letter within its moment on a channel that has recovered."""
    with transaction() as session:
        ids = outbox.resend_recovered(session)
        record(request, me, "outbox.resend_recovered", session=session,
               object_type="outbox_message", details={"messages": ids[:500]})
    return RedirectResponse(f"/admin/delivery?done=resent_recovered:{len(ids)}", status_code=303)


@router.post("/delivery/messages/{message_id}/{action}")
def message_action(request: Request, message_id: int = Path(ge=1, le=MAX_ID),
                   action: str = Path(pattern="^(resend|cancel|confirm)$"),
                   me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Resend a dead letter or a message of unknown outcome, cancel it, or confirm that it
    arrived (unknown outcome only)."""
    act = {"resend": outbox.resend, "cancel": outbox.cancel,
           "confirm": outbox.confirm_delivered}[action]
    try:
        with transaction() as session:
            row = act(session, message_id)
            record(request, me, f"outbox.{action}", session=session,
                   object_type="outbox_message", object_id=str(message_id),
                   patient_id=row.patient_id)
    except outbox.OutboxError:
        record(request, me, f"outbox.{action}", outcome="failure",
               object_type="outbox_message", object_id=str(message_id))
        raise HTTPException(status_code=409) from None
    done = {"resend": "resent", "cancel": "cancelled", "confirm": "confirmed"}[action]
    return RedirectResponse(f"/admin/delivery?done={done}:{message_id}", status_code=303)


@router.post("/delivery/incidents/{incident_id}/resolve")
def resolve_incident(request: Request, incident_id: int = Path(ge=1, le=MAX_ID),
                     me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    try:
        with transaction() as session:
            outbox.resolve_incident(session, incident_id, me.username)
            record(request, me, "outbox.incident_resolve", session=session,
                   object_type="delivery_incident", object_id=str(incident_id))
    except outbox.OutboxError:
        raise HTTPException(status_code=409) from None
    return RedirectResponse(f"/admin/delivery?done=resolved:{incident_id}", status_code=303)
