"""FHIR SDC population expressions evaluated on the server per page and per submission:
answer options computed from the answers (``answerExpression`` on ``%resource``, LHC-Forms'
answerExpTest) and initial values read from the clock (``initialExpression`` with ``today()``,
on the hospital's local date). The page draws the choices the answers so far give (again after
a change, through the page's script, or on the next page drawn without it); a submission is
held to the choices its own answers give; the export writes the expressions back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from sqlalchemy import Engine, select

from careloop.engine.clock import OFFSET_ENV, now_utc, to_local, wall_clock_utc
from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry
from careloop.forms.fhir import export_questionnaire, export_response, import_questionnaire
from careloop.forms.logic import evaluate
from careloop.forms.models import Submission
from careloop.forms.publish import publish_form
from careloop.forms.runtime import SubmissionInvalid, submit
from careloop.forms.testing import form_from_yaml
from careloop.web.app import create_app

DATA = Path(__file__).resolve().parent / "data" / "fhir_corpus"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _corpus(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text("utf-8"))
    return loaded


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


def _stored(engine: Engine) -> list[Submission]:
    with transaction(engine) as session:
        rows = list(session.scalars(select(Submission)))
        for row in rows:
            session.expunge(row)
        return rows


def test_choices_computed_from_the_answers_on_the_page_and_at_submit(
        engine: Engine, client: TestClient, patient: str) -> None:
    body, notes = import_questionnaire(_corpus("lforms-answerexp.json"), "answer_expr")
    assert notes == [] and body["import"]["unresolved"] == []
    _publish(engine, body)
    url = _link(engine, "answer_expr")
    page = client.get(url + "?lang=en").text
    assert 'data-choice="apple"' not in page              # nothing typed into q1 yet
    # the page's script asks after a change: the field comes back with the computed choices
    reply = client.post(url, data={"_page": "0", "_lang": "en", "_action": "visible",
                                   "q1": ["apple", "pear"]}).json()
    drawn = reply["fields"]["q1listchoice"]
    assert 'data-choice="apple"' in drawn and 'data-choice="pear"' in drawn
    assert 'value="apple"' in reply["fields"]["q1liststring"]   # open: the list and "other"
    # without the script: the page drawn after a save shows them (the answers so far)
    saved = client.post(url, data={"_page": "0", "_lang": "en", "_action": "save",
                                   "q1": ["apple", "pear"]})
    assert saved.status_code == 200
    assert 'name="q1listchoice" value="pear"' in saved.text
    # a tampered answer (not among the choices the submitted answers give) is refused, located
    tampered = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                      "q1": ["apple", "pear"], "q1listchoice": "banana"})
    assert tampered.status_code == 422
    assert 'id="e-q1listchoice"' in tampered.text
    assert _stored(engine) == []
    # changing q1 changes what may be chosen: "pear" is gone once q1 no longer holds it
    gone = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                  "q1": ["apple"], "q1listchoice": "pear"})
    assert gone.status_code == 422 and _stored(engine) == []
    done = client.post(url, data={"_page": "0", "_lang": "en", "_action": "submit",
                                  "q1": ["apple", "pear"], "q1listchoice": "pear",
                                  "q1liststring": "other", "q1liststring__other": "kiwi"})
    assert done.status_code == 200, done.text
    [row] = _stored(engine)
    assert row.answers == {"q1": ["apple", "pear"], "q1listchoice": "pear",
                           "q1liststring": {"code": "other", "other": "kiwi"}}


def test_submit_refuses_an_answer_off_the_computed_choices(engine: Engine,
                                                           patient: str) -> None:
    body, _ = import_questionnaire(_corpus("lforms-answerexpchild.json"), "fruit")
    spec = form_from_yaml(yaml.safe_dump(body))
    assert evaluate(spec, {"fruit": ["fig", "plum"], "parent_checkbox": ["plum"]}).valid
    _publish(engine, body)
    with pytest.raises(SubmissionInvalid) as caught, transaction(engine) as session:
        submit(session, form_key="fruit", answers={"fruit": ["fig"],
                                                   "parent_checkbox": ["fig", "plum"]},
               patient_id="p1", channel="web", locale="en")
    assert [(e["path"], e["code"]) for e in caught.value.errors] == [
        ("parent_checkbox[1]", "forms.choice")]
    with transaction(engine) as session:
        submit(session, form_key="fruit", answers={"fruit": ["fig", "plum"],
                                                   "parent_checkbox": ["plum"]},
               patient_id="p1", channel="web", locale="en")
    [row] = _stored(engine)
    assert row.answers == {"fruit": ["fig", "plum"], "parent_checkbox": ["plum"]}


def _clock_form() -> dict[str, Any]:
    return {"resourceType": "Questionnaire", "status": "active", "language": "en",
            "url": "http://example.org/Questionnaire/seen-today", "title": "Seen",
            "item": [
                {"linkId": "seen", "type": "date", "text": "Date seen", "extension": [{
                    "url": SDC + "sdc-questionnaire-initialExpression",
                    "valueExpression": {"language": "text/fhirpath", "expression": "today()"}}]},
                {"linkId": "slot", "type": "date", "text": "Follow-up day", "extension": [{
                    "url": SDC + "sdc-questionnaire-answerExpression",
                    "valueExpression": {"language": "text/fhirpath", "expression":
                                        "today() + 7 days | today() + 14 days"}}]}]}


def test_initial_value_from_the_clock_is_the_hospitals_local_date(
        engine: Engine, client: TestClient, patient: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    body, notes = import_questionnaire(_clock_form(), "seen")
    assert notes == []
    fields = {f["key"]: f for f in body["fields"]}
    assert fields["seen"]["default_fhirpath"] == {"expression": "today()"}
    assert "default" not in fields["seen"]                     # not fixed at import
    assert fields["slot"]["choices_fhirpath"]["expression"].startswith("today()")
    _publish(engine, body)
    # the clock at half past midnight in the hospital: UTC (and the machine) still yesterday
    local = to_local(now_utc()).replace(hour=0, minute=30, second=0, microsecond=0)
    shift = (local.astimezone(UTC) - wall_clock_utc()).total_seconds()
    monkeypatch.setenv(OFFSET_ENV, f"{shift:+.3f}")
    today = to_local(now_utc()).date()
    if to_local(now_utc()).utcoffset():      # east of UTC: the UTC date is still yesterday
        assert now_utc().date() != today
    page = client.get(_link(engine, "seen") + "?lang=en").text
    assert f'value="{today.isoformat()}"' in page
    week = (today + timedelta(days=7)).isoformat()
    assert f'data-choice="{week}"' in page
    spec = form_from_yaml(yaml.safe_dump(body))
    assert evaluate(spec, {"seen": today.isoformat(), "slot": week}).valid
    assert not evaluate(spec, {"slot": (today + timedelta(days=8)).isoformat()}).valid


def test_export_writes_the_expressions_back_and_round_trips() -> None:
    for name, key in (("lforms-answerexp.json", "answer_expr"),
                      ("lforms-answerexpchild.json", "fruit"),
                      ("lforms-initialexpr2values.json", "ae"), (None, "seen")):
        source = _corpus(name) if name else _clock_form()
        body, notes = import_questionnaire(source, key)
        assert body["import"]["unresolved"] == [], (name, notes)
        spec = form_from_yaml(yaml.safe_dump(body))
        exported = export_questionnaire(spec, locale=spec.default_locale)
        Questionnaire.model_validate(exported)
        again, notes = import_questionnaire(exported, key)
        assert notes == [] and again == body, name
        twice = export_questionnaire(form_from_yaml(yaml.safe_dump(again)),
                                     locale=spec.default_locale)
        assert twice == exported, name
    body, _ = import_questionnaire(_corpus("lforms-answerexp.json"), "answer_expr")
    spec = form_from_yaml(yaml.safe_dump(body))
    exported = export_questionnaire(spec, locale=spec.default_locale)
    choice = next(i for i in exported["item"] if i["linkId"] == "q1ListChoice")
    assert "answerOption" not in choice and choice["extension"] == [
        {"url": SDC + "sdc-questionnaire-answerExpression", "valueExpression": {
            "language": "text/fhirpath",
            "expression": "%resource.item.where(linkId='q1').answer.value"}}]
    response = export_response(spec, {"q1": ["apple"], "q1listchoice": "apple"},
                               patient_id="p1", authored="2026-03-01")
    QuestionnaireResponse.model_validate(response)
    assert response["item"][1] == {"linkId": "q1ListChoice",
                                   "answer": [{"valueCoding": {"code": "apple"}}]}


@pytest.mark.parametrize(("expression", "reason"), [
    ("%resource.item.answer.value | %questionnaire.item.text", "reads %questionnaire"),
    ("%patient.name.given", "reads %patient"),
])
def test_computed_choices_that_cannot_be_carried_are_refused(expression: str,
                                                            reason: str) -> None:
    item = {"linkId": "g", "type": "group", "repeats": True, "item": [
        {"linkId": "n", "type": "string", "text": "N"},
        {"linkId": "c", "type": "choice", "text": "C", "extension": [{
            "url": SDC + "sdc-questionnaire-answerExpression",
            "valueExpression": {"language": "text/fhirpath", "expression": expression}}]}]}
    _, notes = import_questionnaire({"resourceType": "Questionnaire", "status": "active",
                                     "item": [item]}, "x")
    assert len(notes) == 1 and reason in notes[0], notes
    in_group = {**item, "item": [item["item"][0], {**item["item"][1], "extension": [{
        "url": SDC + "sdc-questionnaire-answerExpression", "valueExpression": {
            "language": "text/fhirpath", "expression": "%resource.item.answer.value"}}]}]}
    _, notes = import_questionnaire({"resourceType": "Questionnaire", "status": "active",
                                     "item": [in_group]}, "x")
    assert len(notes) == 1 and "inside a repeating group" in notes[0], notes


def test_computed_codings_keep_their_system_and_display_in_the_response() -> None:
    colors = "http://example.org/colors"
    source = {"resourceType": "Questionnaire", "status": "active", "language": "en",
              "item": [
                  {"linkId": "liked", "type": "choice", "repeats": True, "text": "Liked",
                   "answerOption": [
                       {"valueCoding": {"system": colors, "code": "b", "display": "blue"}},
                       {"valueCoding": {"system": colors, "code": "g", "display": "green"}}]},
                  {"linkId": "best", "type": "choice", "text": "Best of them", "extension": [{
                      "url": SDC + "sdc-questionnaire-answerExpression",
                      "valueExpression": {"language": "text/fhirpath", "expression":
                                          "%resource.item.where(linkId='liked').answer.value"}}]}]}
    body, notes = import_questionnaire(source, "colours")
    assert notes == []
    spec = form_from_yaml(yaml.safe_dump(body))
    result = evaluate(spec, {"liked": ["g"], "best": "g"}, locale="en")
    assert result.valid and [c.code for c in result.fields["best"].choices] == ["g"]
    assert dict(result.fields["best"].choices[0].label)["en"] == "green"
    assert not evaluate(spec, {"liked": ["g"], "best": "b"}, locale="en").valid
    response = export_response(spec, result.answers, patient_id="p1", authored="2026-03-01")
    QuestionnaireResponse.model_validate(response)
    assert response["item"][1]["answer"] == [
        {"valueCoding": {"system": colors, "code": "g", "display": "green"}}]
