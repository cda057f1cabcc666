"""FHIR and REDCap: import, ``careloop form test``, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from careloop.engine.cli import cli
from careloop.engine.registry import loaded_registry
from careloop.forms.fhir import export_questionnaire, export_response, key_from_link_id
from careloop.forms.logic import evaluate
from careloop.forms.redcap import import_dictionary, translate_logic
from careloop.forms.testing import form_from_yaml

DATA = Path(__file__).resolve().parent / "data"
APPS = Path(__file__).resolve().parents[2] / "app_definitions"


def _run(*args: str) -> tuple[int, str]:
    loaded_registry()
    from careloop.engine.cli import _add_engine_commands

    _add_engine_commands()
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_phq9_sample_import_then_test_gives_total_and_band(tmp_path: Path) -> None:
    out = tmp_path / "phq9.yaml"
    code, text = _run("form", "import-fhir", str(DATA / "Questionnaire-phq-9-example.json"),
                      "-o", str(out), "--key", "phq9_fhir")
    assert code == 0, text
    body = yaml.safe_load(out.read_text("utf-8"))
    first = body["fields"][0]
    assert (first["key"], first["link_id"], first["code"]["code"]) == (
        "q_44250_9", "/44250-9", "44250-9")
    assert first["choices"][2] == {"code": "LA6570-1", "label": {"en": "More than half the days"},
                                   "score": 2.0}
    code, text = _run("form", "test", str(out), "--answers",
                      str(DATA / "QuestionnaireResponse-phq-9-example.json"), "--format", "json")
    result = json.loads(text)
    assert code == 0 and result["valid"] is True
    assert result["scores"] == {"q_44261_6": 12.0}
    assert result["bands"] == {"q_44261_6": "moderate"}
    assert result["warnings"] == [] and result["reported_total"] == 12


def test_a_response_whose_total_disagrees_is_flagged(tmp_path: Path) -> None:
    out = tmp_path / "phq9.yaml"
    _run("form", "import-fhir", str(DATA / "Questionnaire-phq-9-example.json"), "-o", str(out))
    response = json.loads((DATA / "QuestionnaireResponse-phq-9-example.json").read_text())
    for item in response["item"]:
        if item["linkId"] == "/44261-6":
            item["answer"] = [{"valueDecimal": 15}]
    tampered = tmp_path / "qr.json"
    tampered.write_text(json.dumps(response))
    code, text = _run("form", "test", str(out), "--answers", str(tampered), "--locale", "en")
    assert code == 0
    assert "warning: the response reports total 15 but its answers give 12.0" in text
    assert "score q_44261_6 = 12.0 [moderate]" in text


def test_form_test_with_answers_json_reports_errors_and_exits_1(tmp_path: Path) -> None:
    answers = tmp_path / "a.json"
    answers.write_text(json.dumps({"q1": "3", "q2": "9"}))
    code, text = _run("form", "test", str(APPS / "mental_health/forms/phq9.yaml"),
                      "--answers", str(answers), "--format", "json", "--locale", "en")
    result = json.loads(text)
    assert code == 1 and result["valid"] is False
    assert {e["path"] for e in result["errors"]} == {"q2", "q3", "q4", "q5", "q6", "q7", "q8",
                                                      "q9"}


def test_link_id_rule() -> None:
    assert [key_from_link_id(x) for x in ("/44250-9", "Q1.a", "__", "Pain Score")] == [
        "q_44250_9", "q1_a", "q_", "pain_score"]


def test_redcap_dictionary_is_translated_and_untranslatable_parts_reported() -> None:
    body, notes = import_dictionary((DATA / "redcap_followup.csv").read_text("utf-8"),
                                    "redcap_followup")
    fields = {f["key"]: f for f in body["fields"]}
    assert fields["smoker"]["choices"] == [{"code": "1", "label": {"en": "Yes"}},
                                           {"code": "0", "label": {"en": "No"}}]
    assert fields["cigarettes"]["visible_if"] == "answers.smoker == '1'"
    assert (fields["cigarettes"]["type"], fields["cigarettes"]["min"]) == ("integer", 1)
    assert fields["bmi"]["calculate"] == "answers.weight / (answers.height * answers.height)"
    assert fields["fever_days"]["visible_if"] == "'2' in answers.symptoms"
    assert fields["visit"]["type"] == "date"
    # zipcode and datediff are now carried; only the record ID is noted (not asked)
    assert fields["zip"]["pattern"] == "[0-9]{5}(-[0-9]{4})?"
    assert fields["odd_calc"]["calculate"] == "datediff(answers.visit, today(), 'd', False)"
    assert fields["notes"]["type"] == "long_text" and "record_id" not in fields
    # the record ID is not asked; a range REDCap only warns about is refused here (noted)
    assert [n.split(":")[0] for n in notes] == ["line 2, Variable / Field Name"] + [
        f"line {n}, Text Validation Min" for n in (4, 5, 6)]
    assert all("only warns on a data entry form" in n for n in notes[1:])
    assert body["import"] == {"source": "redcap", "unresolved": []}
    spec = form_from_yaml(yaml.safe_dump(body))
    result = evaluate(spec, {"smoker": "0", "cigarettes": 10, "weight": 80, "height": 2,
                             "symptoms": ["2"], "fever_days": 3}, locale="en")
    assert result.valid
    assert result.answers["bmi"] == 20.0 and "cigarettes" not in result.answers
    assert result.answers["fever_days"] == 3


def test_translate_logic_operators() -> None:
    assert translate_logic("[a] <> '2' or [b] >= 3", {"b": "number"}) == (
        "answers.a != '2' or answers.b >= 3")


def test_export_questionnaire_and_response_round_trip() -> None:
    spec = form_from_yaml((APPS / "satisfaction/forms/inpatient_satisfaction.yaml").read_text())
    questionnaire = export_questionnaire(spec, locale="en")
    items = {i["linkId"]: i for i in questionnaire["item"]}
    assert questionnaire["resourceType"] == "Questionnaire"
    assert items["overall"]["type"] == "integer" and items["overall"]["required"] is True
    assert [i["linkId"] for i in items["touchpoints"]["item"]][:2] == [
        "touchpoints.admission", "touchpoints.nursing"]
    response = export_response(spec, {"overall": 4, "nps": 9, "touchpoints": {"food": "3"}},
                               patient_id="p1", authored="2026-03-01T08:00:00+08:00")
    assert response["subject"] == {"reference": "Patient/p1"}
    assert response["item"][0] == {"linkId": "overall", "answer": [{"valueInteger": 4}]}
    assert response["item"][2]["item"][0]["answer"] == [{"valueCoding": {"code": "3"}}]


def test_a_field_type_without_a_fhir_mapping_is_an_export_error() -> None:
    """Never a silent string: a field whose type declares no FHIR item type (or is no longer
    registered) makes the export fail with a message naming the field."""
    from careloop.forms.fhir import FhirExportError
    from careloop.forms.spec import FieldSpec, FormSpec

    spec = FormSpec(key="x", title={"en": "X"}, default_locale="en",
                    fields=(FieldSpec(key="q", type="uninstalled_scale"),))
    with pytest.raises(FhirExportError, match=r"field 'q'.*'uninstalled_scale'"):
        export_questionnaire(spec)
    with pytest.raises(FhirExportError):
        export_response(spec, {"q": 3}, patient_id="p1", authored="2026-03-01")
