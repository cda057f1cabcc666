"""Typed services between engines: one Protocol per service name, and typed accessors.

Engines call each other through ``registry.catalogue("service")`` by name, so that the engine
kernel names no upper package. The catalogue itself holds ``Any``; this module gives every
service a :class:`ServiceKey` carrying its call signature, so a caller gets a typed function::

    enqueue = service(loaded_registry(), OUTBOX_ENQUEUE)   # an EnqueueFn
    message_id = enqueue(session, template_key=..., ...)   # checked by mypy

and an engine registers its implementation with :func:`register_service`, which mypy checks
against the same Protocol. A missing service is a clear :class:`ServiceMissing` (naming the
service and the engine that provides it), never a silent no-op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from careloop.engine.errors import CareloopError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from careloop.engine.registry import Registry

FnT = TypeVar("FnT")


class FieldKeysFn(Protocol):
    """``forms.field_keys``: every answerable key of a form body (repeat sub-fields as
    ``group.sub``)."""

    def __call__(self, body: Mapping[str, Any], /) -> frozenset[str]: ...


class CreateRequestFn(Protocol):
    """``forms.create_request``: a form request and its link token for a patient."""

    def __call__(self, session: Session, *, form_key: str, patient_id: str,
                 encounter_id: str | None = None, channel: str, expires_at: datetime,
                 source_ref: str | None = None) -> dict[str, Any]: ...


class SetStatusFn(Protocol):
    """``submission.set_status``: change a submission's status, audited."""

    def __call__(self, session: Session, submission_id: int, status: str, /, *,
                 actor: str) -> None: ...


class SubmitFhirResponseFn(Protocol):
    """``forms.submit_fhir_response``: a FHIR QuestionnaireResponse for a Careloop form as a
    scored submission: ``(submission id, created, problems)``, nothing written on problems."""

    def __call__(self, session: Session, response: Mapping[str, Any], *, patient_id: str,
                 encounter_id: str | None, event_id: str,
                 source: str) -> tuple[int, bool, list[dict[str, str]]]: ...


class EnqueueFn(Protocol):
    """``outbox.enqueue``: write one outgoing message; the same idempotency key returns the
    first message's id."""

    def __call__(self, session: Session, *, template_key: str, channel: str,
                 patient_id: str | None = None, user_id: int | None = None,
                 values: dict[str, Any], locale: str | None = None, urgent: bool = False,
                 idempotency_key: str, source_ref: str | None = None,
                 valid_for: timedelta | None = None,
                 link_expires_at: datetime | None = None) -> int: ...


class NotifyResultsFn(Protocol):
    """``results.notify``: send the patient a notice linking to these laboratory results (the
    ids of their ``result.recorded`` events); the same idempotency key returns the first
    message's id."""

    def __call__(self, session: Session, patient_id: str, result_ids: list[str], actor: str,
                 *, channel: str | None = None, idempotency_key: str | None = None) -> int: ...


class SendEducationFn(Protocol):
    """``education.send``: send the patient the education items fitting the encounter's
    diagnoses, department and ``stage``; returns the outbox message ids (the same idempotency
    key sends nothing more)."""

    def __call__(self, session: Session, *, patient_id: str, encounter_id: str | None,
                 stage: str, idempotency_key: str, articles: Sequence[str] = (),
                 channel: str | None = None, template: str = ..., limit: int = 1,
                 source_ref: str | None = None) -> list[int]: ...


class StartFlowFn(Protocol):
    """``flows.start``: start the current version of a flow; the same key returns the run id."""

    def __call__(self, session: Session, *, flow_key: str, patient_id: str | None = None,
                 encounter_id: str | None = None, context: dict[str, Any] | None = None,
                 idempotency_key: str, once_key: str | None = None) -> int: ...


class AddWorkingDaysFn(Protocol):
    """``calendar.add_working_days``: a moment ``days`` working days later, by the hospital
    calendar (weekends and holidays skipped)."""

    def __call__(self, session: Session | None, start: datetime, days: int,
                 calendar_key: str | None = None, /) -> datetime: ...


class RunAlertsFn(Protocol):
    """``reports.run_alerts``: evaluate every stored alert definition (the scheduled sweep)."""

    def __call__(self, session: Session, now: datetime | None = None, /) -> Sequence[object]: ...


@dataclass(frozen=True, slots=True)
class ServiceKey(Generic[FnT]):
    """A service's catalogue name, typed by its call signature; ``provider``: the engine that
    registers it (named in the error when it is missing)."""

    name: str
    provider: str


FIELD_KEYS: ServiceKey[FieldKeysFn] = ServiceKey("forms.field_keys", "forms")
CREATE_REQUEST: ServiceKey[CreateRequestFn] = ServiceKey("forms.create_request", "forms")
SET_SUBMISSION_STATUS: ServiceKey[SetStatusFn] = ServiceKey("submission.set_status",
                                                            "forms")
SUBMIT_FHIR_RESPONSE: ServiceKey[SubmitFhirResponseFn] = ServiceKey(
    "forms.submit_fhir_response", "forms")
OUTBOX_ENQUEUE: ServiceKey[EnqueueFn] = ServiceKey("outbox.enqueue", "flows")
FLOWS_START: ServiceKey[StartFlowFn] = ServiceKey("flows.start", "flows")
ADD_WORKING_DAYS: ServiceKey[AddWorkingDaysFn] = ServiceKey("calendar.add_working_days",
                                                            "flows")
RUN_ALERTS: ServiceKey[RunAlertsFn] = ServiceKey("reports.run_alerts", "reports")
NOTIFY_RESULTS: ServiceKey[NotifyResultsFn] = ServiceKey("results.notify", "flows")
SEND_EDUCATION: ServiceKey[SendEducationFn] = ServiceKey("education.send", "flows")

KNOWN: tuple[ServiceKey[Any], ...] = (FIELD_KEYS, CREATE_REQUEST, SET_SUBMISSION_STATUS,
                                      SUBMIT_FHIR_RESPONSE, OUTBOX_ENQUEUE, FLOWS_START,
                                      ADD_WORKING_DAYS, RUN_ALERTS, NOTIFY_RESULTS,
                                      SEND_EDUCATION)


class ServiceMissing(CareloopError):
    """A service was called that no loaded engine registered."""


def find_service(registry: Registry, key: ServiceKey[FnT]) -> FnT | None:
    """The registered service, or ``None`` when its engine is not installed (for callers that
    work without it, e.g. a field check skipped when the forms engine is absent)."""
    found = registry.catalogue("service").get(key.name)
    return cast("FnT | None", found)


def service(registry: Registry, key: ServiceKey[FnT]) -> FnT:
    """The registered service; raises :class:`ServiceMissing` naming it and its engine."""
    found = find_service(registry, key)
    if found is None:
        raise ServiceMissing(f"service '{key.name}' is not registered (is the {key.provider} "
                             "engine installed?)")
    return found


def register_service(registry: Registry, key: ServiceKey[FnT], fn: FnT) -> None:
    """Register an engine's implementation (mypy checks ``fn`` against the key's Protocol)."""
    registry.catalogue("service").register(key.name, fn)
