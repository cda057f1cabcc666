"""HTTP routes of the report engine (thin: :mod:`careloop.reports.views` does the work).

Every data route requires ``reports.view`` and passes the signed-in user's department scope down
to SQL; exports are audited. The Vega JavaScript is served from here (no CDN).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from careloop.engine.db import transaction
from careloop.engine.i18n import t
from careloop.reports import views
from careloop.reports.dialect import ReportError
from careloop.web.api_models import DashboardOut, DrillOut, ErrorBody, errors
from careloop.web.deps import locale_of, record, require
from careloop.web.permissions import REPORTS_VIEW, Principal

router = APIRouter()
_FILTERS = ("from", "to", "department", "form")
NEEDS_REPORTS = Depends(require(REPORTS_VIEW))


def _params(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k in _FILTERS}


def _equals(request: Request) -> tuple[tuple[str, str], ...]:
    """Cross-filters clicked in the page: ``?f.category=billing`` (known dimensions only)."""
    from careloop.engine.registry import loaded_registry

    known = loaded_registry().catalogue("report_dimension")
    out = []
    for name, value in request.query_params.multi_items():
        if name.startswith("f.") and name[2:] in known and value:
            out.append((name[2:], value[:200]))
    return tuple(out[:8])


def _locale(request: Request) -> str:
    """The language the user chose (the console's language cookie), else the browser's."""
    return locale_of(request)


@router.get("/reports/static/vega-bundle.js")
def vega_bundle() -> FileResponse:
    return FileResponse(views.bundle_path(), media_type="text/javascript")


@router.get("/api/v1/reports/dashboards/{key}", response_model=None, responses=errors({
    200: {"model": DashboardOut, "description": "the dashboard's tiles with their data"},
    400: {"model": ErrorBody, "description": "no such dashboard, or bad filters"}}))
def dashboard_json(key: str, request: Request,
                   me: Principal = NEEDS_REPORTS) -> JSONResponse:
    try:
        with transaction() as session:
            payload = views.dashboard_payload(session, key, _params(request), me.scope,
                                              _locale(request), _equals(request))
    except ReportError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return JSONResponse(payload)


@router.get("/api/v1/reports/dashboards/{key}/drill/{chart}", response_model=None,
            responses=errors({
                200: {"model": DrillOut, "description": "one drill-down level's data"},
                400: {"model": ErrorBody, "description": "no such chart, or bad filters"}}))
def dashboard_drill(key: str, chart: str, request: Request, path: str = "",
                    me: Principal = NEEDS_REPORTS) -> JSONResponse:
    selections = [p for p in path.split("/") if p] if path else []
    try:
        with transaction() as session:
            payload = views.drill_payload(session, key, chart, selections, _params(request),
                                          me.scope, _locale(request))
    except ReportError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return JSONResponse(payload)


@router.get("/api/v1/reports/dashboards/{key}/tiles/{chart}.{fmt}", response_model=None,
            responses=errors({
                200: {"description": "the tile as a file (``fmt``: csv, xlsx, png, svg, pdf)",
                      "content": {media.split(";")[0]: {"schema": {"type": "string",
                                                                   "format": "binary"}}
                                  for media in views.MEDIA.values()}},
                400: {"model": ErrorBody, "description": "no such tile, or a format it lacks"}}))
def tile_export(key: str, chart: str, fmt: str, request: Request,
                me: Principal = NEEDS_REPORTS) -> Response:
    try:
        with transaction() as session:
            body = views.export_tile(session, key, chart, fmt, _params(request), me.scope,
                                     _locale(request), _equals(request))
    except ReportError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    record(request, me, "report.export", object_type="dashboard", object_id=f"{key}/{chart}",
           details={"format": fmt, "params": _params(request)})
    return Response(body, media_type=views.MEDIA.get(fmt, "application/octet-stream"),
                    headers={"Content-Disposition": f'attachment; filename="{chart}.{fmt}"'})


@router.get("/reports/dashboards/{key}", response_class=HTMLResponse)
def dashboard_page(key: str, request: Request,
                   me: Principal = NEEDS_REPORTS) -> Response:
    """The dashboard inside the console: global filters (department limited to what the user
    may see, period), tiles drawn by /static/dashboard.js with the local Vega bundle."""
    from careloop.engine.domain import Department
    from careloop.web.render import render

    locale = _locale(request)
    params = _params(request)
    try:
        with transaction() as session:
            equals = _equals(request)
            payload = views.dashboard_payload(session, key, params, me.scope, locale, equals)
            departments = [(d.id, d.name) for d in session.query(Department)
                           .filter(Department.kind == "department").order_by(Department.id)
                           if me.scope is None or d.id in me.scope]
    except ReportError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    chosen = dict(departments).get(params.get("department", ""))
    query = urlencode([*params.items(), *((f"f.{d}", v) for d, v in equals)])
    return render(request, "report_dashboard.html", payload=payload, params=params,
                  departments=departments, chosen=chosen,
                  export_query=query, clear_query=urlencode(params),
                  aggregated_note=t("reports.aggregated-only", locale))
