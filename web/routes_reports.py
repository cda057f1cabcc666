"""HTTP routes of the report engine (thin: :mod:`careloop.reports.views` does the work).

Every data route requires ``reports.view`` and passes the signed-in user's department scope down
to SQL; exports are audited. The Vega JavaScript is served from here (no CDN).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from careloop.engine.db import transaction
from careloop.engine.i18n import normalise_locale, t
from careloop.reports import views
from careloop.reports.dialect import ReportError
from careloop.web.deps import record, require
from careloop.web.permissions import REPORTS_VIEW, Principal

router = APIRouter()
_FILTERS = ("from", "to", "department", "form")
NEEDS_REPORTS = Depends(require(REPORTS_VIEW))


def _params(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k in _FILTERS}


def _locale(request: Request) -> str:
    return normalise_locale(request.headers.get("accept-language"))


@router.get("/reports/static/vega-bundle.js")
def vega_bundle() -> FileResponse:
    return FileResponse(views.bundle_path(), media_type="text/javascript")


@router.get("/api/v1/reports/dashboards/{key}")
def dashboard_json(key: str, request: Request,
                   me: Principal = NEEDS_REPORTS) -> JSONResponse:
    try:
        with transaction() as session:
            payload = views.dashboard_payload(session, key, _params(request), me.scope,
                                              _locale(request))
    except ReportError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return JSONResponse(payload)


@router.get("/api/v1/reports/dashboards/{key}/drill/{chart}")
def dashboard_drill(key: str, chart: str, request: Request, path: str = "",
                    me: Principal = NEEDS_REPORTS) -> JSONResponse:
    selections = [p for p in path.split("/") if p] if path else []
    try:
        with transaction() as session:
            payload = views.drill_payload(session, key, chart, selections, _params(request),
                                          me.scope)
    except ReportError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return JSONResponse(payload)


@router.get("/api/v1/reports/dashboards/{key}/tiles/{chart}.{fmt}")
def tile_export(key: str, chart: str, fmt: str, request: Request,
                me: Principal = NEEDS_REPORTS) -> Response:
    try:
        with transaction() as session:
            body = views.export_tile(session, key, chart, fmt, _params(request), me.scope,
                                     _locale(request))
    except ReportError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    record(request, me, "report.export", object_type="dashboard", object_id=f"{key}/{chart}",
           details={"format": fmt, "params": _params(request)})
    return Response(body, media_type=views.MEDIA.get(fmt, "application/octet-stream"),
                    headers={"Content-Disposition": f'attachment; filename="{chart}.{fmt}"'})


@router.get("/reports/dashboards/{key}", response_class=HTMLResponse)
def dashboard_page(key: str, request: Request,
                   me: Principal = NEEDS_REPORTS) -> HTMLResponse:
    locale = _locale(request)
    try:
        with transaction() as session:
            payload = views.dashboard_payload(session, key, _params(request), me.scope, locale)
    except ReportError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return HTMLResponse(_page(payload, locale))


def _page(payload: dict[str, Any], locale: str) -> str:
    data = json.dumps(payload, ensure_ascii=False).replace("</", "<\\/")
    tiles = "".join(f'<div class="tile w{tile["width"]}" id="tile-{i}"></div>'
                    for i, tile in enumerate(payload["tiles"]))
    return (f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
            f'<title>{payload["title"]}</title>'
            '<script src="/reports/static/vega-bundle.js"></script></head><body>'
            f'<h1>{payload["title"]}</h1><p>{t("reports.aggregated-only", locale)}</p>'
            f'{tiles}<script type="application/json" id="payload">{data}</script>'
            '<script>const p=JSON.parse(document.getElementById("payload").textContent);'
            'p.tiles.forEach((tile,i)=>vegaEmbed("#tile-"+i,tile.spec,{actions:false}));'
            '</script></body></html>')
