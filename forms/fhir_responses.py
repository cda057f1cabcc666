"""A FHIR QuestionnaireResponse for a Careloop form → a submission, scored like any other
(service ``forms.submit_fhir_response``, called by the FHIR endpoints of the flow engine).

The form is the last path segment of ``questionnaire`` (``Questionnaire/phq9``,
``https://…/Questionnaire/phq9|3`` for version 3); answers map by ``linkId``
(:func:`careloop.forms.fhir.answers_from_response`). The caller's ``event_id`` is remembered with
the submission, so the same response sent again returns the first submission.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.errors import NotFound
from careloop.engine.events import record
from careloop.engine.models import DomainEventRow
from careloop.forms.fhir import answers_from_response
from careloop.forms.runtime import SubmissionInvalid, load_form, submit

RECEIVED = "fhir.response_received"


def form_of(canonical: str) -> tuple[str, int | None] | None:
    """``"http://x/Questionnaire/phq9|3"`` → ``("phq9", 3)``; None if no form key can be read."""
    url, _, version = canonical.partition("|")
    key = url.rstrip("/").rsplit("/", 1)[-1]
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key):
        return None
    return key, int(version) if version.isdigit() else None


def submit_fhir_response(session: Session, response: Mapping[str, Any], *, patient_id: str,
                         encounter_id: str | None, event_id: str,
                         source: str) -> tuple[int, bool, list[dict[str, str]]]:
    """``(submission id, created, problems)``; each problem has ``at`` (``questionnaire`` or a
    ``linkId``) and ``message``. Nothing is written when there are problems."""
    seen = session.scalars(select(DomainEventRow).where(
        DomainEventRow.event_id == event_id)).first()
    if seen is not None:
        return int(seen.payload["submission_id"]), False, []
    canonical = str(response.get("questionnaire") or "")
    found = form_of(canonical)
    if found is None:
        return 0, False, [{"at": "questionnaire", "message": f"{canonical!r} names no "
                                                            "Careloop form (…/Questionnaire/"
                                                            "<form key>)"}]
    key, version = found
    try:
        _, spec = load_form(session, key, version)
    except NotFound:
        return 0, False, [{"at": "questionnaire", "message": f"no form {key!r}"
                                                            + (f" version {version}"
                                                               if version else "")}]
    total = spec.meta.get("total_link_id") if spec.meta else None
    answers, _ = answers_from_response(spec, response, total)
    try:
        with session.begin_nested():
            submission, _ = submit(session, form_key=key, answers=answers,
                                   patient_id=patient_id, encounter_id=encounter_id,
                                   channel="import", version=version)
    except SubmissionInvalid as exc:
        links = {f.key: f.link_id or f.key for f in spec.fields}
        return 0, False, [{"at": links.get(str(e.get("path", "")).split(".")[0].split("[")[0],
                                           ""),
                           "message": str(e.get("message"))} for e in exc.errors]
    record(session, RECEIVED, {"submission_id": submission.id, "form": key,
                               "patient_id": patient_id}, event_id=event_id, source=source,
           dispatch=False)
    return submission.id, True, []
