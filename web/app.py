"""The web application factory. Routes stay thin: they call engine and console functions.

Layers, outside in: :class:`~careloop.web.middleware.HardeningMiddleware` (request id, security
headers, no-store, body size limit) → exception handlers (generic pages with the request id, no
stack traces) → app-wide dependencies (CSRF, patient scope) → routes.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from careloop import __version__
from careloop.engine import logs, store
from careloop.engine.db import transaction
from careloop.engine.errors import NotFound
from careloop.engine.i18n import t
from careloop.engine.limits import LimitExceeded, WorkTimeout
from careloop.engine.models import BundleRow, DefinitionRow
from careloop.web.deps import (
    CsrfRefused,
    Forbidden,
    NotAuthenticated,
    PasswordExpired,
    csrf_protect,
    limit_response,
    locale_of,
    request_id,
    wants_html,
)
from careloop.web.middleware import header_list
from careloop.web.scoping import enforce_patient_scope

log = logging.getLogger("careloop.web")


def _definition_json(row: DefinitionRow, with_body: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": row.kind, "key": row.key, "version": row.version, "title": row.title,
        "content_hash": row.content_hash, "app": row.app_id,
        "created_at": row.created_at.isoformat(),
    }
    if with_body:
        data["body"] = row.body
    return data


def _include_engine_routes(app: FastAPI) -> None:
    """Every plugin's routers (the ``routers`` hook), built-ins first, then extensions."""
    from careloop.engine.plugins import routers

    for router in routers():
        app.include_router(router)


def _mount_static(app: FastAPI) -> None:
    """Every plugin's static folders (the ``static_dirs`` hook); one mount per URL path."""
    from careloop.engine.plugins import static_dirs

    by_path: dict[str, list[str | tuple[str, str]]] = {}
    for path, package, folder in static_dirs():
        by_path.setdefault(path, []).append((package, folder))
    for path, packages in by_path.items():
        app.mount(path, StaticFiles(packages=packages), name=path.strip("/") or "static")


def _error(request: Request, status: int, key: str) -> Response:
    rid = request_id(request)
    locale = locale_of(request)
    message = t(key, locale)
    if not wants_html(request):
        response: Response = JSONResponse({"detail": message, "request_id": rid},
                                          status_code=status)
    else:
        from careloop.web.render import render

        try:
            response = render(request, "error.html", status_code=status, message=message,
                              status=status)
        except Exception:  # the error page itself failed: plain text, still generic
            log.exception("error page failed (request %s)", rid)
            response = Response(f"{message} ({rid})", status_code=status,
                                media_type="text/plain; charset=utf-8")
    for name, value in header_list(request.url.path, rid):
        response.headers[name.decode()] = value.decode()
    return response


_STATUS_KEYS = {400: "web.error.bad_request", 401: "web.error.unauthenticated",
                403: "web.error.forbidden", 404: "web.error.not_found",
                405: "web.error.method", 409: "web.error.conflict",
                413: "web.error.too_large", 422: "web.error.bad_request"}


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotAuthenticated)
    def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if wants_html(request):
            from urllib.parse import quote

            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return _error(request, 401, "web.error.unauthenticated")

    @app.exception_handler(PasswordExpired)
    def password_expired(request: Request, exc: PasswordExpired) -> Response:
        if wants_html(request):
            return RedirectResponse("/account/password", status_code=303)
        return _error(request, 403, "web.error.password_expired")

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error(request, 403, "web.error.forbidden")

    @app.exception_handler(CsrfRefused)
    def csrf(request: Request, exc: CsrfRefused) -> Response:
        return _error(request, 403, "web.error.csrf")

    @app.exception_handler(LimitExceeded)
    def over_limit(request: Request, exc: LimitExceeded) -> Response:
        return limit_response(request, exc)

    @app.exception_handler(WorkTimeout)
    def work_timeout(request: Request, exc: WorkTimeout) -> Response:
        return limit_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not wants_html(request) and exc.status_code < 500 and isinstance(exc.detail, str) \
                and exc.status_code not in _STATUS_KEYS:
            return JSONResponse({"detail": exc.detail, "request_id": request_id(request)},
                                status_code=exc.status_code)
        return _error(request, exc.status_code,
                      _STATUS_KEYS.get(exc.status_code, "web.error.internal"))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> Response:
        if wants_html(request):
            return _error(request, 400, "web.error.bad_request")
        # field paths and messages only; the submitted values are not echoed back
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                   "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors, "request_id": request_id(request)},
                            status_code=422)

    def bad_data(request: Request, exc: Exception) -> Response:
        # The database refused a value (NUL byte, an integer out of range — PostgreSQL raises
        # DataError, SQLite's driver OverflowError): the input was bad, not the server.
        cause = exc.orig if isinstance(exc, DataError) else exc
        log.warning("database refused input: %s (request %s)", type(cause).__name__,
                    request_id(request))
        return _error(request, 400, "web.error.bad_request")

    app.add_exception_handler(DataError, bad_data)
    app.add_exception_handler(OverflowError, bad_data)

    def database_unavailable(request: Request, exc: Exception) -> Response:
        # connecting timed out, no pooled connection in time, a statement cancelled by the
        # server's timeout, SQLite busy: the static 503 page (it needs no database)
        from careloop.web.deadline import unavailable_response

        log.warning("database unavailable: %s (request %s)", type(exc).__name__,
                    request_id(request))
        return unavailable_response(request)  # type: ignore[no-any-return]

    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)

    def client_gone(request: Request, exc: Exception) -> Response:
        # one line, no traceback: the client left while its body was being read
        log.info("client disconnected (request %s)", request_id(request))
        return Response(status_code=400)

    app.add_exception_handler(ClientDisconnect, client_gone)

    @app.exception_handler(Exception)
    def crashed(request: Request, exc: Exception) -> Response:
        # the full detail goes to the log through the one redaction step (careloop.engine.logs):
        # statement parameters, phone and ID numbers, the names of the patients in context
        log.error("unhandled %s (request %s)", type(exc).__name__, request_id(request),
                  exc_info=exc)
        return _error(request, 500, "web.error.internal")


_warned: list[bool] = []


def _warn_base_url() -> None:
    """Say once per process, in the log, that message links point nowhere useful."""
    from careloop.engine.links import startup_warning

    notice = startup_warning()
    if notice and not _warned:
        _warned.append(True)
        log.warning("%s", notice)


def create_app() -> FastAPI:
    """Build the ASGI app (one per process; no state in it that another process needs)."""
    from careloop.engine.registry import loaded_registry
    from careloop.web.middleware import HardeningMiddleware

    loaded_registry()
    logs.configure()
    _warn_base_url()
    app = FastAPI(title="Careloop", version=__version__, openapi_url="/api/v1/openapi.json",
                  docs_url=None, redoc_url=None,
                  dependencies=[Depends(csrf_protect), Depends(enforce_patient_scope)])
    from careloop.web.bodyguard import JsonGuard
    from careloop.web.bulkhead import EventsBulkhead
    from careloop.web.deadline import DatabaseDeadline
    from careloop.web.metrics import RequestMetrics

    # outside in: hardening (request id, headers, size), metrics, the events API's concurrency,
    # the database deadline, the JSON guard — none does blocking work (test_nonblocking.py)
    app.add_middleware(JsonGuard)
    app.add_middleware(DatabaseDeadline)
    app.add_middleware(EventsBulkhead)
    app.add_middleware(RequestMetrics)
    app.add_middleware(HardeningMiddleware)
    _install_handlers(app)
    _mount_static(app)

    from careloop.web import health

    app.include_router(health.router)  # /healthz, /readyz, /metrics

    from careloop.web.deps import require
    from careloop.web.permissions import DEFINITIONS_VIEW, Principal

    needs_definitions = Depends(require(DEFINITIONS_VIEW))

    # Definitions carry rules, thresholds and webhook addresses: signed-in staff with
    # definitions.view only.
    from careloop.web.api_models import (
        COMMON_ERRORS,
        NOT_FOUND,
        BundleSummary,
        DefinitionDetail,
        DefinitionSummary,
        errors,
    )

    @app.get("/api/v1/definitions", response_model=list[DefinitionSummary],
             responses=COMMON_ERRORS)
    def list_definitions(kind: str | None = None,
                         me: Principal = needs_definitions) -> list[dict[str, Any]]:
        with transaction() as session:
            return [_definition_json(r) for r in store.list_current(session, kind=kind)]

    @app.get("/api/v1/definitions/{kind}/{key}", response_model=DefinitionDetail,
             responses=errors(NOT_FOUND))
    def get_definition(kind: str, key: str,
                       version: int | None = Query(default=None, ge=1),
                       me: Principal = needs_definitions) -> dict[str, Any]:
        with transaction() as session:
            try:
                row = store.get_version(session, kind, key, version)
            except NotFound as exc:
                raise HTTPException(status_code=404, detail=str(exc)) from exc
            return _definition_json(row, with_body=True)

    @app.get("/api/v1/bundles", response_model=list[BundleSummary], responses=COMMON_ERRORS)
    def list_bundles(me: Principal = needs_definitions) -> list[dict[str, Any]]:
        with transaction() as session:
            rows = session.query(BundleRow).order_by(BundleRow.id).all()
            return [{"id": r.id, "name": r.name, "version": r.version,
                     "updated_at": r.updated_at.isoformat()} for r in rows]

    _include_engine_routes(app)
    from careloop.web.routeindex import guard_included_routers

    guard_included_routers(app)  # after the last router: each is skipped where it cannot match
    return app
