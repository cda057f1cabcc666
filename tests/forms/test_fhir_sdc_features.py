"""FHIR SDC features carried end to end, each as a journey: the Questionnaire imports whole,
publishes, a patient answers it on the page a real link opens (plain form posts), the stored
answers and scores are right, the QuestionnaireResponse and Questionnaire export as valid R4 and
the export re-imports to the same form.

Features: ``enableWhenExpression`` (FHIRPath, evaluated on the server for the page and the
submission alike), ``initial`` / ``initialSelected`` (what the page starts with), ``readOnly``,
``repeats`` on text, number and date items, and hidden groups of calculations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from sqlalchemy import Engine, select

from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.db import transaction
from careloop.engine.errors import DefinitionInvalid
from careloop.engine.registry import loaded_registry
from careloop.forms.fhir import (
    export_questionnaire,
    export_response,
    import_questionnaire,
    read_response,
)
from careloop.forms.models import Submission
from careloop.forms.publish import publish_form
from careloop.forms.testing import form_from_yaml
from careloop.web.app import create_app

DATA = Path(__file__).resolve().parent / "data" / "fhir_corpus"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _publish(engine: Engine, body: dict[str, Any]) -> str:
    text = yaml.safe_dump(body, allow_unicode=True, sort_keys=False)
    with transaction(engine) as session:
        publish_form(session, text, source_path="fhir/imported.yaml", actor="tester")
    return text


def _link(engine: Engine, form_key: str) -> str:
    create = loaded_registry().catalogue("service")["forms.create_request"]
    with transaction(engine) as session:
        made: dict[str, str] = create(session, form_key=form_key, patient_id="p1",
                                      encounter_id="e1", channel="sms",
                                      expires_at=now_utc() + timedelta(days=7))
    return made["url"]


def _stored(engine: Engine) -> Submission:
    with transaction(engine) as session:
        row = session.scalars(select(Submission)).one()
        session.expunge(row)
        return row


def _round_trip(text: str, key: str, answers: dict[str, Any]) -> dict[str, Any]:
    """Questionnaire and response export as valid R4; the export re-imports to the same form;
    the response reads back to the same answers. Returns the exported Questionnaire."""
    spec = form_from_yaml(text)
    exported = export_questionnaire(spec, locale=spec.default_locale)
    Questionnaire.model_validate(exported)
    again, notes = import_questionnaire(exported, key)
    assert notes == [] and again == yaml.safe_load(text)
    response = export_response(spec, answers, patient_id="p1", authored="2026-03-01")
    QuestionnaireResponse.model_validate(response)
    assert read_response(spec, response)[0] == answers
    return exported


def test_enable_when_expression_page_and_server_agree(engine: Engine, client: TestClient,
                                                     patient: str) -> None:
    source = json.loads((DATA / "lforms-enablewhenexpr.json").read_text("utf-8"))
    body, notes = import_questionnaire(source, "sum_gate")
    assert notes == []
    text = _publish(engine, body)
    url = _link(engine, "sum_gate")
    page = client.get(url + "?lang=en")
    assert 'data-key="q4" hidden' in page.text       # nothing answered: 0 + 0 + 0 < 5

    def shown(**numbers: str) -> bool:
        reply = client.post(url, data={"_page": "0", "_action": "visible", **numbers}).json()
        return "q4" in reply["visible"]

    assert shown(n1="2", n2="3") and shown(n3="5.5")
    assert not shown(n1="2", n2="2")
    assert shown(n1="1", n2="4") and not shown(n1="x", n2="4")  # "x" is no number: not counted
    # the page's answer to a hidden question is dropped by the server, not trusted
    reply = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                   "n1": "1", "n2": "1", "q4": "typed while hidden"})
    assert reply.status_code == 200
    assert _stored(engine).answers == {"n1": 1.0, "n2": 1.0}
    exported = _round_trip(text, "sum_gate", {"n1": 2.0, "n2": 3.0, "q4": "shown"})
    q4 = exported["item"][-1]
    assert {"url": SDC + "sdc-questionnaire-enableWhenExpression", "valueExpression": {
        "language": "text/fhirpath", "expression": "%n1val + %n2val + %n3val >= 5"}} in (
        q4["extension"])


def _vitals() -> dict[str, Any]:
    """initial, initialSelected, readOnly and repeats on text, integer and date items."""
    return {"resourceType": "Questionnaire", "status": "active", "language": "en",
            "url": "http://example.org/Questionnaire/home-vitals", "title": "Home readings",
            "item": [
                {"linkId": "ward", "type": "string", "text": "Ward", "readOnly": True,
                 "initial": [{"valueString": "Ward 3"}]},
                {"linkId": "pulse", "type": "integer", "text": "Pulse readings",
                 "repeats": True, "initial": [{"valueInteger": 72}],
                 "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/minValue",
                                "valueInteger": 20}]},
                {"linkId": "pulse_sum", "type": "integer", "text": "Sum of the readings",
                 "readOnly": True, "extension": [{
                     "url": SDC + "sdc-questionnaire-calculatedExpression",
                     "valueExpression": {"language": "text/fhirpath", "expression":
                                         "%resource.item.where(linkId='pulse').answer.value"
                                         ".aggregate($total + $this, 0)"}}]},
                {"linkId": "dates", "type": "date", "text": "Days measured", "repeats": True},
                {"linkId": "notes", "type": "text", "text": "Notes", "repeats": True},
                {"linkId": "taken", "type": "dateTime", "text": "Measured at",
                 "initial": [{"valueDateTime": "2026-03-01T00:30:00Z"}]},
                {"linkId": "dizzy", "type": "boolean", "text": "Dizzy?",
                 "initial": [{"valueBoolean": False}]},
                {"linkId": "arm", "type": "choice", "text": "Arm", "answerOption": [
                    {"valueCoding": {"code": "L", "display": "Left"}},
                    {"valueCoding": {"code": "R", "display": "Right"},
                     "initialSelected": True}]}]}


def test_initial_read_only_and_repeats_journey(engine: Engine, client: TestClient,
                                               patient: str) -> None:
    body, notes = import_questionnaire(_vitals(), "home_vitals")
    assert notes == []
    fields = {f["key"]: f for f in body["fields"]}
    assert (fields["ward"]["read_only"], fields["ward"]["default"]) == (True, "Ward 3")
    assert (fields["pulse"]["repeats"], fields["pulse"]["default"]) == (True, [72])
    assert (fields["dizzy"]["default"], fields["arm"]["default"]) == ("no", "R")
    local = datetime(2026, 3, 1, 0, 30, tzinfo=UTC).astimezone(hospital_tz())
    taken = local.replace(tzinfo=None).isoformat(timespec="seconds")   # the hospital's clock
    assert fields["taken"]["default"] == taken
    text = _publish(engine, body)
    url = _link(engine, "home_vitals")
    page = client.get(url + "?lang=en").text
    assert 'name="ward" value="Ward 3"' in page and "readonly" in page
    assert 'name="pulse" value="72"' in page and page.count('name="pulse"') == 2  # + an empty one
    assert f'name="taken" value="{taken}"' in page
    assert 'value="no" checked' in page.replace("\n", " ") or 'value="no"  checked' in page
    # a second pulse and a note added, the read-only ward tampered with
    saved = client.post(url, data={"_page": "0", "_lang": "en", "_action": "save",
                                   "ward": "Ward 9", "pulse": ["72", "88", ""],
                                   "notes": ["after the walk"], "dizzy": "no", "arm": "R",
                                   "taken": taken})
    assert saved.status_code == 200 and saved.text.count('name="pulse"') == 3
    bad = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                 "pulse": ["72", "5"], "dizzy": "no"})
    assert bad.status_code == 422 and "f-pulse" in bad.text      # 5 < minValue 20, located
    done = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                  "pulse": ["72", "88"], "dates": ["2026-03-01", "2026-03-02"],
                                  "notes": ["after the walk"], "dizzy": "yes", "arm": "L",
                                  "taken": taken})
    assert done.status_code == 200
    row = _stored(engine)
    stored = row.answers
    assert row.scores == {"pulse_sum": 72 + 88}          # FHIRPath over the repeated answers
    assert stored == {"ward": "Ward 3", "pulse": [72, 88], "dates": ["2026-03-01", "2026-03-02"],
                      "notes": ["after the walk"], "dizzy": "yes", "arm": "L", "taken": taken}
    exported = _round_trip(text, "home_vitals", stored)
    items = {i["linkId"]: i for i in exported["item"]}
    assert items["pulse"]["repeats"] and items["pulse"]["initial"] == [{"valueInteger": 72}]
    assert items["ward"]["readOnly"] and items["arm"]["answerOption"][1]["initialSelected"]
    response = export_response(form_from_yaml(text), stored, patient_id="p1",
                               authored="2026-03-01")
    pulse = next(i for i in response["item"] if i["linkId"] == "pulse")
    assert pulse["answer"] == [{"valueInteger": 72}, {"valueInteger": 88}]


def test_what_cannot_repeat_or_be_read_only_is_refused_and_located() -> None:
    q = {"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "bp", "type": "quantity", "repeats": True, "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/questionnaire-unit",
             "valueCoding": {"system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]},
        {"linkId": "yn", "type": "boolean", "readOnly": True},
        {"linkId": "n", "type": "integer", "initial": [{"valueString": "many"}]},
        {"linkId": "g", "type": "group", "item": [{"linkId": "g1", "type": "string"}],
         "extension": [{"url": SDC + "sdc-questionnaire-enableWhenExpression",
                        "valueExpression": {"language": "text/fhirpath",
                                            "expression": "%resource.item.count() > 1"}}]},
        {"linkId": "bad", "type": "string", "extension": [
            {"url": SDC + "sdc-questionnaire-enableWhenExpression",
             "valueExpression": {"language": "text/fhirpath", "expression": "1 +"}}]}]}
    body, notes = import_questionnaire(q, "refusals")
    assert [n.split(": refused")[0] for n in notes] == [
        "item[0].repeats", "item[1].readOnly", "item[2].initial",
        "item[3].extension[sdc-questionnaire-enableWhenExpression]",
        "item[4].extension[sdc-questionnaire-enableWhenExpression]"]
    with pytest.raises(DefinitionInvalid) as caught:
        form_from_yaml(yaml.safe_dump(body))
    assert [p.code for p in caught.value.problems] == ["form.import-unresolved"] * 5
    # written by hand, the same mistakes are located compile errors
    with pytest.raises(DefinitionInvalid) as caught:
        form_from_yaml(yaml.safe_dump({"kind": "form", "key": "f",
                                       "title": {"zh-CN": "表", "en": "F"}, "fields": [
            {"key": "a", "type": "yes_no", "repeats": True},
            {"key": "b", "type": "integer", "default": "many"},
            {"key": "c", "type": "short_text",
             "visible_if_fhirpath": {"expression": "where("}}]}))
    assert [(p.code, p.path) for p in caught.value.problems] == [
        ("form.repeats", ("fields", 0, "repeats")), ("form.default", ("fields", 1, "default")),
        ("form.fhirpath", ("fields", 2, "visible_if_fhirpath", "expression"))]


def test_hidden_group_of_calculations_is_not_drawn(engine: Engine, client: TestClient,
                                                   patient: str) -> None:
    source = json.loads((DATA / "lforms-hiddenitem.json").read_text("utf-8"))
    body, notes = import_questionnaire(source, "hidden_calc")
    assert notes == []
    _publish(engine, body)
    page = client.get(_link(engine, "hidden_calc") + "?lang=en").text
    assert "GROUP-VISIBLE: group that contains a hidden item" in page
    assert "hidden group" not in page


def _corpus(name: str) -> dict[str, Any]:
    source: dict[str, Any] = json.loads((DATA / name).read_text("utf-8"))
    return source


def _resolved(body: dict[str, Any]) -> dict[str, Any]:
    """The form once its author resolved every refusal (removed those items)."""
    refused = {e["field"] for e in body["import"]["unresolved"]}
    assert refused
    return {**body, "import": {"source": "fhir", "unresolved": []}}


def test_initial_expression_is_evaluated_once_and_written_back(engine: Engine,
                                                                client: TestClient,
                                                                patient: str) -> None:
    """SDC ``initialExpression`` (LHC-Forms' own test Questionnaire): evaluated on the server as
    the form is populated (an empty response, the Questionnaire as ``%questionnaire``), the
    value becomes the field's default; the export writes the expression back, except where it
    read ``%questionnaire`` (then the value, as ``initial``); an off-list value is refused."""
    source = _corpus("lforms-initialexpr.json")
    body, notes = import_questionnaire(source, "initial_expr")
    fields = {f["key"]: f for f in body["fields"]}
    assert fields["type_integer"]["default"] == 123
    assert fields["type_string"]["default"] == "abc123"
    assert fields["repeating_string"]["default"] == ["aaa", "bbb"]
    assert fields["repeating_choice"]["default"] == ["g", "b"]   # codings of the contained VS
    assert notes == ["item[3].extension[sdc-questionnaire-initialExpression]: refused: an "
                     "initial value of a kind the field does not take"]  # 'aaa' is no colour
    with pytest.raises(DefinitionInvalid):
        form_from_yaml(yaml.safe_dump(body))                     # blocks publishing
    resolved = _resolved(body)
    _publish(engine, resolved)
    page = client.get(_link(engine, "initial_expr") + "?lang=en").text
    assert 'name="type_integer" value="123"' in page and 'value="abc123"' in page
    spec = form_from_yaml(yaml.safe_dump(resolved))
    exported = export_questionnaire(spec, locale=spec.default_locale)
    Questionnaire.model_validate(exported)
    items = {i["linkId"]: i for i in exported["item"]}
    assert items["/type-integer"]["extension"] == [
        {"url": SDC + "sdc-questionnaire-initialExpression",
         "valueExpression": {"language": "text/fhirpath", "expression": "123"}}]
    assert "initial" not in items["/type-integer"]
    chosen = [o["valueCoding"]["code"] for o in items["repeating-choice"].get("answerOption", [])
              if o.get("initialSelected")] or [
        i["valueCoding"]["code"] for i in items["repeating-choice"].get("initial", [])]
    assert chosen == ["g", "b"]
    again, _ = import_questionnaire(exported, "initial_expr")
    assert again["fields"] == body["fields"]


def test_answer_expression_gives_fixed_or_computed_choices() -> None:
    """SDC ``answerExpression`` (LHC-Forms' answerExpTest): a list of literals is evaluated once
    into the choices and written back as itself; one computed from the answers is carried as
    ``choices_fhirpath`` (evaluated per page and per submission, tests in
    test_fhir_sdc_dynamic.py)."""
    body, notes = import_questionnaire(_corpus("lforms-answerexp.json"), "answer_expr")
    fields = {f["key"]: f for f in body["fields"]}
    assert [c["code"] for c in fields["q3integer"]["choices"]] == ["12", "34", "56"]
    assert [c["code"] for c in fields["q2string"]["choices"]][:3] == ["one", "two", "three"]
    assert [c["code"] for c in fields["q4date"]["choices"]] == [
        "2022-11-12", "2022-12-01", "2022-12-25"]
    assert notes == []
    assert fields["q1listchoice"]["choices_fhirpath"] == {
        "expression": "%resource.item.where(linkId='q1').answer.value"}
    assert "choices" not in fields["q1listchoice"]
    assert [c["code"] for c in fields["q1liststring"]["choices"]] == ["other"]  # free text
    spec = form_from_yaml(yaml.safe_dump(body))
    from careloop.forms.logic import evaluate

    assert evaluate(spec, {"q3integer": "34"}, locale="en").valid
    assert not evaluate(spec, {"q3integer": "99"}, locale="en").valid
    exported = export_questionnaire(spec, locale=spec.default_locale)
    Questionnaire.model_validate(exported)
    q3 = next(i for i in exported["item"] if i["linkId"] == "q3Integer")
    assert "answerOption" not in q3 and q3["extension"][-1] == {
        "url": SDC + "sdc-questionnaire-answerExpression",
        "valueExpression": {"language": "text/fhirpath", "expression": "12 | 34 | 56 "}}


@pytest.mark.parametrize(("extension", "expression", "reason"), [
    ("sdc-questionnaire-initialExpression", "%patient.birthDate", "reads %patient"),
    ("sdc-questionnaire-initialExpression", "%ward.name", "reads %ward"),
    ("sdc-questionnaire-initialExpression", "1 +", "not FHIRPath"),
    ("sdc-questionnaire-initialExpression", "today() | %questionnaire.item.count()",
     "reads %questionnaire"),
    ("sdc-questionnaire-answerExpression", "%resource.item.answer.value | "
     "%questionnaire.item.text", "reads %questionnaire"),
])
def test_population_expressions_that_cannot_be_carried_are_refused(
        extension: str, expression: str, reason: str) -> None:
    item = {"linkId": "d", "text": "D", "type": "date" if "initial" in extension else "string",
            "extension": [{"url": SDC + extension, "valueExpression": {
                "language": "text/fhirpath", "expression": expression}}]}
    body, notes = import_questionnaire({"resourceType": "Questionnaire", "status": "active",
                                        "item": [item]}, "pop")
    assert len(notes) == 1 and notes[0].startswith(f"item[0].extension[{extension}]: refused: ")
    assert reason in notes[0], notes[0]
    assert body["import"]["unresolved"][0]["field"] == f"item[0].extension[{extension}]"
