"""The web application factory. Routes stay thin: they call engine functions.

Until the staff console exists (web runtime issue) this serves the definition catalogue API and a
health check, so the README's run command has something real to open.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from careloop import __version__
from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.errors import NotFound
from careloop.engine.models import BundleRow, DefinitionRow


def _definition_json(row: DefinitionRow, with_body: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": row.kind, "key": row.key, "version": row.version, "title": row.title,
        "content_hash": row.content_hash, "app": row.app_id,
        "created_at": row.created_at.isoformat(),
    }
    if with_body:
        data["body"] = row.body
    return data


# Each engine's HTTP routes live in web/routes_<engine>.py and expose ``router``; a module that
# does not exist yet is skipped.
ROUTE_MODULES = (
    "careloop.web.routes_forms",
    "careloop.web.routes_rules",
    "careloop.web.routes_flows",
    "careloop.web.routes_reports",
)


def _include_engine_routes(app: FastAPI) -> None:
    import importlib

    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.include_router(module.router)


def create_app() -> FastAPI:
    """Build the ASGI app (one per process; no state in it that another process needs)."""
    app = FastAPI(title="Careloop", version=__version__, openapi_url="/api/v1/openapi.json")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/v1/definitions")
    def list_definitions(kind: str | None = None) -> list[dict[str, Any]]:
        with transaction() as session:
            return [_definition_json(r) for r in store.list_current(session, kind=kind)]

    @app.get("/api/v1/definitions/{kind}/{key}")
    def get_definition(kind: str, key: str,
                       version: int | None = Query(default=None, ge=1)) -> dict[str, Any]:
        with transaction() as session:
            try:
                row = store.get_version(session, kind, key, version)
            except NotFound as exc:
                raise HTTPException(status_code=404, detail=str(exc)) from exc
            return _definition_json(row, with_body=True)

    @app.get("/api/v1/bundles")
    def list_bundles() -> list[dict[str, Any]]:
        with transaction() as session:
            rows = session.query(BundleRow).order_by(BundleRow.id).all()
            return [{"id": r.id, "name": r.name, "version": r.version,
                     "updated_at": r.updated_at.isoformat()} for r in rows]

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        with transaction() as session:
            rows = store.list_current(session)
        items = "".join(f"<li>{r.kind}/{r.key} v{r.version} — {r.title.get('zh-CN', '')} / "
                        f"{r.title.get('en', '')}</li>" for r in rows)
        return ("<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
                "<title>Careloop</title></head><body><h1>Careloop 患者体验管理</h1>"
                f"<ul>{items}</ul></body></html>")

    _include_engine_routes(app)
    return app
