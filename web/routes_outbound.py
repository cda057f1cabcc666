"""The outbound allow-list page (``/admin/outbound``): the hosts ``call_webhook`` steps may
reach, and the latest webhook calls with their state and error in words (no address, no body).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from careloop.engine.clock import to_local
from careloop.engine.db import transaction
from careloop.engine.i18n import t
from careloop.flows import egress
from careloop.flows.models import WebhookCall
from careloop.web.deps import locale_of, record, require
from careloop.web.permissions import BUNDLE_IMPORT, Principal
from careloop.web.render import render

router = APIRouter(prefix="/admin", include_in_schema=False)
NEEDS_BUNDLE_IMPORT = Depends(require(BUNDLE_IMPORT))


def _local(value: datetime | None) -> str:
    return to_local(value).strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _calls(session: Any, locale: str) -> list[dict[str, Any]]:
    rows = session.scalars(select(WebhookCall).order_by(WebhookCall.id.desc()).limit(50)).all()
    return [{"flow": c.flow_key or "", "step": c.step_key or "",
             "host": urlsplit(c.url).hostname or "",
             "status": t(f"govern.calls.status.{c.status}", locale),
             "error": t(f"govern.error.{c.error}", locale)
             if c.error and not c.error.startswith("HTTP") else (c.error or ""),
             "at": _local(c.sent_at or c.created_at)} for c in rows]


def _page(request: Request, error: str | None = None, status: int = 200) -> Response:
    locale = locale_of(request)
    with transaction() as session:
        hosts = [{"host": h.host, "allow_private": h.allow_private, "note": h.note or "",
                  "added_by": h.added_by or "", "added_at": _local(h.added_at)}
                 for h in egress.allowed_hosts(session)]
        calls = _calls(session, locale)
    return render(request, "admin_outbound.html", status_code=status, hosts=hosts, calls=calls,
                  error=error)


@router.get("/outbound")
def outbound(request: Request, me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    return _page(request)


@router.post("/outbound")
def outbound_add(request: Request, host: str = Form(max_length=255),
                 allow_private: str = Form(""), note: str = Form("", max_length=500),
                 me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    try:
        with transaction() as session:
            row = egress.allow(session, host, allow_private=allow_private == "on",
                               note=note.strip() or None, actor=me.username)
            record(request, me, "outbound.allow", session=session, object_type="outbound_host",
                   object_id=row.host, details={"host": row.host,
                                                "allow_private": row.allow_private})
    except egress.EgressRefused as exc:
        return _page(request, str(exc), 400)
    return RedirectResponse("/admin/outbound", status_code=303)


@router.post("/outbound/remove")
def outbound_remove(request: Request, host: str = Form(max_length=255),
                    me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    with transaction() as session:
        if egress.disallow(session, host):
            record(request, me, "outbound.disallow", session=session,
                   object_type="outbound_host", object_id=egress.normal_host(host),
                   details={"host": egress.normal_host(host)})
    return RedirectResponse("/admin/outbound", status_code=303)
