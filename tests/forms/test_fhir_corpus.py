"""FHIR corpus: every public Questionnaire under data/fhir_corpus imports; what it carries
validates, answers its own example response, computes each score as the instrument's
published scoring does (server-side FHIRPath inside Careloop's limits), exports as R4 that
``fhir.resources`` accepts and re-imports to the same form. What it cannot carry is a located
refusal that blocks publishing. See data/fhir_corpus/SOURCES.txt."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from sqlalchemy import Engine, select

from careloop.engine.clock import hospital_tz
from careloop.engine.db import transaction
from careloop.engine.errors import DefinitionInvalid
from careloop.engine.limits import LimitExceeded
from careloop.forms import fhirpath
from careloop.forms.fhir import (
    export_questionnaire,
    export_response,
    import_questionnaire,
    read_response,
)
from careloop.forms.fhir_import import _REFUSED, LAYOUT
from careloop.forms.logic import evaluate
from careloop.forms.models import Submission
from careloop.forms.publish import publish_form
from careloop.forms.runtime import submit
from careloop.forms.spec import FormSpec
from careloop.forms.testing import form_from_yaml
from tests.forms.corpus_tally import record

DATA = Path(__file__).resolve().parent / "data" / "fhir_corpus"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "forms.md"
LOCATED = re.compile(r"^(item\[\d+\](\.[A-Za-z_]+(\[[^\]]+\])?)*|extension\[[^\]]+\]|language"
                     r"|modifierExtension|[a-z_]+)(\.[A-Za-z_]+(\[[^\]]+\])?)*$")

#: the Questionnaires Careloop carries whole (nothing refused); every other one must refuse
CARRIED = {
    "hl7-phq-9-example.json", "lforms-answerexp.json", "lforms-answerexpchild.json",
    "lforms-initialexpr2values.json", "lforms-answeroption-date.json",
    "lforms-answeroption-integer.json", "lforms-answeroption-time.json", "lforms-apgar.json",
    "lforms-autocomplete.json",
    "lforms-checkboxchild.json", "lforms-containednoexp.json", "lforms-containedvs.json",
    "lforms-daterepeat.json", "lforms-deep3.json", "lforms-deep4.json",
    "lforms-dropdownchild.json", "lforms-enablewhen-r4.json", "lforms-enablewhenexpr.json",
    "lforms-entryformat.json", "lforms-groupunderq.json", "lforms-hiddenitem.json",
    "lforms-hiddenwo.json", "lforms-initialchildren.json", "lforms-itemweight.json",
    "lforms-matrixinitial.json", "lforms-minmax.json", "lforms-nestedenable.json",
    "lforms-openlabel.json", "lforms-quantityinitial.json", "lforms-questionunderquestion.json",
    "lforms-radiocheckbox.json",
    "lforms-readonly.json", "lforms-refloop.json", "lforms-scoresxhtml.json",
    "lforms-testenablewhen.json", "lforms-underrepeatingchoice.json", "lforms-vsmatrix.json",
    "spec-f201-lifelines.fhir.json", "spec-gcs.fhir.json",
}
#: example responses the corpus ships, answered by the Questionnaire they belong to
RESPONSES = [("hl7-phq-9-example.json", "hl7-phq-9-example.qr.json"),
             ("lforms-hiddenitem.json", "lforms-hiddenitem.qr.json"),
             ("lforms-radiocheckbox.json", "lforms-radiocheckbox.qr.json"),
             ("spec-gcs.fhir.json", "spec-gcs.qr.json"),
             ("lforms-underrepeatingchoice.json", "lforms-underrepeatingchoice.qr.json"),
             ("lforms-readonly.json", "lforms-readonly.qr.json"),
             ("lforms-vsmatrix.json", "lforms-vsmatrix.qr.json"),
             ("lforms-autocomplete.json", "lforms-autocomplete.qr.json")]


def questionnaires() -> list[Path]:
    return sorted(p for p in DATA.glob("*.json")
                  if json.loads(p.read_text("utf-8")).get("resourceType") == "Questionnaire")


def _key(path: Path) -> str:
    return re.sub(r"[^a-z0-9]+", "_", path.stem.lower()).strip("_")[:60]


def _spec(body: dict[str, Any]) -> FormSpec:
    """The form as it compiles once the author resolved every refusal (to check the rest)."""
    return form_from_yaml(yaml.safe_dump({**body, "import": {"source": "fhir", "unresolved": []}},
                                         allow_unicode=True, sort_keys=False))


def _check(path: Path) -> tuple[bool, list[str]]:
    source = json.loads(path.read_text("utf-8"))
    body, notes = import_questionnaire(source, _key(path))
    refused = body["import"]["unresolved"]
    for entry in refused:
        assert LOCATED.match(entry["field"]), (path.name, entry)
    assert len([n for n in notes if ": refused: " in n]) == len(refused)
    text = yaml.safe_dump(body, allow_unicode=True, sort_keys=False)
    if refused:  # blocks publishing, one located problem per refusal
        with pytest.raises(DefinitionInvalid) as caught:
            form_from_yaml(text)
        codes = [p.code for p in caught.value.problems]
        assert codes.count("form.import-unresolved") == len(refused), caught.value.problems
        assert set(codes) == {"form.import-unresolved"}, caught.value.problems
        spec = _spec(body)
    else:
        spec = form_from_yaml(text)
    exported = export_questionnaire(spec, locale=spec.default_locale)
    Questionnaire.model_validate(exported)
    again, _ = import_questionnaire(exported, _key(path))
    if refused:
        again.pop("import")
        body = {k: v for k, v in body.items() if k != "import"}
    assert again == body, path.name
    return not refused, [n for n in notes if ": refused: " in n]


def test_corpus_imports_validates_exports_and_round_trips() -> None:
    files = questionnaires()
    assert len(files) >= 40
    carried, refused, failed = [], [], []
    for path in files:
        try:
            whole, _notes = _check(path)
            assert whole == (path.name in CARRIED), f"claimed {'whole' if not whole else 'refused'}"
        except AssertionError as exc:
            failed.append(f"{path.name}: {exc}")
            record("fhir", path.name, "silent loss")
            continue
        (carried if whole else refused).append(path.name)
        record("fhir", path.name, "whole" if whole else "refused loudly")
    passed = len(carried) + len(refused)
    print(f"\nFHIR corpus: {len(files)} public Questionnaires; as claimed: {passed}/{len(files)} "
          f"({100 * passed // len(files)} %): {len(carried)} carried whole, {len(refused)} "
          "refused loudly (located, not publishable); every one exports valid R4 and "
          "import → export → import is a fixpoint")
    assert not failed, "\n".join(failed)


def _body(name: str) -> dict[str, Any]:
    body, _ = import_questionnaire(json.loads((DATA / name).read_text("utf-8")), _key(DATA / name))
    return body


def _response(spec: FormSpec, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return read_response(spec, json.loads((DATA / name).read_text("utf-8")))


def test_example_responses_are_accepted_with_nothing_dropped() -> None:
    for questionnaire, response in RESPONSES:
        spec = _spec(_body(questionnaire))
        answers, reported = _response(spec, response)
        result = evaluate(spec, answers, locale="en")
        assert result.valid, (questionnaire, result.errors)
        assert set(answers) <= set(result.answers), (questionnaire, answers, result.answers)
        for key, value in reported.items():  # every value the response reports, computed
            assert result.scores[key] == pytest.approx(float(value)), (questionnaire, key)
        out = export_response(spec, result.answers, patient_id="p1",
                              authored="2026-03-01T08:00:00+08:00", scores=result.scores)
        QuestionnaireResponse.model_validate(out)
        again = evaluate(spec, read_response(spec, out)[0], locale="en")
        assert again.answers == result.answers and again.scores == result.scores, questionnaire
    # The spec's own example answers two boolean items with text ("No, but I used to drink"):
    # refused where it is wrong, never coerced.
    spec = _spec(_body("spec-f201-lifelines.fhir.json"))
    result = evaluate(spec, _response(spec, "spec-f201-lifelines.qr.json")[0], locale="en")
    assert [(e["path"], e["code"]) for e in result.errors] == [
        ("q_3_1", "forms.choice"), ("q_3_2", "forms.choice")]
    radio = _spec(_body("lforms-radiocheckbox.json"))
    answers, _ = _response(radio, "lforms-radiocheckbox.qr.json")
    assert answers["yesno5"] == {"code": "other", "other": "offlist answer 1"}
    assert answers["yesno6"] == ["Y", {"code": "other", "other": "offlist answer 2 checkbox"}]
    assert answers["yesno2"] == ["N", "Y"]


def apgar(signs: list[int]) -> int:
    """Apgar (1953): five signs scored 0, 1 or 2, summed (0–10)."""
    return sum(signs)


def test_scores_equal_the_published_scoring() -> None:
    # Apgar, weights from itemWeight, FHIRPath variables, only when all five are answered
    spec = _spec(_body("lforms-apgar.json"))
    codes = [[c.code for c in f.choices] for f in spec.fields]
    for signs in ([0, 0, 0, 0, 0], [1, 2, 1, 1, 2], [2, 2, 2, 2, 2]):
        answers = {f.key: codes[i][s] for i, (f, s) in enumerate(zip(spec.fields, signs,
                                                                     strict=True))}
        assert evaluate(spec, answers).scores["q_9272_6"] == apgar(signs)
    partial = {spec.fields[0].key: codes[0][2]}
    assert evaluate(spec, partial).scores["q_9272_6"] is None
    # BMI: kg / m², height in inches; the form truncates to one decimal
    spec = _spec(_body("lforms-weightheight.json"))
    result = evaluate(spec, {"q_29463_7": 70, "q_8302_2": 69})
    metres = 69 * 0.0254
    assert result.scores["q_39156_5"] == pytest.approx(math.floor(70 / metres ** 2 * 10) / 10)
    # PHQ-9 (Kroenke 2001): item scores 0–3 summed, banded
    spec = _spec(_body("hl7-phq-9-example.json"))
    answers, reported = _response(spec, "hl7-phq-9-example.qr.json")
    result = evaluate(spec, answers)
    assert result.scores["q_44261_6"] == 12 == reported["q_44261_6"]
    assert result.bands["q_44261_6"] == "moderate"
    # weight() over answers from a contained value set (two code systems, same codes)
    for name in ("lforms-containedvs.json", "lforms-itemweight.json"):
        spec = _spec(_body(name))
        first, second = (f for f in spec.fields if f.choices)
        answers = {first.key: first.choices[2].code, second.key: second.choices[1].code}
        expected = (first.choices[2].score or 0) + (second.choices[1].score or 0)
        assert evaluate(spec, answers).scores["link_2"] == expected == 12


def test_structure_is_carried() -> None:
    nested = {f["key"]: f for f in _body("lforms-nestedenable.json")["fields"]}
    assert nested["c1"]["visible_if"] == "answers.p1 == 'YES'"
    assert nested["d1"]["visible_if"] == "(answers.p1 == 'YES') and (answers.c1 != 'A')"
    spec = _spec(_body("lforms-nestedenable.json"))
    assert evaluate(spec, {"p1": "NO", "c1": "B", "d1": "x"}).answers == {"p1": "NO"}
    assert evaluate(spec, {"p1": "YES", "c1": "B", "d1": "x"}).answers["d1"] == "x"
    group = _body("lforms-daterepeat.json")["fields"][0]
    assert group["type"] == "repeat_group" and [f["key"] for f in group["fields"]] == [
        "x11", "x12", "x13"]
    spec = _spec(_body("lforms-daterepeat.json"))
    rows = [{"x11": "2026-03-01", "x12": "2026-03-01T08:30", "x13": "a"}, {"x13": "b"}]
    result = evaluate(spec, {"x1": rows})
    out = export_response(spec, result.answers, patient_id="p1", authored="2026-03-01")
    QuestionnaireResponse.model_validate(out)
    assert [i["linkId"] for i in out["item"]] == ["X1", "X1"]     # one item per row
    local = datetime(2026, 3, 1, 8, 30, tzinfo=hospital_tz()).isoformat()  # +08:00 in Shanghai
    assert out["item"][0]["item"][1]["answer"] == [{"valueDateTime": local}]
    assert read_response(spec, out)[0] == result.answers
    deep = _body("lforms-deep3.json")
    assert [f["key"] for f in deep["fields"]] == ["level1", "level2", "level3"]
    assert deep["fhir"]["items"] == {"level2": {"parent": "level1"},
                                     "level3": {"parent": "level2"}}
    minmax = _body("lforms-minmax.json")["fields"][0]
    assert (minmax["min_items"], minmax["max_items"], minmax["fields"][0]["min_selected"]) == (
        2, 3, 2)
    assert minmax["fields"][0]["choices"][0] == {"code": "Apple", "label": {"en": "Apple"}}
    radio = {f["key"]: f for f in _body("lforms-radiocheckbox.json")["fields"]}
    assert [c["code"] for c in radio["yesno1"]["choices"]] == ["N", "Y", "asked-unknown"]
    assert radio["yesno1"]["display"] == "radio" and radio["yesno2"]["type"] == "multiple_choice"
    when = {f["key"]: f for f in _body("lforms-testenablewhen.json")["fields"]}
    assert when["q_4_2"]["choices"][0]["code"] == "Insulin_Treated"  # FHIR value kept in fhir
    assert when["q_4_4"]["visible_if"] == "answers.q_4_3 != None"


def test_refusals_are_located_and_named() -> None:
    notes = import_questionnaire(json.loads((DATA / "lforms-weightheight.json").read_text()))[1]
    assert notes == [f"item[{i}].extension[sdc-questionnaire-observationLinkPeriod]: refused: "
                     "pre-population from earlier Observations" for i in (0, 2)]
    blood = import_questionnaire(json.loads((DATA / "lforms-bloodpressure.json").read_text()))
    assert not [n for n in blood[1] if ".initial" in n]
    fields = {f["key"]: f for f in blood[0]["fields"]}
    assert (fields["q_202279616184"]["unit"], fields["q_202279616184"]["units"]) == (
        "mm[Hg]", ["mm[Hg]"])
    assert fields["q_202279616184"]["default"] == {"value": 120, "unit": "mm[Hg]"}
    # an initial 1.8 m on a field measured in cm or mm: the same length, in the field's unit
    height = _body("lforms-quantityinitial.json")["fields"][1]
    assert (height["units"], height["default"]) == (["cm", "mm"], {"value": 180.0, "unit": "cm"})


def _zh_questionnaire() -> dict[str, Any]:
    translation = "http://hl7.org/fhir/StructureDefinition/translation"
    phq = "http://loinc.org/vs/LL358-3"
    return {"resourceType": "Questionnaire", "status": "active", "language": "zh-CN",
            "url": "http://example.org/Questionnaire/phq2", "title": "PHQ-2",
            "item": [
                {"linkId": f"q{i}", "type": "choice", "answerValueSet": phq,
                 "text": text, "_text": {"extension": [{"url": translation, "extension": [
                     {"url": "lang", "valueCode": "en"}, {"url": "content", "valueString": en}]}]}}
                for i, (text, en) in enumerate([("做事时提不起劲或没有兴趣", "Little interest"),
                                                ("感到心情低落、沮丧或绝望", "Feeling down")], 1)]
            + [{"linkId": "total", "type": "integer", "readOnly": True, "extension": [{
                "url": "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
                       "sdc-questionnaire-calculatedExpression",
                "valueExpression": {"language": "text/fhirpath",
                                    "expression": "%resource.item.answer.weight().sum()"}}]},
               {"linkId": "why", "type": "string", "enableWhen": [
                   {"question": "q1", "operator": "=", "answerCoding": {"code": "LA6571-9"}}]}]}


def test_languages_value_set_catalogue_and_runtime(engine: Engine, patient: str) -> None:
    body, notes = import_questionnaire(_zh_questionnaire(), "phq2_zh")
    assert notes == [] and body["default_locale"] == "zh-CN"
    first = body["fields"][0]
    assert first["label"] == {"zh-CN": "做事时提不起劲或没有兴趣", "en": "Little interest"}
    assert [c["score"] for c in first["choices"]] == [0, 1, 2, 3]   # LL358-3, offline
    spec = form_from_yaml(yaml.safe_dump(body, allow_unicode=True))
    exported = export_questionnaire(spec, locale="zh-CN")
    Questionnaire.model_validate(exported)
    assert exported["url"] == "http://example.org/Questionnaire/phq2"
    assert import_questionnaire(exported, "phq2_zh")[0] == body
    with transaction(engine) as session:
        publish_form(session, yaml.safe_dump(body, allow_unicode=True),
                     source_path="fhir/phq2_zh.yaml", actor="tester")
    with transaction(engine) as session:
        stored, _ = submit(session, form_key="phq2_zh", patient_id=patient, locale="zh-CN",
                           answers={"q1": "LA6571-9", "q2": "LA6569-3", "why": "累"})
    with transaction(engine) as session:
        row = session.scalars(select(Submission).where(Submission.id == stored.id)).one()
        assert dict(row.scores) == {"total": 4.0} and row.answers["why"] == "累"
    out = export_response(spec, row.answers, patient_id="p1", authored="2026-03-01",
                          scores=row.scores)
    QuestionnaireResponse.model_validate(out)
    assert out["questionnaire"] == "http://example.org/Questionnaire/phq2"
    assert out["item"][2] == {"linkId": "total", "answer": [{"valueInteger": 4}]}


def test_unresolvable_value_set_refuses_and_bundle_resolves() -> None:
    q = {"resourceType": "Questionnaire", "status": "active",
         "item": [{"linkId": "a", "type": "choice",
                   "answerValueSet": "http://example.org/ValueSet/pain"}]}
    body, notes = import_questionnaire(q, "vs")
    assert notes[0].startswith("item[0].answerValueSet: refused: value set "
                               "'http://example.org/ValueSet/pain' is neither contained")
    vs = {"resourceType": "ValueSet", "url": "http://example.org/ValueSet/pain",
          "compose": {"include": [{"system": "http://example.org/cs", "concept": [
              {"code": "none", "display": "None"}, {"code": "bad", "display": "Bad"}]}]}}
    body, notes = import_questionnaire(q, "vs", bundle=[vs])
    assert notes == [] and [c["code"] for c in body["fields"][0]["choices"]] == ["none", "bad"]


def test_multi_select_condition_is_contains() -> None:
    q = {"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "sym", "type": "choice", "repeats": True, "answerOption": [
            {"valueCoding": {"code": "fever"}}, {"valueCoding": {"code": "cough"}}]},
        {"linkId": "days", "type": "integer", "enableWhen": [
            {"question": "sym", "operator": "=", "answerCoding": {"code": "fever"}}]}]}
    body, _ = import_questionnaire(q, "ms")
    assert body["fields"][1]["visible_if"] == "'fever' in answers.sym"
    spec = form_from_yaml(yaml.safe_dump(body))
    assert evaluate(spec, {"sym": ["cough"], "days": 3}).answers == {"sym": ["cough"]}
    assert evaluate(spec, {"sym": ["fever"], "days": 3}).answers["days"] == 3
    assert export_questionnaire(spec, locale="en")["item"][1]["enableWhen"] == [
        {"question": "sym", "operator": "=", "answerCoding": {"code": "fever"}}]


def test_fhirpath_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    for broken in ("1 +", "(1", "a.where(", "1 + )", "x..y"):
        assert str(fhirpath.check_expression(broken)).startswith("not FHIRPath"), broken
    assert "expr_length" in str(fhirpath.check_expression("1+" * 1500 + "1"))
    monkeypatch.setattr(fhirpath, "FHIRPATH_CALLS", 20_000)
    started = time.monotonic()
    with pytest.raises(LimitExceeded):
        fhirpath.evaluate("(1|2|3|4|5|6|7|8|9).combine(1|2|3|4|5|6|7|8|9).combine("
                          "1|2|3|4|5|6|7|8|9).repeat($this).select($this * 2).aggregate("
                          "$total + $this, 0)", {"resourceType": "Basic"}, {})
    assert time.monotonic() - started < 10


def test_form_test_never_calls_an_uncomputed_value_valid(tmp_path: Path) -> None:
    from careloop.engine.cli import _add_engine_commands, cli
    from careloop.engine.registry import loaded_registry

    loaded_registry()
    _add_engine_commands()
    body = _body("lforms-apgar.json")
    form = tmp_path / "apgar.yaml"
    form.write_text(yaml.safe_dump(body, allow_unicode=True))
    response = tmp_path / "qr.json"   # reports a total, but only one sign is answered
    response.write_text(json.dumps({"resourceType": "QuestionnaireResponse", "item": [
        {"linkId": "32406-1", "answer": [{"valueCoding": {"code": "LA6724-4"}}]},
        {"linkId": "9272-6", "answer": [{"valueDecimal": 10}]}]}))
    result = CliRunner().invoke(cli, ["form", "test", str(form), "--answers", str(response),
                                      "--format", "json", "--locale", "en"])
    out = json.loads(result.output)
    assert result.exit_code == 1 and out["valid"] is False
    assert out["errors"][0]["code"] == "forms.score_not_computed"
    refused = CliRunner().invoke(cli, ["form", "import-fhir",
                                       str(DATA / "lforms-weightheight.json"),
                                       "-o", str(tmp_path / "e.yaml")])
    assert refused.exit_code == 1
    assert "lforms-weightheight.json:item[0].extension[sdc-questionnaire-observationLink" \
           "Period]: refused" in refused.output


def test_docs_list_every_extension() -> None:
    text = DOCS.read_text("utf-8")
    table = text[text.index("### FHIR SDC features"):]
    for url in LAYOUT:
        assert f"`{url.rsplit('/', 1)[-1]}`" in table, url
    for name in _REFUSED:
        assert f"`{name}`" in table, name


def test_every_shipped_form_exports_valid_r4() -> None:
    apps = Path(__file__).resolve().parents[2] / "app_definitions"
    files = sorted(apps.glob("*/forms/*.yaml"))
    assert files
    for path in files:
        spec = form_from_yaml(path.read_text("utf-8"), str(path))
        for locale in ("zh-CN", "en"):
            exported = export_questionnaire(spec, locale=locale)
            Questionnaire.model_validate(exported)
            assert "null" not in json.dumps(exported) and "_" not in exported["id"], path
