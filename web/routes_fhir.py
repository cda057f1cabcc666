"""FHIR R4 REST under ``/fhir/r4`` (``application/fhir+json``) for regional platforms and HIS.

Write: ``POST /fhir/r4/{Patient|Encounter|Observation|QuestionnaireResponse}``, ``PUT …/{id}``
and ``POST /fhir/r4`` with a ``transaction`` Bundle (all or nothing), mapped to domain events by
:mod:`careloop.flows.inbound.fhir`. Read: ``GET Patient/{id}``, ``Patient?identifier=``,
``Encounter?patient=``, ``Observation?patient=&code=``, ``QuestionnaireResponse?patient=``
(``searchset`` Bundles, :mod:`careloop.web.fhir_out`) and ``GET /fhir/r4/metadata``.

An API key (``Authorization: Bearer <key>`` or ``X-API-Key``) with ``fhir:write`` to send or
``fhir:read`` to read; every call is audited (``api.fhir_*``), each patient read as
``patient.view`` with the patient's id. Errors are OperationOutcomes whose ``expression`` names
the FHIRPath of the fault.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from careloop.engine import audit, logs
from careloop.engine.db import transaction
from careloop.engine.domain import Encounter, Patient
from careloop.flows.inbound import fhir
from careloop.flows.inbound.fhir import FhirRefused, Issue, outcome
from careloop.web import fhir_out
from careloop.web.auth import ApiCaller, ApiKeyRefused, api_key_caller, audit_refusal
from careloop.web.deps import client_ip, request_body, request_id

router = APIRouter(prefix="/fhir/r4", tags=["fhir"])
MEDIA = "application/fhir+json"
TYPES = fhir.RESOURCE_TYPES
SEARCH_PARAMS = {"Patient": ("identifier", "_id"), "Encounter": ("patient",),
                 "Observation": ("patient", "code"), "QuestionnaireResponse": ("patient",)}
IGNORED_PARAMS = ("_format", "_count", "_pretty")


def _answer(body: dict[str, Any], status: int = 200,
            headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


def _refused(status: int, code: str, message: str, expression: str | None = None
             ) -> JSONResponse:
    return _answer(outcome([Issue(code, message, expression)]), status)


class _Denied(Exception):
    def __init__(self, response: JSONResponse) -> None:
        super().__init__("denied")
        self.response = response


def _key_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-api-key")


def _caller(request: Request, scope: str, action: str, object_id: str | None = None
            ) -> ApiCaller:
    ip, rid = client_ip(request), request_id(request)
    try:
        with transaction() as session:
            return api_key_caller(session, _key_of(request), scope, action=action, ip=ip,
                                  request_id=rid, object_id=object_id)
    except ApiKeyRefused as exc:
        with transaction() as session:
            audit_refusal(session, exc, action=action, ip=ip, request_id=rid,
                          object_id=object_id)
        code = "login" if exc.status == 401 else "forbidden"
        raise _Denied(_refused(exc.status, code, str(exc))) from None


def _parse(request: Request, raw: bytes, root: str) -> Any:
    ctype = request.headers.get("content-type", "").lower()
    if "json" not in ctype:
        raise FhirRefused(415, [Issue("not-supported", "send application/fhir+json "
                                                       f"(got {ctype or 'no content type'!r})")])
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FhirRefused(400, [Issue("structure", f"not JSON: {exc}", root)]) from None


def _write(request: Request, raw: bytes, root: str, action: str,
           work: Any) -> JSONResponse:
    """Authenticate, parse and apply ``work(session, ctx, body)`` in one transaction (retried
    once when a concurrent request stored the same thing first)."""
    try:
        caller = _caller(request, "fhir:write", action)
    except _Denied as denied:
        return denied.response
    try:
        body = _parse(request, raw, root)
        for attempt in (1, 2):
            try:
                with transaction() as session:
                    ctx = fhir.Context(source=f"fhir:{caller.name}"[:64])
                    result: JSONResponse = work(session, ctx, body)
                    return result
            except IntegrityError:
                if attempt == 2:
                    return _refused(409, "conflict", "conflicts with data already stored (a "
                                                     "unique value belongs to another record)",
                                    root)
    except FhirRefused as exc:
        return _answer(outcome(exc.issues), exc.status)
    raise AssertionError("unreachable")


# --- write ---------------------------------------------------------------------------------------


@router.post("", response_model=None)
def post_bundle(request: Request, raw: bytes = Depends(request_body)) -> JSONResponse:
    """A transaction Bundle: every entry applied, or none."""
    def work(session: Any, ctx: fhir.Context, body: Any) -> JSONResponse:
        return _answer(fhir.transaction(session, ctx, body))
    return _write(request, raw, "Bundle", "api.fhir_transaction", work)


def _created(session: Any, accepted: fhir.Accepted) -> JSONResponse:
    location = f"{accepted.resource_type}/{fhir_out.fhir_id(accepted.id)}"
    resource = _read_one(session, accepted.resource_type, accepted.id)
    return _answer(resource or outcome([Issue("informational", "accepted", None,
                                              "information")]),
                   201 if accepted.created else 200, {"Location": f"/fhir/r4/{location}"})


@router.post("/{resource_type}", response_model=None)
def create(request: Request, resource_type: str,
           raw: bytes = Depends(request_body)) -> JSONResponse:
    if resource_type not in TYPES:
        return _unknown_type(resource_type)
    if_none_exist = request.headers.get("if-none-exist")

    def work(session: Any, ctx: fhir.Context, body: Any) -> JSONResponse:
        fhir.validate(body, resource_type, resource_type)
        entry = fhir.Entry(resource=body, root=resource_type, method="POST",
                           if_none_exist=if_none_exist)
        return _created(session, fhir.accept(session, ctx, entry))
    return _write(request, raw, resource_type, "api.fhir_create", work)


@router.put("/{resource_type}/{resource_id}", response_model=None)
def update(request: Request, resource_type: str, resource_id: str,
           raw: bytes = Depends(request_body)) -> JSONResponse:
    if resource_type not in TYPES:
        return _unknown_type(resource_type)
    if not fhir.FHIR_ID.fullmatch(resource_id):
        return _refused(400, "invalid", "an id is 1 to 64 letters, digits, '-' or '.'")

    def work(session: Any, ctx: fhir.Context, body: Any) -> JSONResponse:
        fhir.validate(body, resource_type, resource_type)
        entry = fhir.Entry(resource=body, root=resource_type, method="PUT", url_id=resource_id)
        return _created(session, fhir.accept(session, ctx, entry))
    return _write(request, raw, resource_type, "api.fhir_update", work)


def _unknown_type(resource_type: str) -> JSONResponse:
    return _refused(404, "not-supported", f"Careloop serves {', '.join(TYPES)}, not "
                                          f"{resource_type[:64]!r}")


# --- read and search -----------------------------------------------------------------------------


@router.get("/metadata", response_model=None)
def metadata(request: Request) -> JSONResponse:
    """The CapabilityStatement (no key needed: it says nothing about patients)."""
    return _answer(fhir_out.capability_statement(str(request.base_url).rstrip("/") + "/fhir/r4"))


def _audit_view(session: Any, request: Request, caller: ApiCaller, patient_id: str,
                what: str) -> None:
    audit.append(session, actor=caller.actor, action="patient.view", object_type=what,
                 object_id=patient_id, patient_id=patient_id, ip=client_ip(request),
                 request_id=request_id(request), details={"via": "fhir"})


def _read_one(session: Any, resource_type: str, careloop_id: str) -> dict[str, Any] | None:
    found = _find(session, resource_type, fhir_out.fhir_id(careloop_id))
    return found[1] if found else None


def _find(session: Any, resource_type: str, fid: str) -> tuple[str, dict[str, Any]] | None:
    """``(patient id, resource)`` for a FHIR id, or None."""
    if resource_type == "Patient":
        patient = _patient_of(session, fid)
        return (patient.id, fhir_out.patient_resource(patient)) if patient else None
    if resource_type == "Encounter":
        encounter = next((e for e in (session.get(Encounter, c)
                                      for c in fhir_out.careloop_ids(fid)) if e), None)
        return (encounter.patient_id, fhir_out.encounter_resource(session, encounter)) \
            if encounter else None
    if resource_type == "Observation":
        return fhir_out.observation_by_id(session, fid)
    return fhir_out.response_by_id(session, fid)


def _patient_of(session: Any, fid: str) -> Patient | None:
    for candidate in fhir_out.careloop_ids(fid):
        found = session.get(Patient, candidate)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


@router.get("/{resource_type}/{resource_id}", response_model=None)
def read(request: Request, resource_type: str, resource_id: str) -> JSONResponse:
    if resource_type not in TYPES:
        return _unknown_type(resource_type)
    try:
        caller = _caller(request, "fhir:read", "api.fhir_read", resource_type)
    except _Denied as denied:
        return denied.response
    with transaction() as session:
        found = _find(session, resource_type, resource_id[:64])
        if found is None:
            return _refused(404, "not-found", f"no {resource_type} {resource_id[:64]!r}")
        _audit_view(session, request, caller, found[0], resource_type)
        return _answer(found[1])


def _token(value: str) -> tuple[str | None, str]:
    system, sep, code = value.partition("|")
    return (system or None, code) if sep else (None, value)


@router.get("/{resource_type}", response_model=None)
def search(request: Request, resource_type: str) -> JSONResponse:
    if resource_type not in TYPES:
        return _unknown_type(resource_type)
    params = request.query_params
    for name in params:
        if name not in SEARCH_PARAMS[resource_type] and name not in IGNORED_PARAMS:
            return _refused(400, "not-supported", f"{resource_type} is searched by "
                                                  f"{', '.join(SEARCH_PARAMS[resource_type])}; "
                                                  f"not by {name[:64]!r}")
    key = "identifier" if resource_type == "Patient" else "patient"
    if resource_type == "Patient" and "_id" in params:
        key = "_id"
    if not params.get(key):
        return _refused(400, "required", f"{resource_type} searches need the parameter {key}")
    try:
        caller = _caller(request, "fhir:read", "api.fhir_search", resource_type)
    except _Denied as denied:
        return denied.response
    base = str(request.base_url).rstrip("/") + "/fhir/r4"
    with transaction() as session:
        if resource_type == "Patient":
            if key == "_id":
                found = _patient_of(session, params["_id"])
                patients = [found] if found else []
            else:
                system, value = _token(params["identifier"])
                logs.hide(value)  # an MRN in the query string: redacted from the access log
                patients = [] if system not in (None, fhir.mrn_system()) else list(
                    session.scalars(select(Patient).where(Patient.mrn == value)).all())
            resources = [fhir_out.patient_resource(p) for p in patients]
            for p in patients:
                _audit_view(session, request, caller, p.id, "Patient")
        else:
            ref = params["patient"]
            fid = ref.rsplit("/", 1)[-1] if re.fullmatch(r"(?:.*/)?Patient/[^/]+", ref) else ref
            patient = _patient_of(session, fid)
            resources = [] if patient is None else _rows(session, resource_type, patient.id,
                                                         params.get("code"))
            if patient is not None:
                _audit_view(session, request, caller, patient.id, resource_type)
    return _answer({
        "resourceType": "Bundle", "type": "searchset", "total": len(resources),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in resources]})


def _rows(session: Any, resource_type: str, patient_id: str,
          code: str | None) -> list[dict[str, Any]]:
    if resource_type == "Encounter":
        return fhir_out.patient_encounters(session, patient_id)
    if resource_type == "QuestionnaireResponse":
        return fhir_out.patient_responses(session, patient_id)
    types: list[str] | None = None
    codes: list[str] | None = None
    if code:  # a reading's LOINC code names its type; any other code a laboratory result's
        types, codes = [], []
        for token in code.split(","):
            system, value = _token(token)
            kind = fhir_out.reading_type_of(value) if system in (None, fhir.LOINC) else None
            if kind is not None:
                types.append(kind)
            else:
                codes.append(value)
    return fhir_out.patient_observations(session, patient_id, types, codes)
