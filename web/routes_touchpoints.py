"""Touchpoint pages (thin: they call careloop.forms.touchpoint_page).

* ``GET|POST /t/{token}`` — the anonymous short form behind a touchpoint's QR code; the device
  cookie (``cl_device``, random, one year) is what the per-device limits count
* ``GET /touchpoints`` — the printable QR sheet: each place's name, location and QR code (inline
  SVG, drawn locally), for staff who can view definitions
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from careloop.engine.db import transaction
from careloop.engine.i18n import pick
from careloop.forms.patient import Reply
from careloop.forms.touchpoint_page import open_touchpoint, post_touchpoint
from careloop.forms.touchpoints import all_touchpoints, qr_svg, url_for
from careloop.web.deps import client_ip, locale_of, require
from careloop.web.permissions import DEFINITIONS_VIEW, Principal
from careloop.web.render import render
from careloop.web.routes_forms import NO_STORE, PATIENT_POST, PatientPost

router = APIRouter()
DEVICE_COOKIE = "cl_device"
NEEDS_DEFINITIONS = Depends(require(DEFINITIONS_VIEW))


def _reply(reply: Reply, request: Request) -> Response:
    answer: Response = (JSONResponse(reply.data, status_code=reply.status, headers=NO_STORE)
                        if reply.data is not None else
                        HTMLResponse(reply.html or "", status_code=reply.status,
                                     headers=NO_STORE))
    if not request.cookies.get(DEVICE_COOKIE):
        answer.set_cookie(DEVICE_COOKIE, secrets.token_urlsafe(18), max_age=365 * 86400,
                          httponly=True, samesite="lax", path="/t/",
                          secure=request.url.scheme == "https")
    return answer


@router.get("/t/{token}", response_class=HTMLResponse)
def touchpoint_page(token: str, request: Request, lang: str | None = None,
                    lt: int | None = None) -> Response:
    with transaction() as session:
        reply = open_touchpoint(session, token, lang=lang, large_text=bool(lt),
                                url=request.url.path)
    return _reply(reply, request)


@router.post("/t/{token}", response_class=HTMLResponse)
def touchpoint_post(token: str, request: Request,
                    posted: PatientPost = PATIENT_POST) -> Response:
    fields, _uploads = posted  # a touchpoint's form takes no files
    device = (request.cookies.get(DEVICE_COOKIE) or "")[:64]
    with transaction() as session:
        reply = post_touchpoint(session, token, fields, device=device,
                                address=client_ip(request) or "-", url=request.url.path)
    return _reply(reply, request)


@router.get("/touchpoints", response_class=HTMLResponse)
def qr_sheet(request: Request, me: Principal = NEEDS_DEFINITIONS) -> Response:
    """Every touchpoint's printable QR code with its name and location."""
    locale = locale_of(request)
    with transaction() as session:
        places: list[dict[str, Any]] = []
        for place in all_touchpoints(session):
            url = url_for(session, place.key)
            places.append({"key": place.key, "title": pick(dict(place.title), locale),
                           "location": pick(dict(place.location), locale)
                           if place.location else "",
                           "type": place.type, "department": place.department,
                           "url": url, "svg": qr_svg(url)})
    return render(request, "touchpoints.html", places=places)
