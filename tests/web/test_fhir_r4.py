"""FHIR R4 in and out (``/fhir/r4``): a transaction Bundle from a regional platform — Patient,
finished Encounter, blood-pressure Observation — drives the discharge journey to the day-3 form
and a task; the same Bundle twice is processed once; bad resources are answered with an
OperationOutcome naming the FHIRPath of the fault; every resource Careloop returns validates with
fhir.resources (R4B models)."""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.bundles import import_bundle, list_bundles
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.models import AuditRow, DomainEventRow
from careloop.flows.ingest import create_api_key
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import message_text
from careloop.flows.scheduler import run_due
from careloop.forms.models import Submission
from careloop.web.app import create_app

from .conftest import UserFactory, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
START = datetime.fromisoformat("2026-12-01T10:00:00+08:00")
FHIR = "application/fhir+json"


@pytest.fixture
def hospital(engine: Engine, user_factory: UserFactory) -> Iterator[dict[str, str]]:
    with frozen_now(START):
        for path in list_bundles([APPS]):
            import_bundle(path, actor="test")
        with transaction(engine) as session:
            for dept, zh in (("cardiology", "心内科"), ("pharmacy", "药剂科")):
                session.add(Department(id=dept, name={"zh-CN": zh, "en": dept}))
            session.flush()
            session.add(Department(id="cardio_w1", name={"zh-CN": "心内科1病区", "en": "W1"},
                                   kind="ward", parent_id="cardiology"))
            keys = {"write": create_api_key(session, "platform", scopes=["fhir:write"]),
                    "read": create_api_key(session, "puller", scopes=["fhir:read"])}
    for username, role, dept in (("hn", "head_nurse", "cardiology"),
                                 ("director", "dept_director", "cardiology"),
                                 ("px", "px_office", None),
                                 ("pharm", "pharmacy_head", "pharmacy")):
        user_factory(username, role, dept)
    yield keys


def validates(resource: dict[str, Any]) -> None:
    """The resource parses with fhir.resources' model of its type (raises if not)."""
    kind = resource["resourceType"]
    module = importlib.import_module(f"fhir.resources.R4B.{kind.lower()}")
    getattr(module, kind).model_validate(resource)


def bundle() -> dict[str, Any]:
    """What a regional platform sends at discharge (references by urn:uuid)."""
    patient, encounter = "urn:uuid:7d0f4c9e-0a52-4a0e-9d1c-1f3e3f6f0a01", \
        "urn:uuid:7d0f4c9e-0a52-4a0e-9d1c-1f3e3f6f0a02"
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:7d0f4c9e-0a52-4a0e-9d1c-1f3e3f6f0a03",
         "resource": {
             "resourceType": "Observation", "status": "final",
             "category": [{"coding": [{
                 "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                 "code": "vital-signs"}]}],
             "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
             "subject": {"reference": patient},
             "effectiveDateTime": "2026-12-01T08:30:00+08:00",
             "component": [
                 {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                  "valueQuantity": {"value": 150, "unit": "mmHg",
                                    "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                 {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                  "valueQuantity": {"value": 95, "unit": "mmHg",
                                    "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]},
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": patient,
         "resource": {
             "resourceType": "Patient",
             "identifier": [{"type": {"coding": [{
                 "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                 "system": "urn:oid:1.2.156.112604.1.2.1", "value": "MRN-778899"}],
             "name": [{"use": "official", "text": "王建国", "family": "王", "given": ["建国"]}],
             "telecom": [{"system": "phone", "value": "13800000001", "use": "mobile"}],
             "gender": "male", "birthDate": "1958-04-02"},
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": "identifier=urn:oid:1.2.156.112604.1.2.1|MRN-778899"}},
        {"fullUrl": encounter,
         "resource": {
             "resourceType": "Encounter", "status": "finished",
             "identifier": [{"system": "urn:oid:1.2.156.112604.1.4", "value": "ZY2026-0001"}],
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                       "code": "IMP"},
             "subject": {"reference": patient},
             "period": {"start": "2026-11-26T09:00:00+08:00", "end": "2026-12-01T10:00:00+08:00"},
             "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                         "code": "I10"}]}],
             "serviceProvider": {"reference": "Organization/cardiology"},
             "location": [{"location": {"reference": "Location/cardio_w1"}}]},
         "request": {"method": "POST", "url": "Encounter"}}]}


def _post(client: TestClient, key: str, path: str, body: Any, at: datetime = START,
          **headers: str) -> Any:
    with frozen_now(at):
        return client.post(path, json=body, headers={"Authorization": f"Bearer {key}",
                                                     "Content-Type": FHIR, **headers})


def _get(client: TestClient, key: str, path: str) -> dict[str, Any]:
    answer = client.get(path, headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(FHIR)
    body: dict[str, Any] = answer.json()
    validates(body)
    for entry in body.get("entry", []):
        validates(entry["resource"])
    return body


def _counts(engine: Engine) -> tuple[int, int, int]:
    with transaction(engine) as session:
        return (session.scalar(select(func.count()).select_from(DomainEventRow)) or 0,
                session.scalar(select(func.count()).select_from(Patient)) or 0,
                session.scalar(select(func.count()).select_from(Encounter)) or 0)


def test_a_transaction_bundle_drives_the_discharge_journey_once(
        engine: Engine, hospital: dict[str, str]) -> None:
    client = TestClient(create_app())
    answer = _post(client, hospital["write"], "/fhir/r4", bundle())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(FHIR)
    response = answer.json()
    validates(response)
    assert response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created"] * 3
    locations = [e["response"]["location"] for e in response["entry"]]
    assert locations[2] == "Encounter/ZY2026-0001"
    with transaction(engine) as session:
        (patient,) = session.scalars(select(Patient)).all()
        assert (patient.mrn, patient.name, patient.phone) == ("MRN-778899", "王建国",
                                                              "13800000001")
        assert locations[1] == f"Patient/{patient.id}"
        stay = session.get(Encounter, "ZY2026-0001")
        assert stay is not None and stay.status == "discharged"
        assert (stay.patient_id, stay.department_id, stay.ward_id) == (
            patient.id, "cardiology", "cardio_w1")
        patient_id = patient.id
        # the MRN of ifNoneExist does not become part of an event id
        ids = session.scalars(select(DomainEventRow.event_id)).all()
        assert ids and not [i for i in ids if "778899" in i]
    before = _counts(engine)

    # The platform re-sends the same Bundle (a timeout on its side): processed once.
    again = _post(client, hospital["write"], "/fhir/r4", bundle(),
                  at=START + timedelta(minutes=3))
    assert again.status_code == 200, again.text
    assert [e["response"]["status"] for e in again.json()["entry"]] == ["200 OK"] * 3
    assert [e["response"]["location"] for e in again.json()["entry"]] == locations
    assert _counts(engine) == before

    # Day 3: the form link is sent; the patient answers dissatisfied; the head nurse has a task.
    day3 = datetime.fromisoformat("2026-12-04T09:31:00+08:00")
    with frozen_now(day3):
        run_due(engine, now=day3)
    with transaction(engine) as session:
        sent = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "discharge_care_day3")).one()
        link = re.search(r"/f/[A-Za-z0-9_\-]+", message_text(session, sent)[1])
    assert link is not None
    at = day3 + timedelta(hours=2)
    with frozen_now(at):
        answered = client.post(link.group(0), data={
            "_page": "0", "_action": "submit", "recovery": "poor", "symptoms": "头晕",
            "medication_clear": "no", "overall": "2", "comment": "用药指导不清楚"})
        assert answered.status_code == 200, answered.text
        drain(engine)  # the serving process's dispatcher, right after the page returned
        staff = TestClient(client.app)
        login(staff, "hn")
        mine = staff.get("/api/v1/tasks?view=mine").json()
        assert [t["priority"] for t in mine if t["priority"] == "urgent"] == ["urgent"]
        # the platform's blood pressure is on the patient 360 page
        page = staff.get(f"/patients/{patient_id}")
        assert page.status_code == 200
        assert "150/95 mmHg" in page.text

    # Systems that pull read it back; everything validates.
    read = hospital["read"]
    found = _get(client, read, f"/fhir/r4/Patient/{patient_id}")
    assert found["name"][0]["text"] == "王建国" and found["identifier"][0]["value"] == "MRN-778899"
    by_mrn = _get(client, read, "/fhir/r4/Patient?identifier=MRN-778899")
    assert by_mrn["type"] == "searchset" and by_mrn["total"] == 1
    stays = _get(client, read, f"/fhir/r4/Encounter?patient=Patient/{patient_id}")
    assert [(e["resource"]["status"], e["resource"]["period"]["end"]) for e in stays["entry"]] \
        == [("finished", "2026-12-01T02:00:00+00:00")]
    readings = _get(client, read, f"/fhir/r4/Observation?patient={patient_id}"
                                  "&code=http://loinc.org|85354-9")
    (bp,) = [e["resource"] for e in readings["entry"]]
    assert [c["valueQuantity"]["value"] for c in bp["component"]] == [150, 95]
    assert _get(client, read, f"/fhir/r4/Observation/{bp['id']}") == bp
    assert _get(client, read, f"/fhir/r4/{locations[2]}")["status"] == "finished"
    assert _get(client, read, f"/fhir/r4/Observation?patient={patient_id}&code=15074-8")[
        "total"] == 0
    responses = _get(client, read, f"/fhir/r4/QuestionnaireResponse?patient={patient_id}")
    (day3_answer,) = [e["resource"] for e in responses["entry"]]
    assert day3_answer["questionnaire"].startswith("Questionnaire/discharge_day3")
    validates(_get(client, read, "/fhir/r4/metadata"))
    with transaction(engine) as session:
        views = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.view", AuditRow.actor == "apikey:puller")).all()
        assert len(views) == 8 and {v.patient_id for v in views} == {patient_id}


def test_a_questionnaire_response_is_a_scored_submission_once(
        engine: Engine, hospital: dict[str, str]) -> None:
    client = TestClient(create_app())
    assert _post(client, hospital["write"], "/fhir/r4", bundle()).status_code == 200
    with transaction(engine) as session:
        patient_id = session.scalars(select(Patient.id)).one()
    response = {
        "resourceType": "QuestionnaireResponse", "id": "qr-1",
        "questionnaire": "http://hospital.example/fhir/Questionnaire/phq9",
        "status": "completed", "subject": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": "Encounter/ZY2026-0001"},
        "authored": "2026-12-02T10:00:00+08:00",
        "item": [{"linkId": f"q{i}", "answer": [{"valueCoding": {"code": "2"}}]}
                 for i in range(1, 10)]}
    first = _post(client, hospital["write"], "/fhir/r4/QuestionnaireResponse", response)
    assert first.status_code == 201, first.text
    again = _post(client, hospital["write"], "/fhir/r4/QuestionnaireResponse", response)
    assert again.status_code == 200, again.text
    assert first.headers["location"] == again.headers["location"]
    validates(first.json())
    assert first.json()["resourceType"] == "QuestionnaireResponse"
    assert _get(client, hospital["read"], first.headers["location"]) == first.json()
    with transaction(engine) as session:
        (submission,) = session.scalars(select(Submission)).all()
        assert (submission.form_key, submission.encounter_id) == ("phq9", "ZY2026-0001")
        assert submission.scores["total"] == 18
        assert submission.bands["total"] == "moderately_severe"
    pulled = _get(client, hospital["read"], f"/fhir/r4/QuestionnaireResponse?patient={patient_id}")
    assert pulled["total"] == 1

    # A response missing a required answer names the item; one for no form names the form.
    short = {**copy.deepcopy(response), "id": "qr-2", "item": response["item"][:8]}
    refused = _post(client, hospital["write"], "/fhir/r4/QuestionnaireResponse", short)
    assert refused.status_code == 422, refused.text
    assert "QuestionnaireResponse.item.where(linkId='q9')" in str(refused.json())
    unknown = {**response, "id": "qr-3", "questionnaire": "Questionnaire/no_such_form"}
    refused = _post(client, hospital["write"], "/fhir/r4/QuestionnaireResponse", unknown)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["QuestionnaireResponse.questionnaire"]


def _issue(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    validates(body)
    assert body["resourceType"] == "OperationOutcome"
    first: dict[str, Any] = body["issue"][0]
    return first


def test_bad_resources_are_answered_with_an_operation_outcome_naming_the_place(
        engine: Engine, hospital: dict[str, str]) -> None:
    client = TestClient(create_app())
    key = hospital["write"]
    before = _counts(engine)

    # A finished stay without its end: nothing of the Bundle is stored.
    broken = bundle()
    del broken["entry"][2]["resource"]["period"]["end"]
    issue = _issue(_post(client, key, "/fhir/r4", broken), 422)
    assert issue["expression"] == ["Bundle.entry[2].resource.period.end"]
    assert "period.end" in issue["diagnostics"]
    assert _counts(engine) == before

    encounter = copy.deepcopy(bundle()["entry"][2]["resource"])
    encounter["subject"] = {"reference": "Patient/nobody"}
    del encounter["period"]["end"]
    issue = _issue(_post(client, key, "/fhir/r4/Encounter", encounter), 422)
    assert issue["expression"] == ["Encounter.period.end"]

    patient = copy.deepcopy(bundle()["entry"][1]["resource"])
    patient["birthDate"] = "1958-13-02"
    issue = _issue(_post(client, key, "/fhir/r4/Patient", patient), 400)
    assert issue["expression"] == ["Patient.birthDate"]
    patient["birthDate"], patient["telecom"][0]["value"] = "1958-04-02", "call me"
    issue = _issue(_post(client, key, "/fhir/r4/Patient", patient), 422)
    assert issue["expression"] == ["Patient.telecom[0].value"]
    del patient["telecom"]
    patient["name"] = []
    issue = _issue(_post(client, key, "/fhir/r4/Patient", patient), 422)
    assert issue["expression"] == ["Patient.name"]

    # An unknown department is the hospital's reference data, not created from a message.
    stay = bundle()
    stay["entry"][2]["resource"]["serviceProvider"] = {"reference": "Organization/neurology"}
    issue = _issue(_post(client, key, "/fhir/r4", stay), 422)
    assert issue["expression"] == ["Bundle.entry[2].resource.serviceProvider"]
    assert "neurology" in issue["diagnostics"]

    # A code that is not a reading is a laboratory result, which needs its own value.
    other = bundle()
    other["entry"][0]["resource"]["code"]["coding"][0]["code"] = "2093-3"
    issue = _issue(_post(client, key, "/fhir/r4", other), 422)
    assert issue["expression"] == ["Bundle.entry[0].resource.value[x]"]
    assert issue["code"] == "required"
    assert _counts(engine) == before

    # Not a transaction; not FHIR JSON; no key; a read-only key.
    issue = _issue(_post(client, key, "/fhir/r4", {**bundle(), "type": "batch"}), 422)
    assert issue["expression"] == ["Bundle.type"]
    with frozen_now(START):
        plain = client.post("/fhir/r4/Patient", content=b"<Patient/>",
                            headers={"X-API-Key": key, "Content-Type": "application/xml"})
    assert _issue(plain, 415)["code"] == "not-supported"
    assert _issue(client.post("/fhir/r4", json=bundle()), 401)["code"] == "login"
    assert _issue(_post(client, hospital["read"], "/fhir/r4", bundle()), 403)["code"] \
        == "forbidden"
    assert _issue(client.get("/fhir/r4/Patient?identifier=MRN-778899",
                             headers={"X-API-Key": key}), 403)["code"] == "forbidden"
    assert _issue(client.get("/fhir/r4/Observation?code=85354-9",
                             headers={"X-API-Key": hospital["read"]}), 400)["code"] \
        == "required"
    assert _counts(engine) == before


def test_put_follows_a_stay_and_glucose_in_mg_dl_is_converted(
        engine: Engine, hospital: dict[str, str]) -> None:
    client = TestClient(create_app())
    key = hospital["write"]
    patient = {**copy.deepcopy(bundle()["entry"][1]["resource"]), "id": "P-77"}
    with frozen_now(START):
        put = client.put("/fhir/r4/Patient/P-77", json=patient,
                         headers={"X-API-Key": key, "Content-Type": FHIR})
    assert put.status_code == 201, put.text
    validates(put.json())
    stay = copy.deepcopy(bundle()["entry"][2]["resource"])
    stay.update(id="E-77", status="in-progress", subject={"reference": "Patient/P-77"})
    del stay["period"]["end"]
    for status, expected, code in (("in-progress", "admitted", 201),
                                   ("finished", "discharged", 200),
                                   ("entered-in-error", "cancelled", 200)):
        stay["status"] = status
        if status == "finished":
            stay["period"]["end"] = "2026-12-01T10:00:00+08:00"
        with frozen_now(START):
            answer = client.put("/fhir/r4/Encounter/E-77", json=stay,
                                headers={"X-API-Key": key, "Content-Type": FHIR})
        assert answer.status_code == code, answer.text
        with transaction(engine) as session:
            assert session.get(Encounter, "E-77").status == expected  # type: ignore[union-attr]
    mismatched = _post(client, key, "/fhir/r4/Patient", {**patient, "id": "P-78"})
    assert mismatched.status_code == 200  # a POST is matched by its MRN: an update
    assert mismatched.headers["location"] == "/fhir/r4/Patient/P-77"
    with frozen_now(START):
        wrong = client.put("/fhir/r4/Patient/P-79", json=patient,
                           headers={"X-API-Key": key, "Content-Type": FHIR})
    assert _issue(wrong, 400)["expression"] == ["Patient.id"]

    glucose = {"resourceType": "Observation", "id": "glu-1", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
               "subject": {"reference": "Patient/P-77"},
               "effectiveDateTime": "2026-12-02T07:00:00",  # no offset
               "valueQuantity": {"value": 126, "unit": "mg/dL"}}
    # FHIR requires the offset once a time is given
    naive = _issue(_post(client, key, "/fhir/r4/Observation", glucose), 400)
    assert naive["expression"] == ["Observation.effectiveDateTime"]
    glucose["effectiveDateTime"] = "2026-12-02T07:00:00+08:00"
    assert _post(client, key, "/fhir/r4/Observation", glucose).status_code == 201
    found = _get(client, hospital["read"], "/fhir/r4/Observation?patient=P-77&code=15074-8")
    (reading,) = [e["resource"] for e in found["entry"]]
    assert reading["valueQuantity"]["value"] == 7 and reading["valueQuantity"]["unit"] == "mmol/L"
    assert reading["id"] == "glu-1"
    assert _get(client, hospital["read"], "/fhir/r4/Observation/glu-1") == reading

    # A weight from the platform is on the patient 360 page, in words.
    weight = {**glucose, "id": "wt-1", "valueQuantity": {"value": 70.5, "unit": "kg"},
              "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}}
    assert _post(client, key, "/fhir/r4/Observation", weight).status_code == 201
    staff = TestClient(client.app)
    login(staff, "hn")
    page = staff.get("/patients/P-77")
    assert page.status_code == 200
    table = page.text[page.text.index('id="other-readings"'):]
    assert "体重" in table and "70.5 kg" in table and "医院信息系统" in table
    assert "reading_type" not in page.text
