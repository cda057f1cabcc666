"""The builder home's "start from a template or a copy" and "search across apps"
(:mod:`careloop.web.builder_copy`; thin routes, permission ``builder.edit``).

- ``GET /api/v1/builder/search?q=`` — definitions by title, kind, app or the label of anything
  inside them, in the request's language;
- ``GET /api/v1/builder/copy/key?kind=&key=&en=`` — the key proposed for a copy's title;
- ``GET /api/v1/builder/new/key?kind=&en=`` — the key proposed for a new definition's title;
- ``POST /api/v1/builder/new`` — ``{kind, app, title: {zh-CN, en}, key?}``: a blank definition
  titled so, saved as the user's draft in ``app``, audited ``builder.new``;
- ``GET /api/v1/builder/flow-trigger`` — the flow trigger panel's events and ``once`` in words;
- ``POST /api/v1/builder/copy`` — ``{kind, key, app, title: {zh-CN, en}, new_key?}``: the copy
  saved as the user's draft in ``app`` (an app the user may edit), audited ``builder.copy``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.i18n import t
from careloop.web import builder, builder_copy, builder_labels
from careloop.web.api_models import COMMON_ERRORS, Closed, ErrorBody, Text, errors
from careloop.web.deps import locale_of, record, request_id, require
from careloop.web.permissions import BUILDER_EDIT, Principal

router = APIRouter(responses=COMMON_ERRORS, tags=["builder"])
NEEDS_BUILDER = Depends(require(BUILDER_EDIT))
KEY = r"^[a-z][a-z0-9_]{0,63}$"


class SearchHit(Closed):
    """A definition found by the builder home's search."""

    kind: str
    key: str
    app: str
    app_name: str
    title: str
    kind_title: str
    found: list[str]
    url: str


class ProposedKey(Closed):
    key: str


class CopyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern=KEY)
    key: str = Field(pattern=KEY)
    app: str = Field(pattern=KEY)
    title: dict[str, str]
    new_key: str | None = Field(default=None, pattern=KEY)


class NewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern=KEY)
    app: str = Field(pattern=KEY)
    title: dict[str, str]
    key: str | None = Field(default=None, pattern=KEY)


class Copied(Closed):
    kind: str
    key: str
    app: str
    title: Text
    url: str


def _refuse(request: Request, exc: builder.BuilderError) -> JSONResponse:
    return JSONResponse({"detail": t(exc.key, locale_of(request), **exc.params),
                         "code": exc.key, "request_id": request_id(request)},
                        status_code=exc.status)


@router.get("/api/v1/builder/search", response_model=list[SearchHit])
def search(request: Request, q: str = Query("", max_length=200),
           me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    with transaction() as session:
        return builder_copy.search(session, q, locale_of(request))


@router.get("/api/v1/builder/copy/key", response_model=ProposedKey,
            responses=errors({404: {"model": ErrorBody, "description": "no such kind"}}))
def proposed_key(request: Request, kind: str = Query(pattern=KEY),
                 key: str = Query(pattern=KEY), en: str = Query("", max_length=200),
                 me: Principal = NEEDS_BUILDER) -> Any:
    try:
        builder.folder_of(kind)
    except builder.BuilderError as exc:  # not a kind the builder edits
        return _refuse(request, exc)
    with transaction() as session:
        taken = builder_copy.taken_keys(session, kind)
        return {"key": builder_copy.propose_key({"en": en}, key, taken)}


@router.post("/api/v1/builder/copy", response_model=Copied, status_code=201,
             responses=errors({404: {"model": ErrorBody, "description": "no such definition"},
                               409: {"model": ErrorBody, "description": "the key is taken"},
                               422: {"model": ErrorBody, "description": "bad key or title"}}))
def copy(request: Request, payload: CopyIn, me: Principal = NEEDS_BUILDER) -> Any:
    try:
        with transaction() as session:
            done = builder_copy.copy_definition(
                session, me, kind=payload.kind, key=payload.key, app_id=payload.app,
                title=payload.title, new_key=payload.new_key)
            record(request, me, "builder.copy", session=session, object_type=payload.kind,
                   object_id=done["key"], details={"from": payload.key, "app": payload.app})
    except builder.BuilderError as exc:
        return _refuse(request, exc)
    return JSONResponse(done, status_code=201)


@router.get("/api/v1/builder/new/key", response_model=ProposedKey,
            responses=errors({404: {"model": ErrorBody, "description": "no such kind"}}))
def proposed_new_key(request: Request, kind: str = Query(pattern=KEY),
                     en: str = Query("", max_length=200),
                     me: Principal = NEEDS_BUILDER) -> Any:
    try:
        with transaction() as session:
            return {"key": builder_copy.proposed_new_key(session, kind, {"en": en})}
    except builder.BuilderError as exc:  # not a kind the builder edits
        return _refuse(request, exc)


@router.post("/api/v1/builder/new", response_model=Copied, status_code=201,
             responses=errors({409: {"model": ErrorBody, "description": "the key is taken"},
                               422: {"model": ErrorBody, "description": "bad key or title"}}))
def new(request: Request, payload: NewIn, me: Principal = NEEDS_BUILDER) -> Any:
    try:
        with transaction() as session:
            done = builder_copy.new_definition(session, me, kind=payload.kind,
                                               app_id=payload.app, title=payload.title,
                                               key=payload.key)
            record(request, me, "builder.new", session=session, object_type=payload.kind,
                   object_id=done["key"], details={"app": payload.app})
    except builder.BuilderError as exc:
        return _refuse(request, exc)
    return JSONResponse(done, status_code=201)


class Named(Closed):
    name: str
    title: Text


class TriggerWords(Closed):
    """The flow designer's trigger panel: events and how often a run starts, in words."""

    events: list[Named]
    once: list[Named]


@router.get("/api/v1/builder/flow-trigger", response_model=TriggerWords)
def flow_trigger(me: Principal = NEEDS_BUILDER) -> dict[str, Any]:
    with transaction() as session:
        used = [str((row.body.get("trigger") or {}).get("event") or "")
                for row in store.list_current(session, kind="flow")]
    return builder_labels.trigger_words(used)
