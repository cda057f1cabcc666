"""FHIR R4: Questionnaire → form definition, form → Questionnaire, answers ↔ QuestionnaireResponse.

Field keys come from ``linkId`` by one documented rule (:func:`key_from_link_id`); the original
``linkId`` is kept on the field (``link_id``) so responses map back exactly.

    >>> key_from_link_id("/44250-9")
    'q_44250_9'
    >>> key_from_link_id("Smoking.Status")
    'smoking_status'
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from careloop.engine.errors import CareloopError
from careloop.engine.registry import loaded_registry
from careloop.forms.fields import LOINC, ORDINAL, FhirMap, fhir_option
from careloop.forms.spec import FieldSpec, FormSpec

ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"

# Known instruments: LOINC code of the total-score item → (score key, bands).
KNOWN_TOTALS: dict[str, list[dict[str, Any]]] = {
    "44261-6": [  # PHQ-9 total
        {"code": "minimal", "label": {"zh-CN": "无或极轻微", "en": "Minimal"}, "min": 0, "max": 4},
        {"code": "mild", "label": {"zh-CN": "轻度", "en": "Mild"}, "min": 5, "max": 9},
        {"code": "moderate", "label": {"zh-CN": "中度", "en": "Moderate"}, "min": 10, "max": 14},
        {"code": "moderately_severe", "label": {"zh-CN": "中重度", "en": "Moderately severe"},
         "min": 15, "max": 19},
        {"code": "severe", "label": {"zh-CN": "重度", "en": "Severe"}, "min": 20, "max": 27}],
    "70274-6": [  # GAD-7 total
        {"code": "minimal", "label": {"zh-CN": "无或极轻微", "en": "Minimal"}, "min": 0, "max": 4},
        {"code": "mild", "label": {"zh-CN": "轻度", "en": "Mild"}, "min": 5, "max": 9},
        {"code": "moderate", "label": {"zh-CN": "中度", "en": "Moderate"}, "min": 10, "max": 14},
        {"code": "severe", "label": {"zh-CN": "重度", "en": "Severe"}, "min": 15, "max": 21}],
}

SIMPLE_TYPES = {"boolean": "yes_no", "decimal": "decimal", "integer": "integer", "date": "date",
                "dateTime": "datetime", "time": "time", "string": "short_text",
                "text": "long_text", "url": "short_text", "attachment": "file",
                "quantity": "measurement", "display": "display"}


def key_from_link_id(link_id: str) -> str:
    """The rule: lower-case; every run of characters other than a–z, 0–9 becomes ``_``; leading
    and trailing ``_`` are dropped; a key that would start with a digit (or be empty) gets ``q_``;
    at most 64 characters. Duplicates get ``_2``, ``_3`` … (see :class:`_Importer`)."""
    key = re.sub(r"[^a-z0-9]+", "_", link_id.lower()).strip("_")
    if not key or not key[0].isalpha():
        key = "q_" + key
    return key[:64]


def _text(value: str | None) -> dict[str, str]:
    return {"en": value or "—"}


def _score_of(option: Mapping[str, Any]) -> float | None:
    for ext in option.get("extension", []) + option.get("valueCoding", {}).get("extension", []):
        if ext.get("url") in (ORDINAL, ITEM_WEIGHT):
            value = ext.get("valueDecimal", ext.get("valueInteger"))
            if isinstance(value, int | float):
                return float(value)
    return None


def _option_code(option: Mapping[str, Any]) -> tuple[str, str]:
    if "valueCoding" in option:
        coding = option["valueCoding"]
        return str(coding.get("code")), str(coding.get("display") or coding.get("code"))
    for key in ("valueString", "valueInteger", "valueDate"):
        if key in option:
            return str(option[key]), str(option[key])
    return "?", "?"


class FhirExportError(CareloopError):
    """A form holds a field whose type declares no FHIR mapping: refused, never a guess."""


def fhir_map(field: FieldSpec) -> FhirMap:
    """The field's type's FHIR mapping (:attr:`FieldType.fhir`); a type without one cannot be
    exported."""
    ftype = loaded_registry().catalogue("field_type").get(field.type)
    mapping: FhirMap | None = getattr(ftype, "fhir", None)
    if mapping is None:
        raise FhirExportError(f"field '{field.key}': field type '{field.type}' declares no FHIR "
                              "item type (FieldType.fhir), so the form cannot be exported")
    return mapping


class _Importer:
    def __init__(self) -> None:
        self.keys: dict[str, str] = {}  # linkId -> key
        self.used: set[str] = set()
        self.notes: list[str] = []
        self.total: tuple[str, str, list[dict[str, Any]] | None] | None = None

    def key(self, link_id: str) -> str:
        base = key_from_link_id(link_id)
        key, n = base, 2
        while key in self.used:
            key, n = f"{base[:60]}_{n}", n + 1
        self.used.add(key)
        self.keys[link_id] = key
        return key

    def items(self, items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield from self.item(item)

    def item(self, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        link_id = str(item.get("linkId"))
        kind = item.get("type")
        codes = item.get("code") or []
        loinc = next((c.get("code") for c in codes if c.get("system") == LOINC), None)
        if kind in ("decimal", "integer") and (loinc in KNOWN_TOTALS or
                                                "total score" in str(item.get("text", "")).lower()):
            self.total = (link_id, self.key(link_id), KNOWN_TOTALS.get(str(loinc)))
            return
        key = self.key(link_id)
        field: dict[str, Any] = {"key": key, "link_id": link_id}
        if item.get("text"):
            field["label"] = _text(item["text"])
        if codes:
            field["code"] = {k: v for k, v in codes[0].items() if k in ("system", "code",
                                                                         "display")}
        if kind == "group":
            if item.get("repeats"):
                field["type"] = "repeat_group"
                field["fields"] = list(self.items(item.get("item", [])))
                yield self.common(field, item)
                return
            field["type"] = "section"
            yield field
            yield from self.items(item.get("item", []))
            return
        if kind in ("choice", "open-choice", "coding"):
            field["type"] = "multiple_choice" if item.get("repeats") else "single_choice"
            field["choices"] = self.choices(item, key)
            if kind == "open-choice":
                field["choices"].append({"code": "other", "label": {"zh-CN": "其他", "en": "Other"},
                                         "other": True})
        elif kind in SIMPLE_TYPES:
            field["type"] = SIMPLE_TYPES[kind]
        else:
            self.notes.append(f"{link_id}: item type {kind!r} has no field type; kept as text")
            field["type"] = "short_text"
        yield self.common(field, item)

    def choices(self, item: dict[str, Any], key: str) -> list[dict[str, Any]]:
        out = []
        for option in item.get("answerOption", []):
            code, display = _option_code(option)
            choice: dict[str, Any] = {"code": code, "label": _text(display)}
            score = _score_of(option)
            if score is not None:
                choice["score"] = score
            out.append(choice)
        if not out:
            self.notes.append(f"{item.get('linkId')}: answerValueSet is not expanded; "
                              "add the choices by hand")
            out.append({"code": "unknown", "label": _text("?")})
        return out

    def common(self, field: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        if item.get("required"):
            field["required"] = True
        found = [self.condition(c) for c in item.get("enableWhen", [])]
        conditions = [c for c in found if c]
        if conditions:
            joiner = " or " if item.get("enableBehavior") == "any" else " and "
            field["visible_if"] = joiner.join(f"({c})" if len(conditions) > 1 else c
                                              for c in conditions)
        return field

    def condition(self, when: Mapping[str, Any]) -> str | None:
        question = self.keys.get(str(when.get("question")))
        if question is None:
            self.notes.append(f"enableWhen on unknown or later question {when.get('question')!r}"
                              " was not translated")
            return None
        op = str(when.get("operator", "="))
        ops = {"=": "==", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}
        if op == "exists":
            return f"answers.{question} {'!=' if when.get('answerBoolean') else '=='} None"
        for name, value in when.items():
            if not name.startswith("answer"):
                continue
            if name == "answerCoding":
                literal = repr(str(value.get("code")))
            elif name == "answerBoolean":
                literal = repr("yes" if value else "no")
            else:
                literal = repr(value)
            return f"answers.{question} {ops.get(op, '==')} {literal}"
        return None


def import_questionnaire(questionnaire: Mapping[str, Any],
                         key: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Translate a FHIR R4 Questionnaire; returns ``(form body, notes on what was not kept)``."""
    if questionnaire.get("resourceType") != "Questionnaire":
        raise ValueError("not a FHIR Questionnaire (resourceType)")
    importer = _Importer()
    fields = list(importer.items(list(questionnaire.get("item", []))))
    title = str(questionnaire.get("title") or questionnaire.get("name") or "Questionnaire")
    body: dict[str, Any] = {
        "kind": "form",
        "key": key or key_from_link_id(str(questionnaire.get("name")
                                           or questionnaire.get("id") or "imported")),
        "title": {"zh-CN": title, "en": title},
        "default_locale": "en",
        "fields": fields,
    }
    fhir: dict[str, Any] = {}
    if questionnaire.get("url"):
        fhir["url"] = questionnaire["url"]
    if questionnaire.get("code"):
        fhir["code"] = questionnaire["code"]
    if importer.total is not None:
        link_id, total_key, bands = importer.total
        scored = [f["key"] for f in fields if f.get("choices")
                  and all("score" in c for c in f["choices"])]
        score: dict[str, Any] = {"key": total_key, "label": {"zh-CN": "总分", "en": "Total score"},
                                 "method": "sum", "fields": scored}
        if bands:
            score["bands"] = bands
        body["scores"] = [score]
        fhir["total_link_id"] = link_id
        fhir["total_score"] = total_key
    if fhir:
        body["fhir"] = fhir
    return body, importer.notes


def _walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from _walk(item.get("item", []))


def answers_from_response(spec: FormSpec, response: Mapping[str, Any],
                          total_link_id: str | None = None) -> tuple[dict[str, Any], Any]:
    """Answers keyed by field key from a QuestionnaireResponse, and its reported total (if any)."""
    by_link = {f.link_id or f.key: f for f in spec.fields}
    answers: dict[str, Any] = {}
    reported = None
    for item in _walk(list(response.get("item", []))):
        values = [_answer_value(a) for a in item.get("answer", [])]
        if not values:
            continue
        if total_link_id is not None and item.get("linkId") == total_link_id:
            reported = values[0]
            continue
        field = by_link.get(str(item.get("linkId")))
        if field is None:
            continue
        answers[field.key] = values if fhir_map(field).repeats else values[0]
    return answers, reported


def _answer_value(answer: Mapping[str, Any]) -> Any:
    if "valueCoding" in answer:
        return answer["valueCoding"].get("code")
    if "valueBoolean" in answer:
        return "yes" if answer["valueBoolean"] else "no"
    if "valueQuantity" in answer:
        quantity = answer["valueQuantity"]
        return {"value": quantity.get("value"), "unit": quantity.get("unit")}
    for name, value in answer.items():
        if name.startswith("value"):
            return value
    return None


def fhir_item(field: FieldSpec, locale: str) -> dict[str, Any] | None:
    """The Questionnaire item of a field, as its type maps it (``None``: no item)."""
    from careloop.engine.i18n import pick

    mapping = fhir_map(field)
    if not mapping.item_type:
        return None
    item: dict[str, Any] = {"linkId": field.link_id or field.key,
                            "type": mapping.item_type,
                            "text": pick(dict(field.label), locale) or field.key}
    if field.required:
        item["required"] = True
    if field.code:
        item["code"] = [dict(field.code)]
    if mapping.repeats:
        item["repeats"] = True
    if field.choices and mapping.item_type == "choice":
        item["answerOption"] = [fhir_option(c, locale) for c in field.choices]
    if mapping.item is not None:
        item.update(mapping.item(field, locale))
    return item


def export_questionnaire(spec: FormSpec, *, version: int | None = None,
                         locale: str = "zh-CN") -> dict[str, Any]:
    """A FHIR R4 Questionnaire for a form (labels in ``locale``)."""
    from careloop.engine.i18n import pick

    return {"resourceType": "Questionnaire", "id": spec.key, "name": spec.key,
            "title": pick(dict(spec.title), locale), "status": "active",
            "version": str(version) if version is not None else None,
            "item": [i for i in (fhir_item(f, locale) for f in spec.fields) if i]}


def response_item(field: FieldSpec, value: Any) -> dict[str, Any]:
    """The QuestionnaireResponse item of one answer, as the field's type maps it: its answers,
    or nested items (a matrix's rows, a blood pressure's parts, a repeat group's rows)."""
    mapping = fhir_map(field)
    body = (mapping.response(field, value) if mapping.response is not None
            else {"answer": mapping.answers(field, value)})
    return {"linkId": field.link_id or field.key, **body}


def export_response(spec: FormSpec, answers: Mapping[str, Any], *, patient_id: str,
                    authored: str, scores: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A QuestionnaireResponse for stored answers (patient by opaque id only)."""
    items: list[dict[str, Any]] = []
    for field in spec.fields:
        if field.key in answers:
            items.append(response_item(field, answers[field.key]))
    total_link = spec.meta.get("total_link_id") if spec.meta else None
    total_key = spec.meta.get("total_score") if spec.meta else None
    if scores and total_link and total_key and scores.get(total_key) is not None:
        items.append({"linkId": total_link, "answer": [{"valueDecimal": scores[total_key]}]})
    return {"resourceType": "QuestionnaireResponse", "questionnaire": spec.key,
            "status": "completed", "subject": {"reference": f"Patient/{patient_id}"},
            "authored": authored, "item": items}
