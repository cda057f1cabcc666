"""Careloop's records as FHIR R4 resources, for systems that pull (``/fhir/r4``, read and search).

Patient and Encounter from the domain tables, Observation from ``reading.recorded`` events (the
HIS's and the patients' own) and ``result.recorded`` events (laboratory results from the LIS,
category ``laboratory``), QuestionnaireResponse from submissions (the forms engine's
:func:`careloop.forms.fhir.export_response`). Each function reads one patient's rows: the caller
has the key's scope and audits the read. Departments and wards are named by identifier
(``urn:careloop:department``, the code an inbound Encounter uses) with their Chinese name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.models import DomainEventRow
from careloop.flows.inbound.fhir import (
    BP_PANEL,
    DIASTOLIC,
    LOINC,
    OBSERVATION_CODES,
    SYSTOLIC,
    V2_0203,
    mrn_system,
)

LIMIT = 100
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
DEPARTMENT_SYSTEM = "urn:careloop:department"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"
# a laboratory's own code (not LOINC), as its results carry it
LOCAL_CODES = "urn:careloop:lis-local-code"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# the abnormal flags (HL7 v2 table 0078) that are also ObservationInterpretation codes
INTERPRETATIONS = ("H", "L", "HH", "LL", "A", "AA", "N", ">", "<", "POS", "NEG")
OBSERVATION_STATUSES = ("registered", "preliminary", "final", "amended", "corrected",
                        "cancelled", "entered-in-error")
CLASS = {"inpatient": ("IMP", "inpatient encounter"), "outpatient": ("AMB", "ambulatory"),
         "emergency": ("EMER", "emergency")}
STATUS = {"admitted": "in-progress", "discharged": "finished", "cancelled": "cancelled"}
# reading type → (LOINC code, display, UCUM code)
READING_CODES = {"glucose": ("15074-8", "Glucose [Moles/volume] in Blood", "mmol/L"),
                 "weight": ("29463-7", "Body weight", "kg"),
                 "heart_rate": ("8867-4", "Heart rate", "/min"),
                 "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry",
                          "%")}
VITAL = {"blood_pressure", "weight", "heart_rate", "spo2"}


def fhir_id(careloop_id: str) -> str:
    """A Careloop id as a FHIR id (``[A-Za-z0-9-.]``): ``_`` is written ``..``."""
    return careloop_id if FHIR_ID.fullmatch(careloop_id) else careloop_id.replace("_", "..")


def careloop_ids(fid: str) -> list[str]:
    """The Careloop ids a FHIR id can stand for (as is, and with ``..`` read back as ``_``)."""
    return list(dict.fromkeys([fid, fid.replace("..", "_")]))


def instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def patient_resource(patient: Patient) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Patient", "id": fhir_id(patient.id),
        "identifier": [{"use": "usual", "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                        "system": mrn_system(), "value": patient.mrn}],
        "name": [{"use": "official", "text": patient.name}]}
    if patient.phone:
        out["telecom"] = [{"system": "phone", "value": patient.phone, "use": "mobile"}]
    if patient.gender:
        out["gender"] = patient.gender
    if patient.birth_date:
        out["birthDate"] = patient.birth_date.isoformat()
    return out


def _department(session: Session, code: str) -> dict[str, Any]:
    found = session.get(Department, code)
    ref: dict[str, Any] = {"identifier": {"system": DEPARTMENT_SYSTEM, "value": code}}
    if found is not None and isinstance(found.name, dict):
        ref["display"] = found.name.get("zh-CN") or found.name.get("en") or code
    return ref


def encounter_resource(session: Session, encounter: Encounter) -> dict[str, Any]:
    code, display = CLASS.get(encounter.type, ("IMP", "inpatient encounter"))
    out: dict[str, Any] = {
        "resourceType": "Encounter", "id": fhir_id(encounter.id),
        "status": STATUS.get(encounter.status, "unknown"),
        "class": {"system": ACT_CODE, "code": code, "display": display},
        "subject": {"reference": f"Patient/{fhir_id(encounter.patient_id)}"},
        "serviceProvider": _department(session, encounter.department_id)}
    period = {k: v for k, v in (("start", instant(encounter.admitted_at)),
                                ("end", instant(encounter.discharged_at))) if v}
    if period:
        out["period"] = period
    if encounter.ward_id:
        out["location"] = [{"location": _department(session, encounter.ward_id)}]
    codes = (encounter.diagnoses or {}).get("codes") or []
    if codes:
        out["reasonCode"] = [{"coding": [{"system": ICD10, "code": str(c)}]} for c in codes]
    return out


def patient_encounters(session: Session, patient_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(select(Encounter).where(Encounter.patient_id == patient_id)
                           .order_by(Encounter.created_at.desc(), Encounter.id).limit(LIMIT))
    return [encounter_resource(session, e) for e in rows]


def _quantity(value: Any, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def observation_resource(row: DomainEventRow) -> dict[str, Any] | None:
    """A ``reading.recorded`` event as an Observation (None for a reading without a value)."""
    payload = row.payload or {}
    kind, value = payload.get("type"), payload.get("value") or {}
    reading_id = str(payload.get("reading_id") or "")
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": reading_id if FHIR_ID.fullmatch(reading_id) else f"reading-{row.id}",
        "status": "final",
        "subject": {"reference": f"Patient/{fhir_id(str(payload.get('patient_id')))}"},
        "effectiveDateTime": payload.get("measured_at") or instant(row.occurred_at)}
    if kind in VITAL:
        out["category"] = [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}]
    if kind == "blood_pressure":
        if not all(isinstance(value.get(k), int | float) for k in ("systolic", "diastolic")):
            return None
        out["code"] = {"coding": [{"system": LOINC, "code": BP_PANEL,
                                   "display": "Blood pressure panel"}]}
        out["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": code, "display": name}]},
             "valueQuantity": _quantity(value[key], "mm[Hg]")}
            for code, name, key in ((SYSTOLIC, "Systolic blood pressure", "systolic"),
                                    (DIASTOLIC, "Diastolic blood pressure", "diastolic"))]
        return out
    if kind not in READING_CODES or not isinstance(value.get("value"), int | float):
        return None
    code, display, unit = READING_CODES[str(kind)]
    out["code"] = {"coding": [{"system": LOINC, "code": code, "display": display}]}
    out["valueQuantity"] = _quantity(value["value"], unit)
    return out


def reading_type_of(code: str) -> str | None:
    """The reading type a LOINC code searches (``85354-9`` → ``blood_pressure``)."""
    if code == BP_PANEL:
        return "blood_pressure"
    found = OBSERVATION_CODES.get(code)
    return found[0] if found else None


def result_resource(row: DomainEventRow) -> dict[str, Any] | None:
    """A ``result.recorded`` event (a laboratory result from the LIS) as an Observation of
    category ``laboratory`` (None for a result without a code)."""
    p = row.payload or {}
    code = str(p.get("code") or "")
    if not code:
        return None
    coding: dict[str, Any] = {"system": LOINC if p.get("system") == "loinc" else LOCAL_CODES,
                              "code": code}
    if p.get("display"):
        coding["display"] = str(p["display"])
    status = str(p.get("status") or "final")
    out: dict[str, Any] = {
        "resourceType": "Observation", "id": f"result-{row.id}",
        "status": status if status in OBSERVATION_STATUSES else "unknown",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{fhir_id(str(p.get('patient_id')))}"},
        "effectiveDateTime": p.get("observed_at") or instant(row.occurred_at)}
    value = p.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        quantity: dict[str, Any] = {"value": value}
        if p.get("unit"):
            quantity.update(_quantity(value, str(p["unit"])))
        if p.get("comparator") in ("<", "<=", ">=", ">"):
            quantity["comparator"] = p["comparator"]
        out["valueQuantity"] = quantity
    elif value not in (None, ""):
        out["valueString"] = str(value)
    if p.get("reference_range"):
        out["referenceRange"] = [{"text": str(p["reference_range"])}]
    if p.get("abnormal_flag") in INTERPRETATIONS:
        out["interpretation"] = [{"coding": [{"system": INTERPRETATION,
                                              "code": p["abnormal_flag"]}]}]
    return out


def patient_observations(session: Session, patient_id: str, types: list[str] | None = None,
                         codes: list[str] | None = None) -> list[dict[str, Any]]:
    """The patient's readings and laboratory results as Observations, newest first; with a
    code search, the readings of ``types`` and the results of ``codes``."""
    wanted = [t for t, chosen in (("reading.recorded", types), ("result.recorded", codes))
              if chosen is None or chosen]
    if not wanted:
        return []
    query = select(DomainEventRow).where(
        DomainEventRow.type.in_(wanted),
        DomainEventRow.payload["patient_id"].as_string() == patient_id)
    if types is not None or codes is not None:
        query = query.where(or_(
            and_(DomainEventRow.type == "reading.recorded",
                 DomainEventRow.payload["type"].as_string().in_(types or [])),
            and_(DomainEventRow.type == "result.recorded",
                 DomainEventRow.payload["code"].as_string().in_(codes or []))))
    rows = session.scalars(query.order_by(DomainEventRow.occurred_at.desc(),
                                          DomainEventRow.id.desc()).limit(LIMIT)).all()
    return [r for r in (_observation(row) for row in rows) if r is not None]


def _observation(row: DomainEventRow) -> dict[str, Any] | None:
    return result_resource(row) if row.type == "result.recorded" else observation_resource(row)


def observation_by_id(session: Session, fid: str) -> tuple[str, dict[str, Any]] | None:
    """``(patient id, Observation)`` of a reading or a laboratory result by its FHIR id."""
    result = re.fullmatch(r"result-(\d{1,18})", fid)
    if result:
        row = session.scalars(select(DomainEventRow).where(
            DomainEventRow.type == "result.recorded",
            DomainEventRow.id == int(result.group(1)))).first()
        resource = result_resource(row) if row is not None else None
        if row is None or resource is None:
            return None
        return str((row.payload or {}).get("patient_id")), resource
    found = re.fullmatch(r"reading-(\d{1,18})", fid)
    query = select(DomainEventRow).where(DomainEventRow.type == "reading.recorded")
    query = query.where(DomainEventRow.id == int(found.group(1))) if found else query.where(
        DomainEventRow.payload["reading_id"].as_string() == fid)
    row = session.scalars(query.order_by(DomainEventRow.id.desc()).limit(1)).first()
    resource = observation_resource(row) if row is not None else None
    if row is None or resource is None or resource["id"] != fid:
        return None
    return str((row.payload or {}).get("patient_id")), resource


def response_by_id(session: Session, fid: str) -> tuple[str, dict[str, Any]] | None:
    """``(patient id, QuestionnaireResponse)`` of a submission by its id, or None."""
    from careloop.forms.models import Submission

    if not fid.isdigit() or len(fid) > 18:
        return None
    submission = session.get(Submission, int(fid))
    if submission is None or submission.patient_id is None:  # anonymous: no patient's record
        return None
    return submission.patient_id, _responses(session, [submission])[0]


def patient_responses(session: Session, patient_id: str) -> list[dict[str, Any]]:
    """The patient's submissions as QuestionnaireResponses (newest first)."""
    from careloop.forms.models import Submission

    rows = session.scalars(select(Submission).where(Submission.patient_id == patient_id)
                           .order_by(Submission.submitted_at.desc(), Submission.id.desc())
                           .limit(LIMIT)).all()
    return _responses(session, list(rows))


def _responses(session: Session, rows: list[Any]) -> list[dict[str, Any]]:
    from careloop.engine import store
    from careloop.forms.fhir import export_response
    from careloop.forms.spec import FormSpec

    out = []
    for submission in rows:
        patient_id = submission.patient_id
        spec = store.compile_row(store.get_version(session, "form", submission.form_key,
                                                   submission.form_version), FormSpec)
        resource = export_response(spec, submission.answers or {},
                                   patient_id=fhir_id(patient_id),
                                   authored=instant(submission.submitted_at) or "",
                                   scores=submission.scores)
        resource["id"] = str(submission.id)
        resource["questionnaire"] = (f"Questionnaire/{submission.form_key}"
                                     f"|{submission.form_version}")
        if submission.encounter_id:
            resource["encounter"] = {"reference": f"Encounter/{fhir_id(submission.encounter_id)}"}
        out.append(resource)
    return out


def capability_statement(base: str) -> dict[str, Any]:
    """What this server does (``GET /fhir/r4/metadata``)."""
    from careloop.flows.inbound.fhir import FHIR_VERSION

    def resource(kind: str, params: list[tuple[str, str]], write: bool = True,
                 read: bool = True) -> dict[str, Any]:
        interactions = [*(["create", "update"] if write else []),
                        *(["read"] if read else []), "search-type"]
        return {"type": kind, "interaction": [{"code": c} for c in interactions],
                "searchParam": [{"name": n, "type": t} for n, t in params]}

    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": "2026-12-01",
        "kind": "instance", "fhirVersion": FHIR_VERSION, "format": ["application/fhir+json"],
        "software": {"name": "Careloop"},
        "implementation": {"description": "Careloop FHIR R4 endpoint", "url": base},
        "rest": [{"mode": "server",
                  "security": {"description": "An API key (Authorization: Bearer <key> or "
                                              "X-API-Key) with the scope fhir:write to send, "
                                              "fhir:read to read and search."},
                  "resource": [
                      resource("Patient", [("identifier", "token"), ("_id", "token")]),
                      resource("Encounter", [("patient", "reference")]),
                      resource("Observation", [("patient", "reference"), ("code", "token")]),
                      resource("QuestionnaireResponse", [("patient", "reference")])],
                  "interaction": [{"code": "transaction"}]}]}
