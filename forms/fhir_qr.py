"""QuestionnaireResponse out and in: stored answers as an R4 QuestionnaireResponse nested as
the Questionnaire is (scores as the answers of their calculated items), what FHIRPath
evaluates on (:func:`evaluation_resources`), and a response read back into answers.

    >>> from careloop.forms.spec import FieldSpec, FormSpec
    >>> spec = FormSpec(key="f", title={"en": "F"}, default_locale="en",
    ...                 fields=(FieldSpec(key="age", type="integer", link_id="A"),))
    >>> export_response(spec, {"age": 42}, patient_id="p", authored="2026-03-01")["item"]
    [{'linkId': 'A', 'answer': [{'valueInteger': 42}]}]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from careloop.forms.fhir_import import ITEM_WEIGHT, ORDINAL
from careloop.forms.fhir_tree import _link, _Tree, canonical, fhir_map
from careloop.forms.spec import FieldSpec, FormSpec

UCUM = "http://unitsofmeasure.org"
_VALUE = {"integer": "valueInteger", "date": "valueDate", "time": "valueTime",
          "string": "valueString", "open-choice": "valueCoding", "coding": "valueCoding",
          "choice": "valueCoding"}


def _time(value: str) -> str:
    return value if value.count(":") >= 2 else f"{value}:00"


def _datetime_out(value: str) -> str:
    """A stored local date-time (the hospital's wall clock) as an R4 ``dateTime``, which needs
    seconds and an offset: ``2026-03-01T08:30:00`` → ``2026-03-01T08:30:00+08:00``."""
    from datetime import datetime

    from careloop.engine.clock import hospital_tz

    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=hospital_tz())
    return moment.isoformat(timespec="seconds")


def _datetime_in(value: str) -> str:
    """An R4 ``dateTime`` as the stored local date-time (hospital wall clock)."""
    from datetime import datetime

    from careloop.engine.clock import hospital_tz

    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(hospital_tz()).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def _answers(tree: _Tree, field: FieldSpec, value: Any, weights: bool,
             locale: str, codings: Mapping[str, Mapping[str, Any]] | None = None
             ) -> list[dict[str, Any]]:
    """The answers of one value; ``codings``: the codings computed choices stand for (code →
    coding with its system and display)."""
    meta = tree.meta.get(field.key, {})
    ftype = str(meta.get("type") or "")
    if (field.choices or field.choices_fhirpath) and field.type in ("single_choice",
                                                                     "multiple_choice"):
        other_text = None
        if isinstance(value, dict):
            other_text = value.get("other")
            codes = value.get("codes") or ([value.get("code")] if value.get("code") else [])
        else:
            codes = value if isinstance(value, list) else [value]
        out: list[dict[str, Any]] = []
        systems = meta.get("systems", {}) or {}
        values = meta.get("values", {}) or {}
        weight = ITEM_WEIGHT if meta.get("weight") == "itemWeight" else ORDINAL
        for code in codes:
            raw = str(values.get(code, code))
            choice = field.choice(code)
            if choice is not None and choice.other:
                continue
            value_name = _VALUE.get(ftype, "valueCoding")
            if value_name == "valueInteger":
                out.append({"valueInteger": int(raw)})
            elif value_name == "valueTime":
                out.append({"valueTime": _time(raw)})
            elif value_name != "valueCoding":
                out.append({value_name: raw})
            elif codings and code in codings:
                out.append({"valueCoding": dict(codings[code])})
            else:
                coding: dict[str, Any] = {"code": raw}
                if systems.get(code):
                    coding = {"system": systems[code], "code": raw}
                if choice is not None:
                    from careloop.engine.i18n import pick

                    coding["display"] = pick(dict(choice.label), locale)
                    if weights and choice.score is not None:
                        coding["extension"] = [{"url": weight, "valueDecimal": choice.score}]
                out.append({"valueCoding": coding})
        if other_text:
            out.append({"valueString": str(other_text)})
        return out
    if field.type == "measurement" and isinstance(value, Mapping):
        return [{"valueQuantity": {"value": value.get("value"), "unit": value.get("unit"),
                                   "system": UCUM, "code": value.get("unit")}}]
    if field.type == "yes_no":
        return [{"valueBoolean": value in ("yes", True)}]
    simple = {"date": "valueDate", "datetime": "valueDateTime", "short_text": "valueString",
              "long_text": "valueString", "email": "valueString", "mobile": "valueString"}
    if field.type in simple and isinstance(value, str):
        if field.type == "short_text" and ftype == "url":
            return [{"valueUri": value}]
        if field.type == "datetime":
            return [{"valueDateTime": _datetime_out(value)}]
        return [{simple[field.type]: value}]
    if field.type == "time" and isinstance(value, str):
        return [{"valueTime": _time(value)}]
    if field.type in ("decimal", "slider") and isinstance(value, int | float) and \
            not isinstance(value, bool):
        if ftype == "integer" and float(value).is_integer():
            return [{"valueInteger": int(value)}]
        return [{"valueDecimal": value}]
    return fhir_map(field).answers(field, value)


def response_item(field: FieldSpec, value: Any) -> dict[str, Any]:
    """The QuestionnaireResponse item of one answer, as the field's type maps it: its answers,
    or nested items (a matrix's rows, a blood pressure's parts)."""
    mapping = fhir_map(field)
    body = (mapping.response(field, value) if mapping.response is not None
            else {"answer": mapping.answers(field, value)})
    return {"linkId": _link(field), **body}


class _Responder:
    def __init__(self, spec: FormSpec, answers: Mapping[str, Any],
                 scores: Mapping[str, Any] | None, weights: bool, locale: str,
                 computed: bool = False) -> None:
        self.spec, self.answers, self.scores = spec, answers, scores or {}
        self.weights, self.locale = weights, locale
        self.tree = _Tree(spec)
        #: computed choices that are codings (``computed``: the export, not the evaluation
        #: resource FHIRPath reads, which this evaluation builds)
        self.codings: dict[str, dict[str, Mapping[str, Any]]] = {}
        if computed:
            from careloop.forms.fhirpath import computed_options

            for field in spec.fields:
                if field.choices_fhirpath is not None and field.key in answers:
                    self.codings[field.key] = {
                        code: coding for code, _, coding in
                        computed_options(spec, field, answers) if coding is not None}

    def items(self, parent: FieldSpec | None, row: Mapping[str, Any] | None
              ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for field in self.tree.children(parent):
            out.extend(self.item(field, row))
        if row is None:
            for position, score in self.tree.scores_under(parent.key if parent else None):
                value = self.scores.get(score.key)
                if value is None:
                    continue
                meta = self.tree.meta.get(score.key, {})
                link = str(score.options.get("link_id") or score.key)
                answer: dict[str, Any] = {"valueDecimal": value}
                if meta.get("type") == "integer" and float(value).is_integer():
                    answer = {"valueInteger": int(value)}
                elif meta.get("type") == "quantity":
                    unit = meta.get("unit", {})
                    answer = {"valueQuantity": {"value": value, **{
                        k: v for k, v in (("unit", unit.get("display") or unit.get("code")),
                                          ("system", unit.get("system")),
                                          ("code", unit.get("code"))) if v}}}
                out.insert(min(position, len(out)), {"linkId": link, "answer": [answer]})
        return out

    def item(self, field: FieldSpec, row: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        source = row if row is not None else self.answers
        if field.type == "repeat_group":
            rows = source.get(field.key) or []
            out = []
            for one in rows if isinstance(rows, list) else []:
                sub = self.items(field, one)
                if sub:
                    out.append({"linkId": _link(field), "item": sub})
            return out
        if field.type == "section":
            sub = self.items(field, row)
            return [{"linkId": _link(field), "item": sub}] if sub else []
        children = self.items(field, row) if self.tree.has_children(field.key) else []
        if field.key not in source:
            # A question's nested items answer without it only as a group would: FHIR puts
            # them under the question's answer, so without an answer they have nowhere to go.
            return []
        mapping = fhir_map(field)
        if mapping.response is not None:
            return [{"linkId": _link(field), **mapping.response(field, source[field.key])}]
        value = source[field.key]
        values = value if field.repeats and isinstance(value, list) else [value]
        answers = [a for one in values
                   for a in _answers(self.tree, field, one, self.weights, self.locale,
                                     self.codings.get(field.key))]
        if not answers:
            return []
        if children:
            answers[0]["item"] = children
        return [{"linkId": _link(field), "answer": answers}]


def export_response(spec: FormSpec, answers: Mapping[str, Any], *, patient_id: str,
                    authored: str, scores: Mapping[str, Any] | None = None,
                    locale: str | None = None) -> dict[str, Any]:
    """A QuestionnaireResponse for stored answers (patient by opaque id only), nested as the
    Questionnaire is, with computed scores as the answers of their calculated items."""
    responder = _Responder(spec, answers, scores, False, locale or spec.default_locale,
                           computed=True)
    items = responder.items(None, None)
    total_link = spec.meta.get("total_link_id") if spec.meta else None
    total_key = spec.meta.get("total_score") if spec.meta else None
    if scores and total_link and total_key and scores.get(total_key) is not None and \
            not any(i["linkId"] == total_link for i in items):
        items.append({"linkId": total_link, "answer": [{"valueDecimal": scores[total_key]}]})
    out: dict[str, Any] = {"resourceType": "QuestionnaireResponse",
                           "questionnaire": canonical(spec), "status": "completed",
                           "subject": {"reference": f"Patient/{patient_id}"},
                           "authored": authored}
    if items:
        out["item"] = items
    return out


_QUESTIONNAIRES: dict[tuple[str, str], dict[str, Any]] = {}


def evaluation_resources(spec: FormSpec, answers: Mapping[str, Any],
                         scores: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``%resource`` (the answers as a QuestionnaireResponse, chosen codings carrying their
    scores) and ``%questionnaire`` (the form, cached per content hash) for FHIRPath."""
    cache_key = (spec.key, spec.content_hash)
    questionnaire = _QUESTIONNAIRES.get(cache_key) if spec.content_hash else None
    if questionnaire is None:
        from careloop.forms.fhir import export_questionnaire

        questionnaire = export_questionnaire(spec, locale=spec.default_locale)
        if spec.content_hash:
            if len(_QUESTIONNAIRES) > 256:
                _QUESTIONNAIRES.clear()
            _QUESTIONNAIRES[cache_key] = questionnaire
    responder = _Responder(spec, answers, scores, True, spec.default_locale)
    resource = {"resourceType": "QuestionnaireResponse", "questionnaire": canonical(spec),
                "status": "in-progress", "item": responder.items(None, None)}
    return resource, questionnaire


# -- reading a QuestionnaireResponse -------------------------------------------------------

def _walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from _walk(item.get("item", []) or [])
        for answer in item.get("answer", []) or []:
            yield from _walk(answer.get("item", []) or [])


def _value(field: FieldSpec | None, answer: Mapping[str, Any],
           meta: Mapping[str, Any] | None = None) -> Any:
    values = (meta or {}).get("values") or {}
    systems = (meta or {}).get("systems") or {}
    codes = {str(v): k for k, v in values.items()}
    if "valueCoding" in answer:
        code = str(answer["valueCoding"].get("code"))
        system = answer["valueCoding"].get("system")
        for key in (field.choices if field is not None else ()):
            if str(values.get(key.code, key.code)) == code and systems.get(key.code) == system:
                return key.code
        return codes.get(code, code)
    if "valueBoolean" in answer:
        return "yes" if answer["valueBoolean"] else "no"
    if "valueQuantity" in answer:
        quantity = answer["valueQuantity"]
        return {"value": quantity.get("value"), "unit": quantity.get("code")
                or quantity.get("unit")}
    if "valueDateTime" in answer and isinstance(answer["valueDateTime"], str) and \
            field is not None and field.type == "datetime":
        return _datetime_in(answer["valueDateTime"])
    for name, value in answer.items():
        if name.startswith("value"):
            if field is not None and field.choices and not isinstance(value, dict):
                code = codes.get(str(value), str(value))
                if field.choice(code) is None and name == "valueString" and \
                        any(c.other for c in field.choices):
                    return {"code": "other", "other": code}
                return code
            return value
    return None


def read_response(spec: FormSpec, response: Mapping[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Answers keyed by field key, and the values the response reports for the form's scores
    (calculated items), keyed by score key."""
    tree = _Tree(spec)
    by_link = {_link(f): f for f in tree.by_key.values()}
    score_links = {str(s.options.get("link_id")): s.key for s in spec.scores
                   if s.options.get("link_id")}
    total_link = spec.meta.get("total_link_id") if spec.meta else None
    if total_link and spec.meta.get("total_score"):
        score_links[str(total_link)] = str(spec.meta["total_score"])
    answers: dict[str, Any] = {}
    reported: dict[str, Any] = {}

    def read(items: list[dict[str, Any]], target: dict[str, Any]) -> None:
        for item in items:
            link = str(item.get("linkId"))
            field = by_link.get(link)
            nested = list(item.get("item", []) or [])
            if link in score_links:
                values = [_value(None, a) for a in item.get("answer", []) or []]
                if values:
                    value = values[0]
                    reported[score_links[link]] = value.get("value") if isinstance(
                        value, dict) else value
                continue
            if field is not None and field.type == "repeat_group":
                row: dict[str, Any] = {}
                read(nested, row)
                target.setdefault(field.key, []).append(row)
                continue
            read(nested, target)
            values = []
            for answer in item.get("answer", []) or []:
                values.append(_value(field, answer,
                                     tree.meta.get(field.key) if field is not None else None))
                read(list(answer.get("item", []) or []), target)
            if field is None or not values:
                continue
            if field.type == "multiple_choice" or field.repeats:
                target[field.key] = values
            else:
                target[field.key] = values if fhir_map(field).repeats else values[0]

    read(list(response.get("item", []) or []), answers)
    return answers, reported


def answers_from_response(spec: FormSpec, response: Mapping[str, Any],
                          total_link_id: str | None = None) -> tuple[dict[str, Any], Any]:
    """Answers keyed by field key from a QuestionnaireResponse, and its reported total (if any)."""
    answers, reported = read_response(spec, response)
    total_key = spec.meta.get("total_score") if spec.meta else None
    return answers, reported.get(str(total_key)) if total_key else None

