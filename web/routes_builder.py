"""HTTP routes of the visual builder (thin: they call :mod:`careloop.web.builder`).

Pages: ``/builder`` (apps and their definitions), ``/builder/edit/{kind}/{key}?app=`` (the form
builder for forms, the rule editor for rule sets, the text view for every kind). The JSON API
under ``/api/v1/builder`` needs ``builder.edit``; state-changing calls send ``X-CSRF-Token``.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from careloop.engine import store
from careloop.engine.bundles import BundleError, export_bundle, import_bundle
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.engine.errors import CareloopError, DefinitionInvalid, NotFound
from careloop.engine.i18n import pick, t
from careloop.engine.limits import LimitExceeded, WorkTimeout, off_loop
from careloop.engine.models import BundleRow
from careloop.engine.registry import loaded_registry
from careloop.engine.services import FIELD_KEYS, service
from careloop.web import (
    builder,
    builder_changes,
    builder_copy,
    builder_datasets,
    builder_report_words,
    builder_usage,
    builder_words,
    governance,
)
from careloop.web.api_models import (
    COMMON_ERRORS,
    NOT_FOUND,
    DryRunOut,
    ErrorBody,
    ErrorList,
    LimitErrorBody,
    errors,
)
from careloop.web.api_models_builder import (
    ActionTypeWords,
    AlertTry,
    CategoryWords,
    ChartOptions,
    ChartPreview,
    DatasetColumns,
    DatasetOptions,
    DatasetPreview,
    DefinitionKey,
    Deleted,
    DraftChecked,
    DraftDiff,
    DraftOut,
    FieldTypePanel,
    FieldWords,
    FormPreview,
    FunctionDoc,
    ImportPlan,
    PublishAwaiting,
    Published,
    ScenarioChoice,
    ScoreMethodPanel,
    SimulationOut,
    StepTypePanel,
    UsedBy,
)
from careloop.web.builder_models import PublishRequest
from careloop.web.deps import (
    client_ip,
    limit_response,
    locale_of,
    record,
    request_id,
    require,
)
from careloop.web.permissions import BUILDER_EDIT, BUNDLE_IMPORT, Principal
from careloop.web.render import render

# The builder's pages are not API; its /api/v1/builder/… routes are, and are described.
router = APIRouter(responses=COMMON_ERRORS, tags=["builder"])
NEEDS_BUILDER = Depends(require(BUILDER_EDIT))
# what a draft's check, preview or try may answer besides its result
DRAFT_ERRORS = errors(NOT_FOUND, {
    409: {"model": ErrorBody, "description": "refused, with a ``code`` saying why"},
    422: {"model": LimitErrorBody | ErrorBody,
          "description": "over a limit (located), or the draft cannot be used"}})
NEEDS_IMPORT = Depends(require(BUNDLE_IMPORT))
KEY = r"^[a-z][a-z0-9_]{0,63}$"
KEY_PATH = Path(pattern=KEY)


def _refuse(request: Request, exc: builder.BuilderError) -> JSONResponse:
    return JSONResponse({"detail": t(exc.key, locale_of(request), **exc.params),
                         "code": exc.key, "request_id": request_id(request)},
                        status_code=exc.status)


async def _payload(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(status_code=422, detail=f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(status_code=422, detail="the body must be a JSON object")
    return data


async def _on_draft(request: Request, run: Callable[[Session, str, dict[str, Any]], Any]) -> Any:
    """The draft endpoints' common shape: read the JSON payload, take its text (YAML/JSON or a
    body), call ``run(session, text, payload)`` in one transaction, in a worker thread (never on
    the event loop) bounded by ``LIMITS.work_seconds``; a refused request answers with its i18n
    message, text or work beyond a limit with 422 and the located problem, any other Careloop
    error with 422."""
    data = await _payload(request)

    def work(text: str) -> Any:
        with transaction() as session:
            return run(session, text, data)

    try:
        text = builder.text_of(data)
        return await off_loop(work, text)
    except builder.BuilderError as exc:
        return _refuse(request, exc)
    except (LimitExceeded, WorkTimeout) as exc:
        return limit_response(request, exc)
    except CareloopError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


TRY = "builder.try"  # the audit action of a try-it, preview or dry run (docs/security.md)


def _audit_try(request: Request, me: Principal, kind: str, key: str, data: str, *,
               session: Session | None = None, **details: Any) -> None:
    """Audit a try-it: ``data`` says what it ran on (``scoped``: the user's real, scoped rows;
    ``posted``: only what was posted, e.g. a test event)."""
    record(request, me, TRY, session=session, object_type=kind, object_id=key,
           details={"data": data, **details})


def _app(data: dict[str, Any]) -> str | None:
    app = data.get("app")
    return app if isinstance(app, str) and app else None


def _kind(kind: str) -> str:
    if kind not in loaded_registry().catalogue("kind"):
        raise HTTPException(status_code=404)
    return kind


# --- pages ----------------------------------------------------------------------------------


@router.get("/builder", include_in_schema=False)
def builder_home(request: Request, me: Principal = NEEDS_BUILDER) -> Response:
    with transaction() as session:
        apps = session.scalars(select(BundleRow).order_by(BundleRow.id)).all()
        rows = store.list_current(session)
        by_app: dict[str, list[Any]] = {}
        for row in rows:
            by_app.setdefault(row.app_id or "", []).append(row)
        editable = set(builder.editable_apps(session, me))
    kinds = sorted(loaded_registry().catalogue("kind").names())
    return render(request, "builder/home.html", apps=apps, by_app=by_app, kinds=kinds,
                  editable=editable, kind_titles=_kind_titles(request))


def _kind_titles(request: Request) -> dict[str, str]:
    """Each kind of definition in the page's language (问卷, 规则集…), else its name."""
    locale = locale_of(request)
    return {name: pick(spec.title, locale) or name
            for name, spec in loaded_registry().catalogue("kind").items()}


@router.get("/builder/edit/{kind}/{key}", include_in_schema=False)
def builder_edit(request: Request, kind: str, key: str = KEY_PATH,
                 app: str = Query("", max_length=64), me: Principal = NEEDS_BUILDER) -> Response:
    _kind(kind)
    with transaction() as session:
        text, stored_app = builder.starting_text(session, me.user_id, kind, key)
        current = store.current(session, kind, key)
        title = current.body.get("title") if current is not None else builder_copy.draft_title(text)
        target = stored_app or app
        if target:
            try:
                builder.require_editor(session, me, target)
            except builder.BuilderError as exc:
                raise HTTPException(status_code=exc.status,
                                    detail=t(exc.key, locale_of(request), **exc.params)) from None
    # the page is titled by the definition's own title, never by kind/key
    return render(request, "builder/editor.html", kind=kind, key=key, app=target,
                  title=pick(title, locale_of(request)) if isinstance(title, dict) else "",
                  kind_title=_kind_titles(request)[kind])


# --- API ------------------------------------------------------------------------------------


@router.get("/api/v1/builder/field-types", response_model=list[FieldTypePanel])
def field_types(me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    return builder.field_palette()


@router.get("/api/v1/builder/score-methods", response_model=list[str])
def score_methods(me: Principal = NEEDS_BUILDER) -> list[str]:
    return sorted(loaded_registry().catalogue("score_method").names())


@router.get("/api/v1/builder/score-method-panels", response_model=list[ScoreMethodPanel])
def score_method_panels(me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    """Every score method: ``name``, ``title``, ``options`` (name → JSON Schema)."""
    return builder.score_method_palette()


@router.get("/api/v1/builder/step-types", response_model=list[StepTypePanel])
def step_types(me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    """Every step type: ``name``, ``title``, ``options`` (name → JSON Schema), ``required``."""
    return builder.step_palette()


@router.get("/api/v1/builder/definitions/{kind}",
            response_model=list[DefinitionKey], responses=NOT_FOUND)
def definition_keys(kind: str, me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    """The current definitions of a kind (``key``, ``title``, ``app``): the flow designer's
    choices for ``form``, ``template``, ``flow`` and ``calendar``."""
    _kind(kind)
    with transaction() as session:
        return builder.definition_keys(session, kind)


@router.get("/api/v1/builder/functions", response_model=list[FunctionDoc])
def functions(request: Request, me: Principal = NEEDS_BUILDER) -> list[dict[str, str]]:
    """The expression language's function library (``registry.catalogue("function")``) for
    completion in expression inputs: name, signature and the description in the UI language."""
    zh = locale_of(request) == "zh-CN"
    return [{"name": name, "signature": spec.signature, "doc": spec.doc_zh if zh else spec.doc_en}
            for name, spec in sorted(loaded_registry().catalogue("function").items())]


@router.get("/api/v1/builder/forms/{key}/fields", response_model=list[str], responses=NOT_FOUND)
def form_fields(key: str = KEY_PATH, me: Principal = NEEDS_BUILDER) -> list[str]:
    """The answerable field keys of a stored form (the rule editor's condition builder)."""
    with transaction() as session:
        row = store.current(session, "form", key)
        if row is None:
            raise HTTPException(status_code=404)
        keys = service(loaded_registry(), FIELD_KEYS)(dict(row.body))
    return sorted(keys)


@router.get("/api/v1/builder/forms/{key}/field-words", response_model=list[FieldWords],
            responses=NOT_FOUND)
def form_field_words(key: str = KEY_PATH, me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    """A stored form's fields with labels, type titles, answer kinds and choices (the rule
    editor's condition sentences and pickers)."""
    with transaction() as session:
        row = store.current(session, "form", key)
        if row is None:
            raise HTTPException(status_code=404)
        return builder_words.form_fields(dict(row.body))


@router.get("/api/v1/builder/dictionaries/{key}/categories", response_model=list[CategoryWords],
            responses=NOT_FOUND)
def dictionary_categories(key: str = KEY_PATH,
                          me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    """A classification dictionary's categories by title ("评论 提到 用药指导")."""
    with transaction() as session:
        row = store.current(session, "dictionary", key)
        if row is None:
            raise HTTPException(status_code=404)
        return builder_words.dictionary_categories(dict(row.body))


@router.get("/api/v1/builder/used-by/{kind}/{key}", response_model=list[UsedBy],
            responses=NOT_FOUND)
def used_by(kind: str, key: str = KEY_PATH, me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    """Where a definition is used: the current definitions that refer to it (their compilers'
    references), by kind and title."""
    _kind(kind)
    with transaction() as session:
        return builder_usage.used_by(session, kind, key)


@router.get("/api/v1/builder/action-types", response_model=list[ActionTypeWords])
def action_types(me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    """Every rule action type with its title (the rule editor lists actions by title) and its
    options' schemas (the action's panel; the stored departments offered by name)."""
    with transaction() as session:
        departments = {d.id: dict(d.name or {}) for d in session.scalars(select(Department))}
    return builder_words.action_types(departments)


@router.get("/api/v1/builder/i18n", response_model=dict[str, str])
def messages(request: Request, me: Principal = NEEDS_BUILDER) -> dict[str, str]:
    locale = locale_of(request)
    folder = pathlib.Path(__file__).parent / "data" / "i18n"
    keys = json.loads((folder / "builder" / "en.json").read_text("utf-8"))
    keys.update({k: v for k, v in json.loads((folder / "govern" / "en.json").read_text("utf-8"))
                 .items() if k.startswith("builder.")})
    keys.update(json.loads((folder / "builderjs" / "en.json").read_text("utf-8")))
    keys.update(json.loads((folder / "b21" / "en.json").read_text("utf-8")))
    keys.update(json.loads((folder / "steps" / "en.json").read_text("utf-8")))
    keys.update(json.loads((folder / "words" / "en.json").read_text("utf-8")))
    keys.update(json.loads((folder / "builder2" / "en.json").read_text("utf-8")))
    keys.update(json.loads((folder / "usab1" / "en.json").read_text("utf-8")))
    keys.update(json.loads((folder / "usab2" / "en.json").read_text("utf-8")))
    keys.update(json.loads((folder / "tryit" / "en.json").read_text("utf-8")))
    return {k: t(k, locale) for k in keys}


@router.get("/api/v1/builder/drafts/{kind}/{key}", response_model=DraftOut, responses=NOT_FOUND)
def get_draft(request: Request, kind: str, key: str = KEY_PATH,
    me: Principal = NEEDS_BUILDER,
) -> Any:
    _kind(kind)
    with transaction() as session:
        text, app = builder.starting_text(session, me.user_id, kind, key)
        draft = builder.get_draft(session, me.user_id, kind, key)
        current = store.current(session, kind, key)
        checked = builder.check_draft(session, kind, key, text, app)
        waiting = governance.awaiting(session, kind, key)
        return {**checked.to_json(), "yaml": text, "app": app, "has_draft": draft is not None,
                "current_version": current.version if current else None,
                "awaiting_approval": governance.request_json(waiting) if waiting else None}


@router.put("/api/v1/builder/drafts/{kind}/{key}",
            response_model=DraftChecked, responses=DRAFT_ERRORS)
async def put_draft(request: Request, kind: str, key: str = KEY_PATH,
                    me: Principal = NEEDS_BUILDER) -> Any:
    _kind(kind)

    def run(session: Session, text: str, data: dict[str, Any]) -> Any:
        app = str(data.get("app", ""))
        checked = builder.refuse_over_limits(builder.check_draft(session, kind, key, text, app))
        builder.save_draft(session, me.user_id, app, kind, key, text, editor=me)
        return checked.to_json()

    return await _on_draft(request, run)


@router.delete("/api/v1/builder/drafts/{kind}/{key}", response_model=Deleted)
def delete_draft(kind: str, key: str = KEY_PATH, me: Principal = NEEDS_BUILDER) -> dict[str, bool]:
    with transaction() as session:
        builder.discard_draft(session, me.user_id, kind, key)
    return {"deleted": True}


@router.post("/api/v1/builder/validate/{kind}/{key}",
             response_model=DraftChecked, responses=DRAFT_ERRORS)
async def validate(request: Request, kind: str, key: str = KEY_PATH,
    me: Principal = NEEDS_BUILDER,
) -> Any:
    _kind(kind)
    return await _on_draft(request, lambda session, text, data: builder.refuse_over_limits(
        builder.check_draft(session, kind, key, text, _app(data))).to_json())


@router.post("/api/v1/builder/diff/{kind}/{key}", response_model=DraftDiff, responses=DRAFT_ERRORS)
async def diff(request: Request, kind: str, key: str = KEY_PATH,
    me: Principal = NEEDS_BUILDER,
) -> Any:
    """The diff against the current version and what publishing would affect."""
    _kind(kind)

    def run(session: Session, text: str, data: dict[str, Any]) -> Any:
        checked = builder.refuse_over_limits(
            builder.check_draft(session, kind, key, text, _app(data)))
        current = store.current(session, kind, key)
        return {**checked.to_json(), "diff": builder.diff(session, kind, key, text),
                "changes": builder_changes.changes(
                    dict(current.body) if current else None, checked.body or {},
                    locale_of(request)),
                "current_version": current.version if current else None,
                "impact": builder.impact(session, kind, key, checked.body)}

    return await _on_draft(request, run)


@router.post("/api/v1/builder/publish/{kind}/{key}",
             response_model=Published, responses=errors(DRAFT_ERRORS, {
    202: {"model": PublishAwaiting, "description": "waits for a second person's approval"}}))
async def publish(request: Request, kind: str, key: str = KEY_PATH,
    me: Principal = NEEDS_BUILDER,
) -> Any:
    _kind(kind)
    data = await _payload(request)

    def work(text: str) -> Any:
        with transaction() as session:
            builder.refuse_text_over_limits(kind, key, text)
            row = builder.publish(
                session, actor=me.username, actor_role=me.role_label,
                app_id=str(data.get("app", "")), kind=kind, key=key, text=text,
                confirm_orphans=data.get("confirm_orphans") is True, user_id=me.user_id,
                request_id=request_id(request), ip=client_ip(request), editor=me)
            if isinstance(row, PublishRequest):  # lands once a second person approves it
                return JSONResponse({**governance.request_json(row), "kind": kind,
                                     "key": key, "status": "awaiting_approval",
                                     "message": t("builder.awaiting_approval",
                                                  locale_of(request))}, status_code=202)
            return {"kind": kind, "key": key, "version": row.version, "app": row.app_id}

    try:
        return await off_loop(work, builder.text_of(data))
    except (LimitExceeded, WorkTimeout) as exc:
        return limit_response(request, exc)
    except builder.BuilderError as exc:
        await run_in_threadpool(record, request, me, "builder.publish",
                                outcome="failure", object_type=kind,
                                object_id=key, details={"reason": exc.key})
        return _refuse(request, exc)


@router.post("/api/v1/builder/preview/form/{key}",
             response_model=FormPreview, responses=DRAFT_ERRORS)
async def preview(request: Request, key: str = KEY_PATH,
    me: Principal = NEEDS_BUILDER,
) -> Any:
    """The real patient page of the draft form (its first page) as HTML; with ``form`` (the
    preview's inputs as posted) the answers go through the form engine's logic, so show/hide and
    piping behave as on the patient's phone."""
    from careloop.forms.logic import evaluate
    from careloop.forms.pages import read_page, render_page

    data = await _payload(request)
    locale = locale_of(request)

    def work(text: str) -> dict[str, Any]:
        with transaction() as session:
            checked = builder.refuse_over_limits(builder.check_draft(session, "form", key, text))
        spec = checked.result.specs.get(("form", key))
        if spec is None or not spec.fields:
            return {"html": None, "problems": len(checked.problems)}
        posted = data.get("form")  # the preview's own inputs: name -> [values], as a page post
        answers: dict[str, Any] = {}
        if isinstance(posted, dict):
            answers = {k: v for k, v in read_page(spec, 0, posted).items() if v is not None}
        evaluation = evaluate(spec, answers, locale=locale, pages=())
        html = render_page(spec, answers=answers, page=0, locale=locale, errors=[],
                           evaluation=evaluation, action_url="#", large_text=False, staff=True)
        return {"html": html}

    try:
        return await off_loop(work, builder.text_of(data))
    except builder.BuilderError as exc:
        return _refuse(request, exc)
    except (LimitExceeded, WorkTimeout) as exc:
        return limit_response(request, exc)


@router.post("/api/v1/builder/preview/chart/{key}",
             response_model=ChartPreview, responses=DRAFT_ERRORS)
async def preview_chart(request: Request, key: str = KEY_PATH,
                        me: Principal = NEEDS_BUILDER) -> Any:
    """The draft chart drawn by the report engine as an SVG data URL: on real (scoped,
    aggregated) data, or on vega-datasets sample data when the dataset has no rows yet."""
    def run(session: Session, text: str, data: dict[str, Any]) -> Any:
        checked = builder.check_draft(session, "chart", key, text)
        spec = checked.result.specs.get(("chart", key))
        if spec is None:
            return {"image": None, "problems": len(checked.problems)}
        result = builder.chart_preview(session, spec, me.scope, locale_of(request))
        _audit_try(request, me, "chart", key, "scoped", session=session, draft=True)
        return result

    return await _on_draft(request, run)


@router.get("/api/v1/builder/charts/{key}/preview",
            response_model=ChartPreview, responses=errors(NOT_FOUND, {
    422: {"model": ErrorBody, "description": "the chart cannot be drawn"}}))
def stored_chart_preview(request: Request, key: str = KEY_PATH,
                         me: Principal = NEEDS_BUILDER) -> Any:
    """A stored chart drawn as in :func:`preview_chart` (the dashboard designer's tiles)."""
    from careloop.reports.spec import ChartSpec

    try:
        with transaction() as session:
            row = store.get_version(session, "chart", key)
            result = builder.chart_preview(session, store.compile_row(row, ChartSpec), me.scope,
                                           locale_of(request))
            _audit_try(request, me, "chart", key, "scoped", session=session,
                       version=row.version)
            return result
    except NotFound as exc:
        raise HTTPException(status_code=404) from exc
    except CareloopError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


@router.get("/api/v1/builder/charts", response_model=ChartOptions)
def chart_options(request: Request, me: Principal = NEEDS_BUILDER) -> dict[str, Any]:
    """What the chart, dashboard and alert designers offer: stored datasets and charts, chart
    types, encoding channels, dimensions, drill-down levels, dashboard filters, alert
    operators and severities (from the registry and the kinds' JSON Schemas), and ``labels``:
    each one's words (builder_report_words.py)."""
    with transaction() as session:
        datasets = [r.key for r in store.list_current(session, kind="dataset")]
        charts = [r.key for r in store.list_current(session, kind="chart")]
        out = _chart_lists(request, datasets, charts)
        out["labels"] = builder_report_words.chart_labels(session, out, locale_of(request))
    return out


def _chart_lists(request: Request, datasets: list[str], charts: list[str]) -> dict[str, Any]:
    from careloop.engine.schema import kind_schema

    dashboard = kind_schema("dashboard")["properties"]
    alert = kind_schema("alert")["properties"]
    registry = loaded_registry()
    return {"datasets": datasets, "charts": charts,
            "types": sorted(registry.catalogue("report_chart_type").names()),
            # each chart type's own panel: its label and the channels it offers
            "type_panels": [kind.panel(locale_of(request))
                            for _, kind in registry.catalogue("report_chart_type").items()],
            "channels": ["x", "y", "color", "theta", "size", "text", "value", "column", "row"],
            "dimensions": sorted(registry.catalogue("report_dimension").names()),
            "drill_levels": list(registry.catalogue("report_drill_level").names()),
            "filters": list(dashboard["filters"]["items"]["enum"]),
            "ops": list(alert["condition"]["properties"]["op"]["enum"]),
            "severities": list(alert["severity"]["enum"])}


@router.get("/api/v1/builder/datasets/{key}", response_model=DatasetColumns, responses=NOT_FOUND)
def dataset_columns(request: Request, key: str = KEY_PATH,
                    me: Principal = NEEDS_BUILDER) -> dict[str, Any]:
    """A stored dataset's dimensions and measures (encoding, measure and group-by pickers),
    with their titles (``labels``)."""
    with transaction() as session:
        found = builder.dataset_columns(session, key)
        if found is None:
            raise HTTPException(status_code=404)
        return {**found, "labels": builder_report_words.column_labels(session, key,
                                                                      locale_of(request))}


@router.get("/api/v1/builder/dataset-options", response_model=DatasetOptions)
def dataset_options(request: Request, me: Principal = NEEDS_BUILDER) -> dict[str, Any]:
    """What the dataset designer offers: sources, dimensions, measure types and forms, each by
    its title (``web/builder_datasets.py``)."""
    with transaction() as session:
        return builder_datasets.options(session, locale_of(request))


@router.post("/api/v1/builder/preview/dataset/{key}",
             response_model=DatasetPreview, responses=DRAFT_ERRORS)
async def preview_dataset(request: Request, key: str = KEY_PATH,
                          me: Principal = NEEDS_BUILDER) -> Any:
    """The draft dataset's first rows on the user's scoped data, in words; nothing stored."""
    def run(session: Session, text: str, data: dict[str, Any]) -> Any:
        checked = builder.check_draft(session, "dataset", key, text)
        spec = checked.result.specs.get(("dataset", key))
        if spec is None or checked.problems:
            return {"columns": None, "rows": [], "problems": len(checked.problems)}
        result = builder_datasets.preview(session, spec, me.scope, locale_of(request))
        _audit_try(request, me, "dataset", key, "scoped", session=session, draft=True)
        return result

    return await _on_draft(request, run)


@router.post("/api/v1/builder/alerts/{key}/try", response_model=AlertTry, responses=DRAFT_ERRORS)
async def try_alert(request: Request, key: str = KEY_PATH,
                    me: Principal = NEEDS_BUILDER) -> Any:
    """Evaluate a draft alert now on the user's (scoped) data, per group; nothing is stored."""
    def run(session: Session, text: str, _: dict[str, Any]) -> Any:
        result = builder.try_alert(session, key, text, me.scope)
        _audit_try(request, me, "alert", key, "scoped", session=session)
        return result

    return await _on_draft(request, run)


@router.post("/api/v1/builder/rules/{key}/try", response_model=DryRunOut, responses=DRAFT_ERRORS)
async def try_rules(request: Request, key: str = KEY_PATH,
    me: Principal = NEEDS_BUILDER,
) -> Any:
    def run(session: Session, text: str, data: dict[str, Any]) -> Any:
        event = data.get("event")
        if not isinstance(event, dict):
            raise HTTPException(status_code=422, detail="'event' must be a JSON object")
        outcome = builder.try_rules(session, key, text, event)
        session.rollback()  # a dry run: nothing it touched is kept
        _audit_try(request, me, "ruleset", key, "posted",
                   event_type=str(event.get("type", ""))[:64])  # its own transaction
        return outcome

    return await _on_draft(request, run)


@router.get("/api/v1/builder/apps/{app_id}/scenarios",
            response_model=list[ScenarioChoice], responses=NOT_FOUND)
def app_scenarios(request: Request, app_id: str = Path(pattern=KEY),
                  me: Principal = NEEDS_BUILDER) -> Any:
    """The journey scenarios "simulate" offers for an app (``key``, ``title``, ``draft``)."""
    with transaction() as session:
        try:
            builder.require_app(session, app_id)
        except builder.BuilderError as exc:  # an unknown app: 404 in words, never a 500
            return _refuse(request, exc)
        return builder.app_scenarios(session, me.user_id, app_id)


@router.post("/api/v1/builder/simulate/{kind}/{key}",
             response_model=SimulationOut, responses=DRAFT_ERRORS)
async def simulate(request: Request, kind: str, key: str = KEY_PATH,
                   me: Principal = NEEDS_BUILDER) -> Any:
    """Run the app's journey scenarios (``scenario``: one key; all without it) against the
    draft as posted (``text`` or ``body``) and the user's other drafts, in a scratch SQLite
    database, in a child process stopped at ``CARELOOP_SIMULATE_TIMEOUT`` seconds."""
    _kind(kind)
    data = await _payload(request)
    app = _app(data)
    chosen = data.get("scenario")
    try:
        text = builder.text_of(data)
        if app is None:
            raise builder.BuilderError("builder.simulate_no_app")
        if chosen is not None and not isinstance(chosen, str):
            raise builder.BuilderError("builder.simulate_unknown", 404, scenario=str(chosen))
        result = await run_in_threadpool(
            builder.simulate, editor=me, app_id=app, kind=kind, key=key, text=text,
            scenarios=[chosen] if chosen else None)
    except builder.BuilderError as exc:
        return _refuse(request, exc)
    await run_in_threadpool(record, request, me, "builder.simulate",
                            object_type=kind, object_id=key,
                            details={"app": app, "ok": result["ok"], "scenarios": [
                                s.get("scenario") for s in result["scenarios"]]})
    return result


@router.get("/builder/apps/{app_id}/export", include_in_schema=False)
def export(request: Request, app_id: str, me: Principal = NEEDS_BUILDER) -> Response:
    try:
        data = export_bundle(app_id)
    except NotFound as exc:
        raise HTTPException(status_code=404) from exc
    record(request, me, "builder.export", object_type="bundle", object_id=app_id)
    return Response(data, media_type="application/zip", headers={
        "content-disposition": f'attachment; filename="{app_id}.zip"'})


@router.post("/api/v1/builder/import", response_model=ImportPlan, responses=errors({
    422: {"model": ErrorList | LimitErrorBody | ErrorBody,
          "description": "every problem of the bundle, over a limit, or not a bundle"}}))
async def import_plan(request: Request, apply: bool = False,
                      me: Principal = NEEDS_IMPORT) -> Any:
    """Upload a bundle zip (the request body): its plan, and with ``?apply=true`` apply it."""
    data = await request.body()

    def work() -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "upload.zip"
            path.write_bytes(data)
            return import_bundle(path, dry_run=not apply, actor=me.username)

    try:
        plan = await off_loop(work)
    except DefinitionInvalid as exc:
        await run_in_threadpool(record, request, me, "builder.import",
                                outcome="failure", object_type="bundle",
                                details={"apply": apply, "errors": len(exc.problems)})
        return JSONResponse({"errors": [p.to_json() for p in exc.problems]}, status_code=422)
    except (LimitExceeded, WorkTimeout) as exc:
        await run_in_threadpool(record, request, me, "builder.import",
                                outcome="failure", object_type="bundle",
                                details={"apply": apply, "reason": "limit"})
        return limit_response(request, exc)
    except BundleError as exc:
        await run_in_threadpool(record, request, me, "builder.import",
                                outcome="failure", object_type="bundle",
                                details={"apply": apply, "reason": "not a bundle"})
        raise HTTPException(status_code=422, detail=str(exc)) from None
    await run_in_threadpool(record, request, me, "builder.import",
                            object_type="bundle", object_id=plan.app_id,
                            details={"applied": plan.applied})
    return plan.to_json()
