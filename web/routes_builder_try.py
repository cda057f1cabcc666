"""The rule editor's "try it" in words (:mod:`careloop.web.builder_try`; thin routes,
permission ``builder.edit``).

- ``GET /api/v1/builder/try/submissions?form=…`` — the newest submissions of those forms the
  user may see (scoped as the staff pages are): ``id``, ``form``, ``text`` (form title, masked
  name, local time);
- ``POST /api/v1/builder/rules/{key}/explain`` — ``{body/text, submission_id}``,
  ``{body/text, form, inputs}`` (the form preview's inputs as posted) or ``{body/text, event}``
  (a hand-written test event, the advanced view): each rule hit or missed,
  with the reason in words. A submission outside the user's scope answers 404. Nothing is kept;
  audited as ``builder.try`` (``data``: ``scoped`` or ``posted``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from careloop.engine.i18n import t
from careloop.web import builder, builder_try
from careloop.web.api_models import COMMON_ERRORS, Closed, Open, errors
from careloop.web.deps import locale_of, request_id, require
from careloop.web.permissions import BUILDER_EDIT, Principal
from careloop.web.routes_builder import DRAFT_ERRORS, _audit_try, _on_draft

router = APIRouter(responses=COMMON_ERRORS, tags=["builder"])
NEEDS_BUILDER = Depends(require(BUILDER_EDIT))
KEY = r"^[a-z][a-z0-9_]{0,63}$"


class TrySubmission(Closed):
    """A submission "try it" offers: its id (the choice's value) and its words."""

    id: int
    form: str
    text: str


class RuleExplained(Closed):
    key: str
    title: str
    hit: bool
    text: str
    actions: list[str]


class TryExplained(Open):
    """Each rule of the draft hit or missed, in words; the dry run's ``matched`` and
    ``actions`` for the advanced view."""

    rules: list[RuleExplained]
    applies: bool
    matched: list[dict[str, Any]]
    actions: list[dict[str, Any]]


@router.get("/api/v1/builder/try/submissions", response_model=list[TrySubmission])
def try_submissions(request: Request,
                    form: list[str] = Query(default=[], max_length=20),  # noqa: B008
                    me: Principal = NEEDS_BUILDER) -> list[dict[str, Any]]:
    from careloop.engine.db import transaction

    forms = [f for f in form if isinstance(f, str) and len(f) <= 64][:20]
    with transaction() as session:
        return builder_try.recent_submissions(session, me, forms, locale_of(request))


def _not_found(request: Request) -> JSONResponse:
    return JSONResponse({"detail": t("builder.tryit.not_found", locale_of(request)),
                         "code": "builder.tryit.not_found", "request_id": request_id(request)},
                        status_code=404)


@router.post("/api/v1/builder/rules/{key}/explain", response_model=TryExplained,
             responses=errors(DRAFT_ERRORS))
async def explain(request: Request, key: str = Path(pattern=KEY),
                  me: Principal = NEEDS_BUILDER) -> Any:
    locale = locale_of(request)

    def run(session: Session, text: str, data: dict[str, Any]) -> Any:
        spec = builder.valid_spec(session, "ruleset", key, text)
        sub = data.get("submission_id")
        if isinstance(sub, int) and not isinstance(sub, bool) and 0 < sub < 2**31:
            try:
                payload = builder_try.submission_payload(session, me, sub)
            except LookupError:
                session.rollback()
                return _not_found(request)
            source, patient = "scoped", payload.get("patient_id")
        elif isinstance(data.get("form"), str) and isinstance(data.get("inputs"), dict):
            try:
                payload = builder_try.preview_payload(session, data["form"], data["inputs"],
                                                      locale)
            except LookupError:
                return _not_found(request)
            source, patient = "posted", None
        elif isinstance(data.get("event"), dict):  # a hand-written event (the advanced view)
            payload = builder_try.posted_payload(data["event"])
            source, patient = "posted", None
        else:
            raise builder.BuilderError("builder.tryit.need_source", 422)
        event_type = "form.submitted"
        if source == "posted" and isinstance(data.get("event"), dict):
            event_type = str(data["event"].get("type") or event_type)[:64]
        result = builder_try.explain(session, spec, payload, locale, event_type)
        session.rollback()  # a dry run: nothing it touched is kept
        _audit_try(request, me, "ruleset", key, source,  # its own transaction
                   submission=sub if source == "scoped" else None,
                   patient=bool(patient))
        return result

    return await _on_draft(request, run)


