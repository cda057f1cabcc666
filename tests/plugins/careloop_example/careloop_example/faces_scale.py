"""A Wong-Baker FACES pain scale: a field type in one file (plus its template and stylesheet).

The patient taps one of six faces (0, 2, 4, 6, 8, 10); the answer is the number, so scores,
bands and reports use it like any number. Staff read "4 — 有点痛" / "4 — Hurts a little more";
FHIR exports it as an ``integer`` item bounded 0–10.

    fields:
      - {key: pain, type: faces_scale, label: {zh-CN: 现在有多痛？, en: How much does it hurt?},
         show_numbers: true}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from careloop.engine.i18n import pick
from careloop.engine.registry import Registry
from careloop.forms.fields import FhirMap, FieldType, Issue, bad, ok
from careloop.forms.spec import FieldSpec

HERE = Path(__file__).parent
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"

#: value -> the words under the face (Wong-Baker FACES Foundation wording)
FACES: dict[int, dict[str, str]] = {
    0: {"zh-CN": "不痛", "en": "No hurt"},
    2: {"zh-CN": "有一点痛", "en": "Hurts a little bit"},
    4: {"zh-CN": "有点痛", "en": "Hurts a little more"},
    6: {"zh-CN": "比较痛", "en": "Hurts even more"},
    8: {"zh-CN": "很痛", "en": "Hurts a whole lot"},
    10: {"zh-CN": "非常痛", "en": "Hurts worst"},
}


def check(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    """A face's number: 0–10 in steps of 2 (``"4"`` from a form post is 4)."""
    if isinstance(value, bool):
        return bad("forms.choice")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return ok(value) if isinstance(value, int) and value in FACES else bad("forms.choice")


def words(value: Any, locale: str) -> str:
    return pick(FACES[value], locale) if value in FACES else str(value)


def show(spec: FieldSpec, value: Any, locale: str) -> str:
    """What staff read: the number and the face's words."""
    return f"{value} — {words(value, locale)}"


def fhir_item(spec: FieldSpec, locale: str) -> dict[str, Any]:
    return {"extension": [{"url": MIN_VALUE, "valueInteger": 0},
                          {"url": MAX_VALUE, "valueInteger": 10}]}


def fhir_answers(spec: FieldSpec, value: Any) -> list[dict[str, Any]]:
    return [{"valueInteger": int(value)}]


FACES_SCALE = FieldType(
    "faces_scale", {"zh-CN": "面部表情疼痛评分", "en": "Faces pain scale (Wong-Baker)"}, check,
    {"show_numbers": {"type": "boolean",
                      "x-label": {"zh-CN": "显示数字", "en": "Show the numbers"}}},
    widget="faces", valid_examples=(0, 4, "10"), invalid_examples=(3, 12, "x"),
    shower=show, fhir=FhirMap("integer", fhir_answers, item=fhir_item),
    template=HERE / "faces_scale.html", frame="fieldset", css=HERE / "faces_scale.css")


def register(registry: Registry) -> None:
    registry.catalogue("field_type").register(FACES_SCALE.name, FACES_SCALE)
