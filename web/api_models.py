"""Response models of the JSON API under ``/api/v1`` (what ``/api/v1/openapi.json`` declares).

Each model mirrors, key for key and in the same order, the JSON a route already returned, so
declaring it changed no byte a client gets (``tests/web/test_openapi.py`` validates real
responses against these schemas). Two bases:

- :class:`Closed` for shapes the core builds whole: unknown keys are refused
  (``additionalProperties: false``), so a key added to the output without its model fails the
  test instead of silently vanishing from the response;
- :class:`Open` for shapes a plugin or a definition extends (palettes of field and step types,
  FHIR resources, dashboards): the declared keys are always there, more may follow.

Error bodies (401/403/404/409/422) are here too; :data:`COMMON_ERRORS` documents the ones every
route may answer. Builder models are in :mod:`careloop.web.api_models_builder`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Text = dict[str, str]
"""Hospital text in several languages: ``{"zh-CN": "…", "en": "…"}``."""


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- errors ------------------------------------------------------------------------------------

class ErrorBody(Closed):
    """A refusal in the reader's language (401, 403, 404, 409, 429, 503 …); some name why with
    a stable ``code`` (e.g. ``task.not-yours``)."""

    detail: str
    code: str | None = Field(default=None, description="present when the refusal has one")
    request_id: str | None = Field(description="quote it to IT; it is in the server log")


class ProblemBody(Closed):
    """One located problem (``careloop.engine.errors.Problem``): ``path`` in JSON-path style,
    ``file:line:column`` when the problem is in author text."""

    code: str
    message: str
    path: str
    file: str | None
    line: int | None
    column: int | None
    hint: str | None
    severity: Literal["error", "warning"]
    path_parts: list[str | int]


class LimitErrorBody(Closed):
    """422: author text or work beyond a limit, located (never a 500)."""

    detail: str
    code: str
    problems: list[ProblemBody]
    request_id: str | None


class InvalidField(Closed):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(Closed):
    """422: the request does not fit the operation's parameters or body; field paths and
    messages only, the submitted values are never echoed back."""

    detail: list[InvalidField]
    request_id: str | None


class PathError(Open):
    """One problem of a posted document, placed by its path (``$.payload.patient_id``)."""

    path: str
    message: str


class ErrorList(Closed):
    """422: every problem of a posted form or bundle, each with its path."""

    errors: list[PathError]


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "not signed in, or no valid API key"},
    403: {"model": ErrorBody, "description": "signed in, but without the permission or scope"},
    422: {"model": ValidationErrorBody, "description": "parameters or body do not fit"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such record (or not yours to see)"}}


def errors(*extra: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """:data:`COMMON_ERRORS` and a route's own error answers (those win)."""
    merged = dict(COMMON_ERRORS)
    for more in extra:
        merged.update(more)
    return merged


# --- definitions and bundles ---------------------------------------------------------------

class DefinitionSummary(Closed):
    kind: str
    key: str
    version: int
    title: dict[str, Any]
    content_hash: str
    app: str | None
    created_at: str = Field(description="ISO 8601 instant (UTC)")


class DefinitionDetail(DefinitionSummary):
    body: dict[str, Any] = Field(description="the definition as imported (YAML as JSON)")


class BundleSummary(Closed):
    id: str
    name: dict[str, Any]
    version: str
    updated_at: str


# --- the console API (routes_api.py) ---------------------------------------------------------

class Grant(Closed):
    role: str
    department: str | None


class Me(Closed):
    username: str
    display_name: str
    roles: list[Grant]
    permissions: list[str]
    csrf_token: str | None = Field(description="send it as X-CSRF-Token on state changes")


class TaskOut(Closed):
    """A task; ``*_display`` are the same instants in hospital time, as a person reads them."""

    id: int
    title: str
    kind: str
    patient_id: str | None
    department_id: str | None
    assignee_user_id: int | None
    assignee_role: str | None
    priority: str
    status: str
    due_at: str | None
    sla: Literal["done", "overdue", "due_soon", "on_track", "no_due"]
    outcome: str | None
    notes: str | None
    form_key: str | None
    source_type: str | None
    source_ref: str | None
    created_at: str
    completed_at: str | None
    due_at_display: str
    created_at_display: str
    completed_at_display: str


class InboxTask(TaskOut):
    """A task in a list: who it is about and who holds it."""

    patient_name: str | None
    patient_mrn: str | None
    assignee_name: str | None


class DecisionOut(Closed):
    """The decided approval task and what the decision did."""

    task: TaskOut
    result: str
    signer_task_id: int | None


class PatientHit(Closed):
    id: str
    mrn: str


class PatientRecord(Closed):
    """The patient's card (phone and ID masked unless revealed), stays, tags and tasks."""

    patient: dict[str, Any]
    encounters: list[dict[str, Any]]
    tags: list[str]
    tasks: list[dict[str, Any]]


class RevealedPatient(Open):
    """The patient's id and the revealed fields (phone, ID number), audited with the reason."""

    id: str


class AuditEntry(Closed):
    id: int
    at: str
    actor: str
    actor_role: str | None
    ip: str | None
    action: str
    object_type: str | None
    object_id: str | None
    patient_id: str | None
    outcome: str
    request_id: str | None
    details: dict[str, Any] | None


class AlertOut(Closed):
    id: int
    level: str
    message: str
    patient_id: str | None
    department: Text | None = Field(description="the department's name in each language")
    status: str
    created_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    note: str | None


class AlertAcknowledged(Closed):
    id: int
    status: str
    acknowledged_by: str | None


# --- flows (routes_flows.py): events in, read-back out ---------------------------------------

class EventAccepted(Open):
    """200: the event is stored (or it is the identical re-send of one: the original ack).
    A ``correction`` also carries ``corrects`` and ``corrected``."""

    status: Literal["accepted"]
    event_id: str
    id: int
    type: str
    recorded_at: str


class EventParked(Closed):
    """202: kept in the integration queue until its patient arrives or IT sets up a code."""

    status: Literal["parked"]
    event_id: str
    id: int
    reason: str
    errors: list[PathError]
    message: str


class EventRejected(Closed):
    """422 (or 409 for a unique value another record holds): every problem, with its path."""

    status: Literal["rejected"]
    errors: list[PathError]


class EventConflict(Closed):
    """409: the event id is known with another body; nothing changed. ``differing``: the paths
    that differ, never their values."""

    status: Literal["conflict"]
    event_id: str
    differing: list[str]
    errors: list[PathError]


class RunSummary(Closed):
    id: int
    flow: str
    version: int
    status: str
    patient_id: str | None
    encounter_id: str | None
    started_at: str | None


class StepRunOut(Closed):
    id: int
    key: str
    type: str
    status: str
    waiting_for: str | None
    attempts: int
    error: str | None


class TimerOut(Closed):
    step_run_id: int | None
    purpose: str
    due_at: str | None


class RunHistoryEntry(Closed):
    at: str | None
    step: str | None
    action: str
    details: dict[str, Any] | None


class RunDetail(Closed):
    id: int
    flow: str
    version: int
    status: str
    patient_id: str | None
    encounter_id: str | None
    started_at: str | None
    finished_at: str | None
    steps: list[StepRunOut]
    waiting: list[TimerOut]
    history: list[RunHistoryEntry]


class IncidentOut(Closed):
    id: int
    run_id: int
    step: str | None
    error: str | None
    status: str
    created_at: str | None


class StatusOk(Closed):
    status: Literal["ok"]


class OutboxMessage(Closed):
    id: int
    template: str
    channel: str
    patient_id: str | None
    status: str
    reason: str | None
    attempts: int
    urgent: bool
    created_at: str | None
    expires_at: str | None
    next_attempt_at: str | None
    sent_at: str | None


# --- forms (routes_forms.py) -----------------------------------------------------------------

class FormOut(Closed):
    key: str
    version: int
    content_hash: str
    title: dict[str, Any]
    pages: Any
    field_keys: list[str]
    definition: dict[str, Any]


class FhirResource(Open):
    """A FHIR R4 resource (``Questionnaire`` or ``QuestionnaireResponse``)."""

    resourceType: str


class SubmissionCreated(Closed):
    """201: the stored submission with its scores and bands."""

    submission_id: int
    form: str
    form_version: int
    content_hash: str
    answers: dict[str, Any]
    scores: dict[str, Any]
    bands: dict[str, Any]
    status: str


class SubmissionOut(Closed):
    """A stored submission; ``answers`` described for a reader in ``locale``."""

    id: int
    form: str
    form_version: int
    content_hash: str
    patient_id: str | None
    encounter_id: str | None
    channel: str
    entered_by: str | None
    status: str
    submitted_at: str
    scores: dict[str, Any]
    bands: dict[str, Any]
    answers: Any
    touchpoint: str | None = None
    proxy_relation: str | None = None
    answered_by: str | None = Field(default=None, description="who answered, in words: "
                                    "\"由 女儿 代答\" for a family member; None for the patient")


# --- rules and reports -------------------------------------------------------------------

class DryRunOut(Open):
    """Which rules of the set match the posted event, and what they would do (nothing stored)."""


class DashboardOut(Open):
    """A dashboard's tiles with their aggregated (scoped) data, as the dashboard page draws."""


class DrillOut(Open):
    """One level of a chart's drill-down, on the data the caller may see."""
