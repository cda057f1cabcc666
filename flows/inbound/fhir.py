"""FHIR R4 in: Patient, Encounter, Observation and QuestionnaireResponse resources — one at a time
or in a ``transaction`` Bundle — become the domain events the events API takes
(:func:`careloop.flows.ingest.ingest`: validated, stored before acknowledged, once per event id).

    Patient                      → patient.upserted
    Encounter  finished          → encounter.discharged   (period.end is the discharge)
               in-progress       → encounter.admitted
               cancelled, entered-in-error → encounter.admission_cancelled
    Observation 85354-9 (+ components 8480-6 / 8462-4) → reading.recorded blood_pressure
                15074-8 (mmol/L), 2339-0 (mg/dL, converted) → glucose; 29463-7 weight;
                8867-4 heart_rate; 59408-5 / 2708-6 spo2
                any other code (LOINC or local) → result.recorded, a laboratory result
                (:mod:`careloop.flows.inbound.fhir_results`)
    QuestionnaireResponse of a known form → a submission, scored like any other (through the
                forms engine's ``forms.submit_fhir_response`` service)

Every resource is first validated with ``fhir.resources`` (the R4B models: R4's structure for
these four resources). A problem is a :class:`Issue` naming the FHIRPath of the fault
(``Encounter.period.end``; in a Bundle ``Bundle.entry[1].resource.period.end`` as well), raised as
:class:`FhirRefused` with the HTTP status the FHIR http specification gives it.

Idempotency: the event id is ``fhir:<type>/<basis>#<content hash>``, the basis being the entry's
``ifNoneExist``, else the resource id, else the Bundle entry's ``fullUrl`` (hashed unless it is a
plain id: an ``ifNoneExist`` names the MRN); the hash covers the resource without ``meta`` and
``text``. The same resource sent again is processed once (the
original acknowledgement); a changed one (a Patient's new phone, an Encounter now finished) is a
new event that updates the record.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import hospital_tz
from careloop.engine.domain import Encounter, Patient
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.engine.services import SUBMIT_FHIR_RESPONSE, find_service
from careloop.flows.ingest import ingest

FHIR_VERSION = "4.0.1"
RESOURCE_TYPES = ("Patient", "Encounter", "Observation", "QuestionnaireResponse")
MRN_SYSTEM_ENV = "CARELOOP_FHIR_MRN_SYSTEM"
DEFAULT_MRN_SYSTEM = "urn:careloop:mrn"
LOINC = "http://loinc.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
PHONE = re.compile(r"^[0-9+ -]{5,32}$")


def mrn_system() -> str:
    """The identifier system of the hospital's MRN (``CARELOOP_FHIR_MRN_SYSTEM``)."""
    return os.environ.get(MRN_SYSTEM_ENV, "").strip() or DEFAULT_MRN_SYSTEM


# --- problems ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue: ``code`` from the FHIR issue-type value set."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: str = "error"


class FhirRefused(Exception):
    """A request refused as a whole: answered with ``status`` and an OperationOutcome."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.status, self.issues = status, issues


def outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource for ``issues``."""
    out: list[dict[str, Any]] = []
    for issue in issues:
        item: dict[str, Any] = {"severity": issue.severity, "code": issue.code,
                                "diagnostics": issue.diagnostics}
        if issue.expression:
            item["expression"] = [issue.expression]
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out}


def _fhirpath(root: str, loc: tuple[Any, ...]) -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)
            if name.endswith("__ext") or name.startswith("_"):
                name = name.removesuffix("__ext").lstrip("_")
            name = name.removesuffix("_fhir")  # fhir.resources' names for Python keywords
            out += f".{name}"
    return out


# --- validation with fhir.resources -------------------------------------------------------------


def model_class(resource_type: str) -> Any:
    """The ``fhir.resources`` R4B model of a resource type (raises KeyError if none)."""
    if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", resource_type):
        raise KeyError(resource_type)
    try:
        module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    except ImportError:
        raise KeyError(resource_type) from None
    return getattr(module, resource_type)


def validate(resource: Any, root: str, expected: str | None = None) -> Any:
    """Validate a resource with fhir.resources; raises :class:`FhirRefused` (400) naming every
    fault's FHIRPath under ``root`` (``Encounter`` or ``Bundle.entry[1].resource``)."""
    if not isinstance(resource, dict):
        raise FhirRefused(400, [Issue("structure", "a resource is a JSON object", root)])
    kind = resource.get("resourceType")
    if expected is not None and kind != expected:
        raise FhirRefused(400, [Issue("invalid", f"expected a {expected}, got {kind!r}",
                                      f"{root}.resourceType")])
    try:
        model = model_class(str(kind))
    except KeyError:
        raise FhirRefused(400, [Issue("not-supported", f"unknown resource type {kind!r}",
                                      f"{root}.resourceType")]) from None
    try:
        return model.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for error in exc.errors()[:50]:
            loc = tuple(p for p in error.get("loc", ()) if p != "__root__")
            issues.append(Issue("structure" if error.get("type") == "extra_forbidden"
                                else "invalid", str(error.get("msg", "invalid")),
                                _fhirpath(root, loc)))
        raise FhirRefused(400, issues) from None


# --- one resource → one event --------------------------------------------------------------------


@dataclass
class Context:
    """One request: who sent it, the references resolved so far (``fullUrl`` → ``Patient/P1``)."""

    source: str
    refs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A resource processed: its type and Careloop id, and whether it was new (201) or a
    re-send / update (200)."""

    resource_type: str
    id: str
    created: bool


def _key(kind: str, resource: Mapping[str, Any], basis: str | None) -> str:
    body = {k: v for k, v in resource.items() if k not in ("meta", "text")}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False)
                            .encode("utf-8")).hexdigest()[:20]
    basis = basis or "-"
    if basis != "-" and not FHIR_ID.fullmatch(basis):  # a search (MRN), a URL: never verbatim
        basis = "h" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:40]
    return f"fhir:{kind}/{basis}#{digest}"


def _instant(value: Any, path: str) -> str:
    """A FHIR dateTime as an aware ISO instant (validation already required the offset of one
    with a time; should none be there, it is the hospital's wall time); a date alone names no
    moment and is refused."""
    text = str(value)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T.+", text):
        raise FhirRefused(422, [Issue("value", f"{text!r} names a day, not a moment: give the "
                                               "time of day (2026-12-01T10:00:00+08:00)", path)])
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=hospital_tz())
    return parsed.isoformat()


def _reference(ctx: Context, ref: Any, kind: str, path: str) -> str:
    """The Careloop id a reference names: ``Patient/P1``, an absolute URL ending so, or a
    ``urn:uuid:`` of an entry earlier in the same Bundle."""
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str) or not text:
        raise FhirRefused(422, [Issue("required", f"a reference to the {kind} is needed", path)])
    resolved = ctx.refs.get(text, text)
    found = re.search(rf"(?:^|/){kind}/([A-Za-z0-9\-._]{{1,64}})(?:/_history/.*)?$", resolved)
    if found is None:
        raise FhirRefused(422, [Issue("not-found", f"{text!r} names no {kind} (a {kind}/id "
                                                   "reference or the fullUrl of an entry of "
                                                   "this Bundle)", f"{path}.reference")])
    return found.group(1)


def _code_of(value: Any, path: str, what: str) -> str:
    """A department or ward code from a reference (``Organization/cardiology``) or its
    identifier."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and "/" in ref:
            return ref.rstrip("/").rsplit("/", 1)[-1]
        ident = value.get("identifier")
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            return str(ident["value"])
    raise FhirRefused(422, [Issue("required", f"the {what} is needed (a reference whose id, or "
                                              "an identifier whose value, is its Careloop code)",
                                  path)])


def _patient(session: Session, ctx: Context, resource: dict[str, Any], root: str,
             given_id: str | None) -> tuple[str, dict[str, Any]]:
    idents = resource.get("identifier") or []
    system = mrn_system()

    def is_mr(ident: dict[str, Any]) -> bool:
        codings = (ident.get("type") or {}).get("coding") or []
        return any(c.get("code") == "MR" for c in codings)

    chosen = next((i for i in idents if i.get("system") == system and i.get("value")), None) \
        or next((i for i in idents if is_mr(i) and i.get("value")), None)
    if chosen is None and system == DEFAULT_MRN_SYSTEM:
        chosen = next((i for i in idents if i.get("value")), None)
    if chosen is None:
        raise FhirRefused(422, [Issue("required", f"the MRN is needed: an identifier with "
                                                  f"system {system} (or type MR)",
                                      f"{root}.identifier")])
    mrn = str(chosen["value"])
    name = _name(resource.get("name") or [], root)
    if given_id is None:
        given_id = session.scalars(select(Patient.id).where(Patient.mrn == mrn)).first() \
            or "fhir-" + secrets.token_hex(8)
    payload: dict[str, Any] = {"patient_id": given_id, "mrn": mrn, "name": name}
    if resource.get("gender"):
        payload["gender"] = resource["gender"]
    if resource.get("birthDate"):
        payload["birth_date"] = str(resource["birthDate"])
    phones = [(i, t) for i, t in enumerate(resource.get("telecom") or [])
              if t.get("system") == "phone" and t.get("value")]
    phones.sort(key=lambda it: 0 if it[1].get("use") == "mobile" else 1)
    if phones:
        index, telecom = phones[0]
        phone = str(telecom["value"]).strip()
        if not PHONE.fullmatch(phone):
            raise FhirRefused(422, [Issue("value", "a phone number has 5 to 32 digits, spaces, "
                                                   "'+' or '-'", f"{root}.telecom[{index}].value")])
        payload["phone"] = phone
    return given_id, payload


CJK = re.compile(r"[\u3400-\u9fff]")


def _name(names: list[dict[str, Any]], root: str) -> str:
    """The name a person reads: ``text`` (a Chinese name as written), else family and given."""
    ranked = sorted(names, key=lambda n: 0 if n.get("use") == "official" else 1)
    for item in ranked:
        if item.get("text"):
            return str(item["text"]).strip()[:128]
        family, given = str(item.get("family") or ""), " ".join(item.get("given") or [])
        if family or given:
            if CJK.search(family + given):
                return (family + given.replace(" ", ""))[:128]
            return " ".join(p for p in (given, family) if p)[:128]
    raise FhirRefused(422, [Issue("required", "the patient's name is needed (name.text, or "
                                              "family and given)", f"{root}.name")])


ENCOUNTER_CLASS = {"IMP": "inpatient", "ACUTE": "inpatient", "NONAC": "inpatient",
                   "AMB": "outpatient", "EMER": "emergency", "OBSENC": "inpatient"}


def _encounter(session: Session, ctx: Context, resource: dict[str, Any], root: str,
               given_id: str | None, basis: str | None) -> tuple[str, str, dict[str, Any]]:
    status = resource.get("status")
    patient_id = _reference(ctx, resource.get("subject"), "Patient", f"{root}.subject")
    encounter_id = given_id or _encounter_id(resource, basis)
    if status in ("cancelled", "entered-in-error"):
        return encounter_id, "encounter.admission_cancelled", {
            "encounter_id": encounter_id, "patient_id": patient_id,
            "reason": f"FHIR Encounter.status {status}"}
    if status not in ("finished", "in-progress"):
        raise FhirRefused(422, [Issue("not-supported", f"Encounter.status {status!r}: Careloop "
                                                       "takes in-progress (admitted), finished "
                                                       "(discharged), cancelled or "
                                                       "entered-in-error", f"{root}.status")])
    klass = (resource.get("class") or {}).get("code")
    if klass not in ENCOUNTER_CLASS:
        raise FhirRefused(422, [Issue("code-invalid", f"Encounter.class {klass!r}: one of "
                                                      "IMP, AMB, EMER (v3 ActCode)",
                                      f"{root}.class")])
    payload: dict[str, Any] = {
        "encounter_id": encounter_id, "patient_id": patient_id, "type": ENCOUNTER_CLASS[klass],
        "department_id": _code_of(resource.get("serviceProvider"), f"{root}.serviceProvider",
                                  "department")}
    locations = resource.get("location") or []
    if locations:
        payload["ward_id"] = _code_of(locations[0].get("location"),
                                      f"{root}.location[0].location", "ward")
    period = resource.get("period") or {}
    if period.get("start"):
        payload["admitted_at"] = _instant(period["start"], f"{root}.period.start")
    codes = [c["code"] for reason in resource.get("reasonCode") or []
             for c in reason.get("coding") or [] if c.get("code")]
    if codes:
        payload["diagnoses"] = codes
    if status == "in-progress":
        return encounter_id, "encounter.admitted", payload
    if not period.get("end"):
        raise FhirRefused(422, [Issue("required", "a finished encounter needs period.end, the "
                                                  "moment of discharge", f"{root}.period.end")])
    payload["discharged_at"] = _instant(period["end"], f"{root}.period.end")
    return encounter_id, "encounter.discharged", payload


def _encounter_id(resource: dict[str, Any], basis: str | None) -> str:
    for ident in resource.get("identifier") or []:
        value = ident.get("value")
        if isinstance(value, str) and FHIR_ID.fullmatch(value):
            return value
    return "fhir-" + hashlib.sha256((basis or json.dumps(resource, sort_keys=True))
                                    .encode("utf-8")).hexdigest()[:16]


# LOINC code → (reading type, value key, unit, factor to Careloop's unit)
OBSERVATION_CODES: dict[str, tuple[str, str, float]] = {
    "15074-8": ("glucose", "mmol/L", 1.0),
    "2339-0": ("glucose", "mmol/L", 1 / 18.0),   # mg/dL → mmol/L
    "29463-7": ("weight", "kg", 1.0),
    "8867-4": ("heart_rate", "/min", 1.0),
    "59408-5": ("spo2", "%", 1.0),
    "2708-6": ("spo2", "%", 1.0),
}
BP_PANEL, SYSTOLIC, DIASTOLIC = "85354-9", "8480-6", "8462-4"


def _loinc(concept: Any) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("system") == LOINC and coding.get("code"):
            return str(coding["code"])
    return None


def _quantity(holder: dict[str, Any], path: str) -> float:
    quantity = holder.get("valueQuantity")
    value = quantity.get("value") if isinstance(quantity, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FhirRefused(422, [Issue("required", "a numeric valueQuantity is needed",
                                      f"{path}.valueQuantity")])
    return float(value)


def _observation(ctx: Context, resource: dict[str, Any], root: str,
                 reading_id: str) -> tuple[str, dict[str, Any]]:
    """``("reading.recorded", …)`` for a reading's code, else ``("result.recorded", …)``."""
    status = resource.get("status")
    if status not in ("registered", "preliminary", "final", "amended", "corrected"):
        raise FhirRefused(422, [Issue("not-supported", f"Observation.status {status!r}: a "
                                                       "cancelled or erroneous result is not "
                                                       "recorded", f"{root}.status")])
    patient_id = _reference(ctx, resource.get("subject"), "Patient", f"{root}.subject")
    code = _loinc(resource.get("code"))
    effective = resource.get("effectiveDateTime") or resource.get("effectiveInstant") \
        or (resource.get("effectivePeriod") or {}).get("start") or resource.get("issued")
    if not effective:
        raise FhirRefused(422, [Issue("required", "the moment of measurement is needed",
                                      f"{root}.effectiveDateTime")])
    measured_at = _instant(effective, f"{root}.effectiveDateTime")
    value: dict[str, Any]
    if code == BP_PANEL:
        parts: dict[str, float] = {}
        for index, component in enumerate(resource.get("component") or []):
            part = {SYSTOLIC: "systolic", DIASTOLIC: "diastolic"}.get(
                _loinc(component.get("code")) or "")
            if part:
                parts[part] = _quantity(component, f"{root}.component[{index}]")
        missing = [n for n in ("systolic", "diastolic") if n not in parts]
        if missing:
            raise FhirRefused(422, [Issue("required", "a blood pressure needs its components "
                                                      "8480-6 (systolic) and 8462-4 (diastolic)",
                                          f"{root}.component")])
        kind, value = "blood_pressure", {k: _number(v) for k, v in parts.items()}
    elif code in OBSERVATION_CODES:
        kind, unit, factor = OBSERVATION_CODES[code]
        value = {"value": _number(_quantity(resource, root) * factor), "unit": unit}
    else:
        from careloop.flows.inbound.fhir_results import result_payload

        return "result.recorded", result_payload(resource, root, reading_id, patient_id,
                                                 measured_at)
    return "reading.recorded", {"reading_id": reading_id, "patient_id": patient_id,
                                "type": kind, "value": value, "measured_at": measured_at}


def _number(value: float) -> float | int:
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else rounded


# ingest's payload paths → the FHIRPath of the element they came from
PAYLOAD_PATHS: dict[str, dict[str, str]] = {
    "Patient": {"patient_id": "id", "mrn": "identifier", "name": "name", "phone": "telecom",
                "birth_date": "birthDate", "gender": "gender"},
    "Encounter": {"encounter_id": "id", "patient_id": "subject",
                  "department_id": "serviceProvider", "ward_id": "location[0].location",
                  "admitted_at": "period.start", "discharged_at": "period.end",
                  "type": "class", "diagnoses": "reasonCode"},
    "Observation": {"patient_id": "subject", "measured_at": "effectiveDateTime",
                    "observed_at": "effectiveDateTime", "value": "value", "type": "code",
                    "code": "code", "display": "code", "unit": "valueQuantity",
                    "reference_range": "referenceRange", "abnormal_flag": "interpretation",
                    "reading_id": "id", "result_id": "id"},
}


def _ingest_issues(kind: str, root: str, body: dict[str, Any]) -> list[Issue]:
    issues = []
    for error in body.get("errors") or []:
        path = str(error.get("path", "$"))
        found = re.match(r"^\$\.payload\.([a-z_]+)", path)
        sub = PAYLOAD_PATHS.get(kind, {}).get(found.group(1)) if found else None
        issues.append(Issue("processing", str(error.get("message")),
                            f"{root}.{sub}" if sub else root))
    return issues or [Issue("processing", str(body.get("message") or "refused"), root)]


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource to accept: where it sits (``root``), its method and the ids it came with."""

    resource: dict[str, Any]
    root: str
    method: str = "POST"        # POST | PUT
    url_id: str | None = None   # the id of PUT Patient/{id}
    if_none_exist: str | None = None
    full_url: str | None = None


def accept(session: Session, ctx: Context, entry: Entry) -> Accepted:
    """Validate one resource, map it and ingest its event in the caller's transaction; raises
    :class:`FhirRefused` naming the fault."""
    resource, root = entry.resource, entry.root
    validate(resource, root)
    kind = str(resource["resourceType"])
    if kind not in RESOURCE_TYPES:
        raise FhirRefused(422, [Issue("not-supported", f"Careloop takes {', '.join(RESOURCE_TYPES)}"
                                                       f", not {kind}", f"{root}.resourceType")])
    if entry.method == "PUT" and entry.url_id is not None and resource.get("id") not in (
            None, entry.url_id):
        raise FhirRefused(400, [Issue("invalid", f"the resource id {resource.get('id')!r} is not "
                                                 f"the id of the URL ({entry.url_id!r})",
                                      f"{root}.id")])
    given_id = entry.url_id if entry.method == "PUT" else None
    if given_id is None and isinstance(resource.get("id"), str) and entry.method == "PUT":
        given_id = resource["id"]
    basis = entry.if_none_exist or entry.url_id or resource.get("id") or entry.full_url
    event_id = _key(kind, resource, basis)
    if kind == "QuestionnaireResponse":
        return _response(session, ctx, entry, event_id)
    if kind == "Patient":
        if given_id is None and isinstance(resource.get("id"), str):
            given_id = _known_patient(session, resource["id"])
        target, payload = _patient(session, ctx, resource, root, given_id)
        event_type = "patient.upserted"
    elif kind == "Encounter":
        if given_id is None and isinstance(resource.get("id"), str):
            given_id = resource["id"]
        target, event_type, payload = _encounter(session, ctx, resource, root, given_id,
                                                 entry.full_url or basis)
    else:
        target = given_id or (resource["id"] if isinstance(resource.get("id"), str)
                              else "fhir-" + hashlib.sha256(event_id.encode()).hexdigest()[:16])
        event_type, payload = _observation(ctx, resource, root, target)
    model = {"Patient": Patient, "Encounter": Encounter}.get(kind)
    known = (session.get(model, target) is not None if model is not None
             else session.scalars(select(DomainEventRow.id).where(
                 DomainEventRow.event_id == event_id)).first() is not None)
    status, body = ingest(session, {"event_id": event_id, "type": event_type,
                                    "payload": payload}, source=ctx.source, park=False)
    if status == 409:
        raise FhirRefused(409, [Issue("conflict", i.diagnostics, i.expression)
                                for i in _ingest_issues(kind, root, body)])
    if status != 200:
        raise FhirRefused(422, _ingest_issues(kind, root, body))
    if entry.full_url:
        ctx.refs[entry.full_url] = f"{kind}/{target}"
    return Accepted(kind, target, not known)


def _known_patient(session: Session, resource_id: str) -> str | None:
    return resource_id if session.get(Patient, resource_id) is not None else None


def _response(session: Session, ctx: Context, entry: Entry, event_id: str) -> Accepted:
    """A QuestionnaireResponse: a submission through the forms engine's service."""
    resource, root = entry.resource, entry.root
    status = resource.get("status")
    if status not in ("completed", "amended"):
        raise FhirRefused(422, [Issue("not-supported", f"QuestionnaireResponse.status "
                                                       f"{status!r}: only completed answers are "
                                                       "recorded", f"{root}.status")])
    patient_id = _reference(ctx, resource.get("subject"), "Patient", f"{root}.subject")
    if session.get(Patient, patient_id) is None:
        raise FhirRefused(422, [Issue("not-found", f"unknown patient {patient_id!r}",
                                      f"{root}.subject")])
    encounter_id = None
    if resource.get("encounter"):
        encounter_id = _reference(ctx, resource["encounter"], "Encounter", f"{root}.encounter")
        found = session.get(Encounter, encounter_id)
        if found is None or found.patient_id != patient_id:
            raise FhirRefused(422, [Issue("not-found", f"no encounter {encounter_id!r} of this "
                                                       "patient", f"{root}.encounter")])
    service = find_service(loaded_registry(), SUBMIT_FHIR_RESPONSE)
    if service is None:
        raise FhirRefused(422, [Issue("not-supported", "the forms engine is not installed",
                                      f"{root}.questionnaire")])
    submission_id, created, problems = service(
        session, resource, patient_id=patient_id, encounter_id=encounter_id,
        event_id=event_id, source=ctx.source)
    if problems:
        raise FhirRefused(422, [Issue("processing" if p.get("at") != "questionnaire"
                                      else "not-found", p["message"],
                                      _response_path(root, p.get("at", "")))
                                for p in problems])
    if entry.full_url:
        ctx.refs[entry.full_url] = f"QuestionnaireResponse/{submission_id}"
    return Accepted("QuestionnaireResponse", str(submission_id), created)


def _response_path(root: str, at: str) -> str:
    if at == "questionnaire":
        return f"{root}.questionnaire"
    if at:
        return f"{root}.item.where(linkId='{at}')"
    return f"{root}.item"


# --- transaction Bundles -------------------------------------------------------------------------

ORDER = {"Patient": 0, "Encounter": 1, "Observation": 2, "QuestionnaireResponse": 3}


def entries(bundle: Any) -> list[tuple[int, Entry]]:
    """The entries of a transaction Bundle, in the order they can be applied (patients first,
    then encounters, observations, responses: references point backwards), each with its index.
    Raises :class:`FhirRefused` for what is not a transaction of POST/PUT entries."""
    validate(bundle, "Bundle", "Bundle")
    if bundle.get("type") != "transaction":
        raise FhirRefused(422, [Issue("not-supported", f"Bundle.type {bundle.get('type')!r}: "
                                                       "Careloop takes transaction Bundles",
                                      "Bundle.type")])
    found: list[tuple[int, Entry]] = []
    for index, item in enumerate(bundle.get("entry") or []):
        root = f"Bundle.entry[{index}]"
        request, resource = item.get("request") or {}, item.get("resource")
        method, url = request.get("method"), str(request.get("url") or "")
        if method not in ("POST", "PUT") or not isinstance(resource, dict):
            raise FhirRefused(422, [Issue("not-supported", f"{method!r}: a transaction entry "
                                                           "here is a POST or PUT of a resource",
                                          f"{root}.request.method")])
        url_id = None
        if method == "PUT":
            matched = re.fullmatch(r"([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})", url)
            if matched is None or matched.group(1) != resource.get("resourceType"):
                raise FhirRefused(400, [Issue("invalid", "a PUT names [type]/[id] of its "
                                                         "resource", f"{root}.request.url")])
            url_id = matched.group(2)
        found.append((index, Entry(resource=resource, root=f"{root}.resource", method=method,
                                   url_id=url_id, if_none_exist=request.get("ifNoneExist"),
                                   full_url=item.get("fullUrl"))))
    found.sort(key=lambda it: (ORDER.get(str(it[1].resource.get("resourceType")), 9), it[0]))
    return found


def transaction(session: Session, ctx: Context, bundle: Any) -> dict[str, Any]:
    """Apply a transaction Bundle in the caller's transaction (all or nothing: any
    :class:`FhirRefused` aborts it) and answer the ``transaction-response`` Bundle."""
    results: dict[int, Accepted] = {}
    for index, entry in entries(bundle):
        results[index] = accept(session, ctx, entry)
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": "201 Created" if r.created else "200 OK",
                      "location": f"{r.resource_type}/{r.id}"}}
        for _, r in sorted(results.items())]}
