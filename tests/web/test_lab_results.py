"""Issue 15, LIS results: an ORU^R01 over HTTP HL7 (``POST /api/v1/hl7``) and FHIR Observations
(HbA1c 4548-4, potassium 2823-3) become laboratory results; the head nurse reads them on patient
360 in words (names, units, the flag, hospital time), ticks them and sends the patient a notice;
the outbox message carries an absolute link that opens exactly those results for the patient.

The ORU^R01 is the HL7 v2.4 example message of the "GHH LAB" laboratory (HL7 v2.x chapter 7,
reproduced in python-hl7's documentation: https://github.com/johnpaulett/python-hl7
docs/index.rst and tests/samples.py, BSD licence), sent unchanged but for MSH-10 and MSH-7."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department
from careloop.engine.models import AuditRow, DomainEventRow
from careloop.flows.ingest import create_api_key
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import message_text

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime.fromisoformat("2026-12-07T10:00:00+08:00")
PATIENT = "555-44-4444"
# HL7 v2.4 chapter 7 example (python-hl7 docs/index.rst); MSH-7 moved to the test's day
ORU = "\r".join([
    "MSH|^~\\&|GHH LAB|ELAB-3|GHH OE|BLDG4|202612070930||ORU^R01|CNTRL-3456|P|2.4",
    "PID|||555-44-4444||EVERYWOMAN^EVE^E^^^^L|JONES|196203520|F|||153 FERNWOOD DR.^^"
    "STATESVILLE^OH^35292||(206)3345232|(206)752-121||||AC555444444||67-A4335^OH^20030520",
    "OBR|1|845439^GHH OE|1045813^GHH LAB|1554-5^GLUCOSE|||200202150730||||||||555-55-5555^"
    "PRIMARY^PATRICIA P^^^^MD^^LEVEL SEVEN HEALTHCARE, INC.|||||||||F||||||444-44-4444^"
    "HIPPOCRATES^HOWARD H^^^^MD",
    "OBX|1|SN|1554-5^GLUCOSE^POST 12H CFST:MCNC:PT:SER/PLAS:QN||^182|mg/dl|70_105|H|||F",
]) + "\r"


def observation(code: str, display: str, value: float, unit: str, low: float, high: float,
                flag: str) -> dict[str, Any]:
    """A laboratory Observation as a regional platform sends it (FHIR R4, UCUM units)."""
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code,
                                 "display": display}]},
            "subject": {"reference": f"Patient/{PATIENT}"},
            "effectiveDateTime": "2026-12-07T08:15:00+08:00",
            "valueQuantity": {"value": value, "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit},
            "referenceRange": [{"low": {"value": low}, "high": {"value": high}}],
            "interpretation": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                "code": flag}]}]}


def _systems_that_pull_read_the_results(client: TestClient, key: str) -> None:
    """``GET /fhir/r4/Observation``: the results come back as laboratory Observations that
    validate with fhir.resources; a code search finds a result by its LOINC or local code."""
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.observation import Observation

    read = {"Authorization": f"Bearer {key}"}
    everything = client.get(f"/fhir/r4/Observation?patient={PATIENT}", headers=read)
    assert everything.status_code == 200, everything.text
    Bundle.model_validate(everything.json())
    labs = {e["resource"]["code"]["coding"][0]["code"]: e["resource"]
            for e in everything.json()["entry"]
            if e["resource"]["category"][0]["coding"][0]["code"] == "laboratory"}
    assert set(labs) == {"4548-4", "2823-3", "1554-5"}
    for resource in labs.values():
        Observation.model_validate(resource)
    potassium = labs["2823-3"]
    assert potassium["valueQuantity"] == {"value": 3.1, "unit": "mmol/L", "code": "mmol/L",
                                          "system": "http://unitsofmeasure.org"}
    assert potassium["interpretation"][0]["coding"][0]["code"] == "L"
    assert potassium["referenceRange"] == [{"text": "3.5-5.3"}]
    assert labs["1554-5"]["code"]["coding"][0]["system"] == "urn:careloop:lis-local-code"
    found = client.get(f"/fhir/r4/Observation?patient={PATIENT}&code=http://loinc.org|4548-4",
                       headers=read).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [labs["4548-4"]["id"]]
    local = client.get(f"/fhir/r4/Observation?patient={PATIENT}&code=1554-5", headers=read)
    assert [e["resource"]["valueQuantity"]["value"] for e in local.json()["entry"]] == [182]
    one = client.get(f"/fhir/r4/Observation/{potassium['id']}", headers=read)
    assert one.status_code == 200 and one.json() == potassium


@pytest.fixture
def hospital(engine: Engine, user_factory: UserFactory) -> dict[str, str]:
    with frozen_now(NOW):
        import_bundle(APPS / "common", actor="test")
        with transaction(engine) as session:
            session.add(Department(id="cardiology", name={"zh-CN": "心内科",
                                                          "en": "Cardiology"}))
            keys = {"his": create_api_key(session, "his"),
                    "fhir": create_api_key(session, "platform", scopes=["fhir:write"]),
                    "read": create_api_key(session, "puller", scopes=["fhir:read"])}
    user_factory("hn", "head_nurse", "cardiology")
    return keys


def test_lis_results_reach_patient_360_and_the_patient(
        hospital: dict[str, str], client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_BASE_URL", "https://fu.example-hospital.cn")
    his = {"X-API-Key": hospital["his"]}
    with frozen_now(NOW):
        for event in ({"event_id": "p1", "type": "patient.upserted", "payload": {
                "patient_id": PATIENT, "mrn": "M-1", "name": "夏娃", "phone": "13800000009"}},
                {"event_id": "e1", "type": "encounter.discharged", "payload": {
                    "encounter_id": "E-LIS-1", "patient_id": PATIENT, "type": "inpatient",
                    "department_id": "cardiology",
                    "discharged_at": "2026-12-06T10:00:00+08:00"}}):
            assert client.post("/api/v1/events", json=event, headers=his).status_code == 200
        ack = client.post("/api/v1/hl7", content=ORU.encode(), headers={
            **his, "Content-Type": "x-application/hl7-v2+er7"})
        assert ack.headers["X-HL7-Ack-Code"] == "AA", ack.text
        fhir = {"Authorization": f"Bearer {hospital['fhir']}",
                "Content-Type": "application/fhir+json"}
        for body in (observation("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 8.1,
                                 "%", 4, 6, "H"),
                     observation("2823-3", "Potassium [Moles/volume] in Serum or Plasma", 3.1,
                                 "mmol/L", 3.5, 5.3, "L")):
            created = client.post("/fhir/r4/Observation", json=body, headers=fhir)
            assert created.status_code == 201, created.text
    with transaction() as session:
        stored = {r.payload["code"]: r.payload for r in session.scalars(select(
            DomainEventRow).where(DomainEventRow.type == "result.recorded"))}
    assert stored["1554-5"]["value"] == 182 and stored["1554-5"]["unit"] == "mg/dl"
    assert stored["1554-5"]["reference_range"] == "70-105"
    # the example names no coding system in OBX-3.3: a local code, named by its OBX-3.2 text
    assert stored["1554-5"]["abnormal_flag"] == "H" and stored["1554-5"]["system"] == "local"
    assert stored["4548-4"]["value"] == 8.1 and stored["2823-3"]["abnormal_flag"] == "L"
    _systems_that_pull_read_the_results(client, hospital["read"])

    login(client, "hn")
    with frozen_now(NOW):
        page = client.get(f"/patients/{PATIENT}")
    assert page.status_code == 200
    section = page.text[page.text.index('id="lab-results"'):]
    section = section[:section.index("</table>")]
    for words in ("糖化血红蛋白", "血钾", "GLUCOSE", "8.1 %", "3.1 mmol/L", "182 mg/dl",
                  "70-105", "偏高", "偏低", "2026-12-07 08:15", "2026-12-07 09:30", "已审核"):
        assert words in section, words
    for code in ("4548-4", "2823-3", "1554-5", ">H<", ">L<", "+00:00", "T08:15", "final"):
        assert code not in section, code

    with frozen_now(NOW):
        form = client.get(f"/patients/{PATIENT}/results")
        chosen = re.findall(r'name="result" value="([^"]+)"', form.text)
        assert len(chosen) == 3 and "短信" in form.text  # no WeChat bound: SMS
        none = client.post(f"/patients/{PATIENT}/results/notice",
                           data={"csrf_token": csrf_from(form.text)})
        assert none.status_code == 422 and "请至少选择一项" in none.text
        sent = client.post(f"/patients/{PATIENT}/results/notice",
                           data={"csrf_token": csrf_from(form.text), "result": chosen[:2]},
                           follow_redirects=False)
    assert sent.status_code == 303
    with transaction() as session:
        message = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "lab_results_notice")).one()
        assert message.channel == "sms" and message.patient_id == PATIENT
        text = message_text(session, message)[1]
        audit = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.results_notice")).one()
        assert audit.patient_id == PATIENT
    assert "{{link:r:" in message.body  # the token is sealed in the stored message
    found = re.search(r"https://fu\.example-hospital\.cn/r/[A-Za-z0-9_\-]{20,}", text)
    assert found is not None and "夏娃您好，您有2项检验结果已出" in text
    assert "有异常提示" in text

    patient = TestClient(client.app)
    with frozen_now(NOW):
        opened = patient.get(found.group(0).removeprefix("https://fu.example-hospital.cn"))
    assert opened.status_code == 200 and opened.headers["cache-control"] == "no-store"
    shown = re.findall(r"<h2>([^<]+)</h2>", opened.text)
    assert len(shown) == 2 and set(shown) < {"糖化血红蛋白", "血钾", "GLUCOSE"}
    assert "4548-4" not in opened.text and "2823-3" not in opened.text
    with frozen_now(NOW):
        assert patient.get("/r/" + "x" * 32).status_code == 404
    from careloop.engine.logs import redact

    token = found.group(0).rsplit("/", 1)[1]
    assert token not in redact(f'"GET /r/{token} HTTP/1.1" 200')  # the access log keeps no token
    with transaction() as session:
        assert session.scalars(select(OutboxMessage.opened_at).where(
            OutboxMessage.id == message.id)).one() is not None


RULES = """kind: ruleset
key: critical_results
title: {zh-CN: 危急值通知患者, en: Critical results to the patient}
on: [result.recorded]
rules:
  - key: critical
    title: {zh-CN: 危急值, en: Critical value}
    when: "event.abnormal_flag in ['HH', 'LL']"
    then:
      - do: notify_results
"""


def test_a_rule_sends_a_critical_result_to_the_patient(
        hospital: dict[str, str], client: TestClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_BASE_URL", "https://fu.example-hospital.cn")
    app = tmp_path / "lab_alerts"
    (app / "rules").mkdir(parents=True)
    (app / "app.yaml").write_text("id: lab_alerts\nname: {zh-CN: 检验危急值, en: Lab alerts}\n"
                                  "version: 0.1.0\nformat: 1\ndefault_locale: zh-CN\n"
                                  "scope: hospital\n"
                                  "requires: [common]\n", "utf-8")
    (app / "rules" / "critical_results.yaml").write_text(RULES, "utf-8")
    with frozen_now(NOW):
        import_bundle(app, actor="test")
    his = {"X-API-Key": hospital["his"]}

    def result(n: int, flag: str) -> dict[str, Any]:
        return {"event_id": f"r{n}", "type": "result.recorded", "payload": {
            "result_id": f"r{n}", "patient_id": "P9", "code": "2823-3", "system": "loinc",
            "value": 2.4 if flag == "LL" else 4.1, "unit": "mmol/L", "abnormal_flag": flag,
            "observed_at": "2026-12-07T08:00:00+08:00"}}

    with frozen_now(NOW):
        assert client.post("/api/v1/events", headers=his, json={
            "event_id": "p9", "type": "patient.upserted", "payload": {
                "patient_id": "P9", "mrn": "M9", "name": "李四", "phone": "13800000010"}}
        ).status_code == 200
        for n, flag in ((1, "N"), (2, "LL")):
            assert client.post("/api/v1/events", headers=his,
                               json=result(n, flag)).status_code == 200
        drain()  # the rules run from the event queue, after the API acknowledged
    with transaction() as session:
        (message,) = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "lab_results_notice")).all()
        text = message_text(session, message)[1]
    assert "您有1项检验结果已出，其中1项有异常提示" in text
    found = re.search(r"https://fu\.example-hospital\.cn(/r/[A-Za-z0-9_\-]{20,})", text)
    assert found is not None
    with frozen_now(NOW):
        page = client.get(found.group(1))
    assert "血钾" in page.text and "危急偏低" in page.text and "2.4 mmol/L" in page.text
