"""Every field type: a table of valid and invalid inputs, rendering, and stored shape."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry
from careloop.forms.fields import BUILTIN_FIELD_TYPES, PNG_PREFIX
from careloop.forms.logic import evaluate
from careloop.forms.models import SubmissionAnswer
from careloop.forms.pages import pages_of, render_page
from careloop.forms.runtime import submit
from careloop.forms.spec import FieldSpec, FormSpec
from careloop.forms.testing import form_from_yaml

EVERY = Path(__file__).resolve().parents[1] / "definitions/valid/form/every_field_type.yaml"
SPEC: FormSpec = form_from_yaml(EVERY.read_text("utf-8"), str(EVERY))


def _field_of_type(name: str) -> FieldSpec:
    for item in SPEC.fields:
        if item.type == name:
            return item
        for sub in item.fields:
            if sub.type == name:
                return sub
    raise LookupError(name)


# Per type: (valid input, stored value) and invalid inputs — on the every_field_type form.
TABLE: dict[str, tuple[list[tuple[Any, Any]], list[Any]]] = {
    "short_text": ([("  王芳 ", "王芳")], [12, "x" * 51]),
    "long_text": ([("用药说明不清楚", "用药说明不清楚")], [["a"]]),
    "integer": ([("42", 42), (0, 0)], ["4.5", "abc", 121, -1, True]),
    "decimal": ([("36.5", 36.5), (37, 37.0)], ["x", 33.9, 36.55, True]),
    "email": ([("Li@Example.cn", "li@example.cn")], ["not-an-email", "a@b"]),
    "mobile": ([("13800138000", "13800138000"), ("+86 138-0013-8000", "13800138000")],
               ["12800138000", "1380013800", 13800138000]),
    "resident_id": ([("11010519491231002x", "11010519491231002X")],
                    ["110105194912310021", "123"]),
    "date": ([("2026-03-01", "2026-03-01")], ["2026-02-30", "01/03/2026", 20260301]),
    "time": ([("08:30", "08:30")], ["25:00", "8h"]),
    "datetime": ([("2026-03-01T08:30", "2026-03-01T08:30:00")], ["yesterday"]),
    "single_choice": ([("a", "a"), ({"code": "other", "other": "自填"},
                                     {"code": "other", "other": "自填"})],
                      ["zzz", True, {"code": "other", "other": ""}]),
    "multiple_choice": ([(["b", "a"], ["a", "b"]), ("none", ["none"])],
                        [["a", "none"], ["zzz"], 5]),
    "yes_no": ([("yes", "yes"), (False, "no")], ["maybe"]),
    "rating": ([(5, 5), ("3", 3)], [0, 6, "x"]),
    "nps": ([(0, 0), (10, 10)], [11, -1, "x"]),
    "slider": ([(7, 7), ("3", 3)], [11, -1]),
    "likert_matrix": ([({"r1": "5", "r2": "1"}, {"r1": "5", "r2": "1"}), ({"r1": 5}, None)],
                      [{"nope": "5"}, {"r1": "9"}, "5"]),
    "ranking": ([(["b", "a"], ["b", "a"])], [["a", "a"], ["a"], ["a", "z"]]),
    "file": ([({"sha256": "a" * 64, "content_type": "image/png", "size": 10},
               {"sha256": "a" * 64, "content_type": "image/png", "size": 10, "name": ""})],
             [{"sha256": "a" * 64, "content_type": "text/html", "size": 10},
              {"sha256": "a" * 64, "content_type": "image/png", "size": 200 * 1024}, "x"]),
    "signature": ([(PNG_PREFIX + base64.b64encode(b"\x89PNG\r\n\x1a\nxx").decode(), None)],
                  ["data:text/plain;base64,AAAA", PNG_PREFIX + "!!!", PNG_PREFIX + "AAAA"]),
    "repeat_group": ([([{"name": "阿司匹林", "dose": "100"}], [{"name": "阿司匹林",
                                                              "dose": 100.0}])],
                     ["x", [1, 2]]),
    "hidden": ([("ward_3", "ward_3")], [{"a": 1}]),
    "consent": ([(True, True), ("yes", True)], [False, "no"]),
    "blood_pressure": ([({"systolic": "128", "diastolic": 82},
                         {"systolic": 128, "diastolic": 82})],
                       [{"systolic": 80, "diastolic": 90}, {"systolic": 400, "diastolic": 80},
                        {"systolic": 120}, "120/80"]),
    "measurement": ([({"value": 126, "unit": "mg/dL"},
                      {"value": 126.0, "unit": "mg/dL", "canonical": 7.0}),
                     ({"value": "5.6"}, {"value": 5.6, "unit": "mmol/L", "canonical": 5.6})],
                    [{"value": 7, "unit": "furlong"}, {"value": "x"}, 7]),
}
NOT_ANSWERABLE = {"display", "section", "page_break"}
COMPUTED = {"calculated"}


def test_table_covers_every_registered_type() -> None:
    # the built-ins; an installed extension's types are tested with it (tests/plugins)
    names = {ft.name for ft in BUILTIN_FIELD_TYPES}
    assert names <= set(loaded_registry().catalogue("field_type").names())
    assert names == set(TABLE) | NOT_ANSWERABLE | COMPUTED


def _cases(valid: bool) -> list[Any]:
    out = []
    for name, (good, bad) in TABLE.items():
        for index, case in enumerate(good if valid else bad):
            out.append(pytest.param(name, case, id=f"{name}-{index}"))
    return out


def _evaluate(name: str, value: Any) -> tuple[Any, list[dict[str, Any]]]:
    item = _field_of_type(name)
    if item.key == "dose":  # a repeat sub-field; its table uses the group
        raise AssertionError
    answers = {"age": 30, item.key: value}
    result = evaluate(SPEC, answers, locale="en")
    errors = [e for e in result.errors if e["path"].split(".")[0].split("[")[0] == item.key]
    return result.answers.get(item.key), errors


@pytest.mark.parametrize(("name", "case"), _cases(True))
def test_valid_inputs_are_stored_in_their_shape(name: str, case: tuple[Any, Any]) -> None:
    value, expected = case
    stored, errors = _evaluate(name, value)
    assert errors == []
    if expected is not None:
        assert stored == expected
    else:
        assert stored is not None


@pytest.mark.parametrize(("name", "case"), _cases(False))
def test_invalid_inputs_are_refused_with_a_message(name: str, case: Any) -> None:
    stored, errors = _evaluate(name, case)
    assert stored is None
    assert errors and all(e["message"] and not e["message"].startswith("forms.")
                          for e in errors)


def test_examples_in_the_registry_behave_as_documented() -> None:
    for ftype in BUILTIN_FIELD_TYPES:
        for example in ftype.invalid_examples:
            item = _field_of_type(ftype.name)
            _, issues = ftype.check(item, example)
            assert issues, (ftype.name, example)


def test_calculated_fields_ignore_the_client_value() -> None:
    result = evaluate(SPEC, {"age": 30, "bmi_calc": 999}, locale="en")
    assert result.answers["bmi_calc"] == 60


def test_per_choice_visibility_enabled_if_and_validation_messages() -> None:
    hidden_choice = evaluate(SPEC, {"age": 12, "single": "c"}, locale="en")
    assert hidden_choice.errors == [{"path": "single", "code": "forms.choice",
                                     "message": "Please choose one of the options shown"}]
    assert evaluate(SPEC, {"age": 20, "single": "c"}, locale="en").valid
    mismatch = evaluate(SPEC, {"age": 20, "age_check": 21}, locale="zh-CN")
    assert mismatch.errors == [{"path": "age_check", "code": "forms.validation",
                                "message": "与年龄不一致"}]
    disabled = evaluate(SPEC, {"age_check": 21}, locale="en")
    assert disabled.valid and "age_check" not in disabled.answers
    required = evaluate(SPEC, {"age": 20, "yn": "yes"}, locale="en")
    assert required.errors[0]["path"] == "age_check"


def test_repeat_group_errors_carry_the_index() -> None:
    result = evaluate(SPEC, {"meds": [{"name": "a"}, {"dose": "x"}]}, locale="en")
    assert [e["path"] for e in result.errors] == ["meds[1].name"]


def test_scores_of_every_method() -> None:
    result = evaluate(SPEC, {"single": "b", "stars": 4, "pain": 6, "multi": ["none"], "nps": 7},
                      locale="en")
    assert result.scores == {"total": 6.0, "avg": 5.0, "weighted": 11.0, "none_count": 1.0,
                             "top": 1.0, "nps_value": 7.0, "double": 12.0}
    assert result.bands == {"total": "high"}


def test_every_field_type_renders_with_a_label_bound_to_its_input() -> None:
    answers = {"name": "王芳"}
    for page in range(SPEC.pages):
        html = render_page(SPEC, answers=answers, page=page, locale="en", errors=[],
                           evaluation=evaluate(SPEC, answers, locale="en"), action_url="/f/x",
                           large_text=False)
        for item in pages_of(SPEC)[page]:
            assert f'id="f-{item.key}"' in html, item.type
    first = render_page(SPEC, answers=answers, page=0, locale="en", errors=[],
                        evaluation=evaluate(SPEC, answers, locale="en"), action_url="/f/x",
                        large_text=False)
    assert '<label for="i-email">E-mail</label>' in first
    assert "Pain (王芳)" in first  # piping
    assert "<strong>Welcome</strong>" in first  # sanitised markdown


def test_markdown_is_sanitised() -> None:
    from careloop.forms.pages import render_markdown

    html = str(render_markdown('<script>alert(1)</script> [x](javascript:alert(1))'))
    assert "<script>" not in html and 'href="javascript' not in html


def test_every_answer_is_stored_as_rows(engine: Engine, patient: str,
                                        publish) -> None:  # type: ignore[no-untyped-def]
    publish(EVERY.read_text("utf-8"))
    answers = {name: good[0][0] for name, (good, _) in TABLE.items()
               if name not in ("repeat_group",)}
    answers = {_field_of_type(name).key: value for name, value in answers.items()}
    answers.update({"age": 30, "age_check": 30, "meds": [{"name": "阿司匹林", "dose": 100}]})
    with transaction(engine) as session:
        sub, result = submit(session, form_key="every_field_type", patient_id=patient,
                             answers=answers, locale="en")
        assert result.valid
        rows = session.scalars(select(SubmissionAnswer).where(
            SubmissionAnswer.submission_id == sub.id)).all()
    keys = {r.field_key for r in rows}
    assert keys == set(SPEC.field_keys) - {"meds"}
    by = {(r.field_key, r.row_key): r for r in rows}
    assert by[("bp", "systolic")].value_number == 128
    assert by[("glucose", "mg/dL")].value_number == 7.0
    assert by[("meds.dose", "0")].value_number == 100
    assert by[("matrix", "r1")].value_code == "5" and by[("matrix", "r1")].value_number == 5
    assert by[("single", None)].value_number == 1
