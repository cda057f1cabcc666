"""FHIR R4: Questionnaire → form definition, form → Questionnaire, answers ↔ QuestionnaireResponse.

Field keys come from ``linkId`` by one documented rule (:func:`key_from_link_id`); the original
``linkId`` is kept on the field (``link_id``) so responses map back exactly. The import and its
fidelity rule are :mod:`careloop.forms.fhir_import`; this module exports, reads responses and
builds what FHIRPath calculations evaluate on (:func:`evaluation_resources`).

    >>> key_from_link_id("/44250-9")
    'q_44250_9'
    >>> key_from_link_id("Smoking.Status")
    'smoking_status'

The export follows the structure the import kept under the form's ``fhir`` key (parents,
positions of calculated items, FHIR item types, units, coding systems, value sets), so an
imported Questionnaire exports to one that imports to the same form; a Careloop condition with no
``enableWhen`` form travels as ``enableWhenExpression`` in ``text/x-careloop-expression``.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from careloop.forms.fhir_import import (
    CAREL_EXPR,
    CONTROL_CHOICE,
    ITEM_WEIGHT,
    KNOWN_TOTALS,
    ORDINAL,
    SDC,
    key_from_link_id,
)
from careloop.forms.fhir_import import import_questionnaire as _import
from careloop.forms.fhir_qr import (
    UCUM,
    _answers,
    answers_from_response,
    evaluation_resources,
    export_response,
    read_response,
    response_item,
)
from careloop.forms.fhir_tree import (
    FhirExportError,
    _link,
    _text,
    _Tree,
    canonical,
    fhir_map,
)
from careloop.forms.spec import FieldSpec, FormSpec, ScoreSpec

__all__ = ["KNOWN_TOTALS", "FhirExportError", "answers_from_response", "evaluation_resources",
           "export_questionnaire", "export_response", "fhir_item", "fhir_map",
           "import_questionnaire", "key_from_link_id", "read_response", "response_item"]

CORE = "http://hl7.org/fhir/StructureDefinition/"
ITEM_CONTROL = "http://hl7.org/fhir/questionnaire-item-control"
_CONTROL_CODE = {v: k for k, v in CONTROL_CHOICE.items() if k != "autocomplete"}
_VALUE = {"integer": "valueInteger", "date": "valueDate", "time": "valueTime",
          "string": "valueString", "open-choice": "valueCoding", "coding": "valueCoding",
          "choice": "valueCoding"}


def import_questionnaire(questionnaire: Mapping[str, Any], key: str | None = None, *,
                         bundle: list[Mapping[str, Any]] | None = None
                         ) -> tuple[dict[str, Any], list[str]]:
    """Translate a FHIR R4 Questionnaire; returns ``(form body, located notes)``. What could
    not be carried is also in ``body["import"]["unresolved"]`` and blocks publishing."""
    result = _import(questionnaire, key, bundle=bundle)
    return result.body, result.notes


# -- conditions back to enableWhen ---------------------------------------------------------

def _own_condition(tree: _Tree, field: FieldSpec) -> str | None:
    mine = field.visible_if.source if field.visible_if else None
    parent = tree.parent_of.get(field.key)
    outer = tree.condition(parent) if parent else None
    if mine is None or mine == outer:
        return None
    if outer and mine.startswith(f"({outer}) and (") and mine.endswith(")"):
        return mine[len(outer) + 8:-1]
    return mine


def _answer_for(tree: _Tree, key: str, value: Any) -> tuple[str, Any] | None:
    target = tree.by_key.get(key)
    if target is None:
        return None
    ftype = tree.meta.get(key, {}).get("type")
    if target.type == "yes_no":
        return ("answerBoolean", value == "yes") if value in ("yes", "no") else None
    if target.choices:
        raw = str(tree.meta.get(key, {}).get("values", {}).get(str(value), value))
        if ftype == "integer":
            return "answerInteger", int(raw)
        if ftype in ("date", "time", "string"):
            return f"answer{str(ftype).capitalize()}", raw
        coding: dict[str, Any] = {"code": raw}
        system = tree.meta.get(key, {}).get("systems", {}).get(str(value))
        if system:
            coding = {"system": system, "code": raw}
        return "answerCoding", coding
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and target.type in ("integer", "rating", "nps"):
        return "answerInteger", value
    if isinstance(value, int | float):
        return "answerDecimal", value
    if isinstance(value, str):
        names = {"date": "answerDate", "datetime": "answerDateTime", "time": "answerTime"}
        return names.get(target.type, "answerString"), value
    return None


_OPS = {ast.Eq: "=", ast.NotEq: "!=", ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<="}


def _when(tree: _Tree, node: ast.AST) -> dict[str, Any] | None:
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return None
    left, op, right = node.left, node.ops[0], node.comparators[0]
    ref, literal = (right, left) if isinstance(op, ast.In | ast.NotIn) else (left, right)
    if not (isinstance(ref, ast.Attribute) and isinstance(ref.value, ast.Name)
            and ref.value.id in ("answers", "row") and isinstance(literal, ast.Constant)):
        return None
    target = tree.by_key.get(ref.attr)
    if target is None:
        return None
    question = _link(target)
    if literal.value is None and isinstance(op, ast.Eq | ast.NotEq):
        return {"question": question, "operator": "exists",
                "answerBoolean": isinstance(op, ast.NotEq)}
    if isinstance(op, ast.In | ast.NotIn):
        operator = "=" if isinstance(op, ast.In) else "!="
    elif type(op) in _OPS:
        operator = _OPS[type(op)]
    else:
        return None
    answer = _answer_for(tree, ref.attr, literal.value)
    if answer is None:
        return None
    return {"question": question, "operator": operator, answer[0]: answer[1]}


def _enable(tree: _Tree, condition: str) -> dict[str, Any]:
    """``enableWhen`` (+ ``enableBehavior``) for a condition, or an ``enableWhenExpression``."""
    fallback = {"extension": [{"url": SDC + "sdc-questionnaire-enableWhenExpression",
                               "valueExpression": {"language": CAREL_EXPR,
                                                   "expression": condition}}]}
    try:
        tree_ = ast.parse(condition, mode="eval").body
    except SyntaxError:
        return fallback
    parts = tree_.values if isinstance(tree_, ast.BoolOp) else [tree_]
    whens = [_when(tree, part) for part in parts]
    if any(w is None for w in whens):
        return fallback
    out: dict[str, Any] = {"enableWhen": whens}
    if isinstance(tree_, ast.BoolOp):
        out["enableBehavior"] = "any" if isinstance(tree_.op, ast.Or) else "all"
    return out


# -- Questionnaire -------------------------------------------------------------------------

def _ext(name: str, **value: Any) -> dict[str, Any]:
    return {"url": CORE + name, **value}


def _control(code: str) -> dict[str, Any]:
    return _ext("questionnaire-itemControl", valueCodeableConcept={"coding": [
        {"system": ITEM_CONTROL, "code": code}]})


class _Exporter:
    def __init__(self, spec: FormSpec, locale: str) -> None:
        self.spec, self.locale = spec, locale
        self.tree = _Tree(spec)
        self.meta = self.tree.meta
        self.contained: dict[str, dict[str, Any]] = {}

    def items(self, parent: FieldSpec | None) -> list[dict[str, Any]]:
        out = [i for i in (self.item(f) for f in self.tree.children(parent)) if i]
        for position, score in self.tree.scores_under(parent.key if parent else None):
            out.insert(min(position, len(out)), self.score_item(score))
        return out

    def item(self, field: FieldSpec) -> dict[str, Any] | None:
        mapping = fhir_map(field)
        if not mapping.item_type:
            return None
        meta = self.meta.get(field.key, {})
        ftype = str(meta.get("type") or mapping.item_type)
        if field.type == "section" and self.tree.has_children(field.key):
            ftype = "group"
        item: dict[str, Any] = {"linkId": _link(field), "type": ftype}
        text, underscore = _text(field.label, self.locale)
        if text:
            item["text"] = text
        if underscore:
            item["_text"] = underscore
        extensions: list[dict[str, Any]] = []
        if meta.get("code"):
            item["code"] = list(meta["code"])
        elif field.code:
            item["code"] = [dict(field.code)]
        if field.required:
            item["required"] = True
        for name, kept in (("questionnaire-minOccurs", "min_occurs"),
                           ("questionnaire-maxOccurs", "max_occurs")):
            if field.type != "repeat_group" and meta.get(kept) is not None:
                extensions.append(_ext(name, valueInteger=int(meta[kept])))
        if meta.get("hidden"):
            extensions.append(_ext("questionnaire-hidden", valueBoolean=True))
        if field.type == "repeat_group":
            item["repeats"] = True
            lo, hi = field.options.get("min_items"), field.options.get("max_items")
            if lo is not None:
                extensions.append(_ext("questionnaire-minOccurs", valueInteger=int(lo)))
            if hi is not None:
                extensions.append(_ext("questionnaire-maxOccurs", valueInteger=int(hi)))
        elif mapping.repeats or field.repeats:
            item["repeats"] = True
        if field.read_only:
            item["readOnly"] = True
        own = _own_condition(self.tree, field)
        if own:
            found = _enable(self.tree, own)
            extensions.extend(found.pop("extension", []))
            item.update(found)
        if field.visible_fhirpath:
            extensions.extend(self.variables(field.visible_fhirpath.get("variables")))
            extensions.append({"url": SDC + "sdc-questionnaire-enableWhenExpression",
                               "valueExpression": {
                                   "language": "text/fhirpath",
                                   "expression": field.visible_fhirpath["expression"]}})
        if (field.choices or field.choices_fhirpath) and field.type in ("single_choice",
                                                                          "multiple_choice"):
            self.options(field, meta, ftype, item, extensions)
        elif mapping.item is not None and field.type not in ("repeat_group",):
            item.update(mapping.item(field, self.locale))
        self.numbers(field, meta, ftype, item, extensions)
        self.population(meta, item, extensions)
        self.computed(field, item, extensions)
        if field.default is not None and not meta.get("initial_expression"):
            self.initial(field, item)
        if isinstance(field.options.get("max_length"), int) and ftype in ("string", "text"):
            item["maxLength"] = field.options["max_length"]
        children: list[dict[str, Any]] = []
        if field.help:
            help_text, help_underscore = _text(field.help, self.locale)
            links = meta.get("help_link_ids") or [f"{_link(field)}-help"]
            help_item: dict[str, Any] = {"linkId": links[0], "type": "display",
                                         "text": help_text, "extension": [_control("help")]}
            if help_underscore:
                help_item["_text"] = help_underscore
            children.append(help_item)
        if self.tree.has_children(field.key):
            children.extend(self.items(field))
        if children:
            item["item"] = children
        if extensions:
            item["extension"] = _unique_variables(extensions)
        return item

    def population(self, meta: Mapping[str, Any], item: dict[str, Any],
                   extensions: list[dict[str, Any]]) -> None:
        """An imported ``answerExpression`` / ``initialExpression`` written back as itself (the
        choices and default it gave at import are what it gives again: it is evaluated once,
        on an empty response)."""
        for key, name in (("answer_expression", "sdc-questionnaire-answerExpression"),
                          ("initial_expression", "sdc-questionnaire-initialExpression")):
            kept = meta.get(key)
            if not kept:
                continue
            if key == "answer_expression":
                item.pop("answerOption", None)
                item.pop("answerValueSet", None)
            extensions.extend(self.variables(kept.get("variables")))
            extensions.append({"url": SDC + name, "valueExpression": {
                "language": "text/fhirpath", "expression": kept["expression"]}})

    def computed(self, field: FieldSpec, item: dict[str, Any],
                 extensions: list[dict[str, Any]]) -> None:
        """``choices_fhirpath`` / ``default_fhirpath`` (evaluated per page and per
        submission) written back as the ``answerExpression`` / ``initialExpression`` they
        came from; the computed choices are not options of the Questionnaire."""
        for found, name in ((field.choices_fhirpath, "sdc-questionnaire-answerExpression"),
                            (field.default_fhirpath, "sdc-questionnaire-initialExpression")):
            if not found:
                continue
            if found is field.choices_fhirpath:
                item.pop("answerOption", None)
                item.pop("answerValueSet", None)
            extensions.extend(self.variables(found.get("variables")))
            extensions.append({"url": SDC + name, "valueExpression": {
                "language": "text/fhirpath", "expression": found["expression"]}})

    def initial(self, field: FieldSpec, item: dict[str, Any]) -> None:
        """The field's ``default`` as ``initial`` (``initialSelected`` on answer options, as
        R4 requires when they are listed)."""
        values = field.default if field.repeats else [field.default]
        answers = [a for v in values for a in _answers(self.tree, field, v, False, self.locale)]
        if "answerOption" in item:
            chosen = [a.get("valueCoding", a) for a in answers]
            for option in item["answerOption"]:
                value = option.get("valueCoding", option)
                if any(_same(value, c) for c in chosen):
                    option["initialSelected"] = True
        else:
            item["initial"] = answers

    def variables(self, found: Any) -> list[dict[str, Any]]:
        """The SDC variables an item's FHIRPath reads, less the Questionnaire's own."""
        top = list(self.spec.meta.get("variables", []) or []) if self.spec.meta else []
        mine = list(found or [])
        if mine[:len(top)] == top:
            mine = mine[len(top):]
        return [{"url": CORE + "variable", "valueExpression": {
            "name": v["name"], "language": "text/fhirpath", "expression": v["expression"]}}
            for v in mine]

    def options(self, field: FieldSpec, meta: Mapping[str, Any], ftype: str,
                item: dict[str, Any], extensions: list[dict[str, Any]]) -> None:
        systems = meta.get("systems", {}) or {}
        values = meta.get("values", {}) or {}
        weight = ITEM_WEIGHT if meta.get("weight") == "itemWeight" else ORDINAL
        kept = [c for c in field.choices if not (c.other and ftype in ("open-choice", "string"))]
        other = next((c for c in field.choices if c.other), None)
        if other is not None and ftype in ("open-choice", "string") and \
                dict(other.label) != {"zh-CN": "其他", "en": "Other"}:
            text, _ = _text(other.label, self.locale)
            extensions.append({"url": SDC + "sdc-questionnaire-openLabel", "valueString": text})
        value_set = meta.get("value_set")
        if value_set:
            vs_id = value_set[1:] if value_set.startswith("#") else _fhir_id(f"vs-{field.key}")
            concepts = []
            for choice in kept:
                raw = values.get(choice.code, choice.code)
                concept: dict[str, Any] = {"code": raw}
                if systems.get(choice.code):
                    concept = {"system": systems[choice.code], "code": raw}
                text, _ = _text(choice.label, self.locale)
                concept["display"] = text
                designations = [{"language": k, "value": v} for k, v in choice.label.items()
                                if k != self.locale and v != text]
                if designations:
                    concept["designation"] = designations
                if choice.score is not None:
                    concept["extension"] = [{"url": weight, "valueDecimal": choice.score}]
                concepts.append(concept)
            resource: dict[str, Any] = {"resourceType": "ValueSet", "id": vs_id,
                                        "status": "active",
                                        "expansion": {"timestamp": "2026-01-01T00:00:00Z",
                                                      "contains": concepts}}
            if not value_set.startswith("#"):
                resource["url"] = value_set
            self.contained.setdefault(vs_id, resource)
            item["answerValueSet"] = value_set
        else:
            options = []
            value_name = _VALUE.get(ftype, "valueCoding")
            for choice in kept:
                option: dict[str, Any]
                if value_name == "valueCoding":
                    raw = values.get(choice.code, choice.code)
                    coding: dict[str, Any] = {"code": raw}
                    if systems.get(choice.code):
                        coding = {"system": systems[choice.code], "code": raw}
                    text, underscore = _text(choice.label, self.locale)
                    if text is not None:
                        coding["display"] = text
                    if underscore:
                        coding["_display"] = underscore
                    option = {"valueCoding": coding}
                else:
                    raw = values.get(choice.code, choice.code)
                    option = {value_name: int(raw) if value_name == "valueInteger" else raw}
                if choice.score is not None:
                    option["extension"] = [{"url": weight, "valueDecimal": choice.score}]
                options.append(option)
            item["answerOption"] = options
        for bound, name in (("min_selected", "questionnaire-minOccurs"),
                            ("max_selected", "questionnaire-maxOccurs")):
            if field.type == "multiple_choice" and field.options.get(bound) is not None:
                extensions.append(_ext(name, valueInteger=int(field.options[bound])))
        control = meta.get("control")
        display = field.options.get("display")
        if control in _CONTROL_CODE:
            extensions.append(_control(_CONTROL_CODE[str(control)]))
        elif display in _CONTROL_CODE:
            extensions.append(_control(_CONTROL_CODE[str(display)]))

    def numbers(self, field: FieldSpec, meta: Mapping[str, Any], ftype: str,
                item: dict[str, Any], extensions: list[dict[str, Any]]) -> None:
        if field.type == "slider":
            extensions.append(_control("slider"))
        if field.type in ("integer", "decimal", "slider"):
            for name, fhir_name in (("min", "minValue"), ("max", "maxValue")):
                value = field.options.get(name)
                if value is not None:
                    key = "valueInteger" if ftype == "integer" else "valueDecimal"
                    extensions.append(_ext(fhir_name, **{key: value}))
            unit = meta.get("unit")
            if unit:
                extensions.append(_ext("questionnaire-unit", valueCoding=dict(unit)))
            elif isinstance(field.options.get("unit"), Mapping):
                text, _ = _text(field.options["unit"], self.locale)
                extensions.append(_ext("questionnaire-unit", valueCoding={"display": text}))
        for coding in meta.get("unit_options", []) or []:
            extensions.append(_ext("questionnaire-unitOption", valueCoding=dict(coding)))
        if field.type == "measurement":
            units = list(field.options.get("units") or [field.options.get("unit", "mmol/L")])
            for unit_code in units:
                extensions.append(_ext("questionnaire-unitOption", valueCoding={
                    "system": UCUM, "code": unit_code, "display": unit_code}))

    def score_item(self, score: ScoreSpec) -> dict[str, Any]:
        meta = self.meta.get(score.key, {})
        link = str(score.options.get("link_id") or meta.get("link_id") or score.key)
        item: dict[str, Any] = {"linkId": link, "type": str(meta.get("type") or "decimal")}
        text, underscore = _text(score.label, self.locale)
        if text:
            item["text"] = text
        if underscore:
            item["_text"] = underscore
        if meta.get("code"):
            item["code"] = list(meta["code"])
        extensions: list[dict[str, Any]] = []
        if meta.get("hidden"):
            extensions.append(_ext("questionnaire-hidden", valueBoolean=True))
        extensions.extend(self.variables(score.options.get("variables")))
        if score.method == "fhirpath":
            extensions.append({"url": SDC + "sdc-questionnaire-calculatedExpression",
                               "valueExpression": {"language": "text/fhirpath",
                                                   "expression": score.options["fhirpath"]}})
            if meta.get("readOnly"):
                item["readOnly"] = True
        if meta.get("unit"):
            extensions.append(_ext("questionnaire-unit", valueCoding=dict(meta["unit"])))
        if extensions:
            item["extension"] = extensions
        return item


def export_questionnaire(spec: FormSpec, *, version: int | None = None,
                         locale: str = "zh-CN") -> dict[str, Any]:
    """A FHIR R4 Questionnaire for a form (text in ``locale``, the other language as the
    ``translation`` extension); it validates as R4 (``fhir.resources``)."""
    exporter = _Exporter(spec, locale)
    items = exporter.items(None)
    title, title_ext = _text(spec.title, locale)
    out: dict[str, Any] = {"resourceType": "Questionnaire", "id": _fhir_id(spec.key),
                           "url": canonical(spec), "name": _fhir_name(spec.key),
                           "title": title, "status": "active", "language": locale}
    if title_ext:
        out["_title"] = title_ext
    if version is not None:
        out["version"] = str(version)
    elif spec.meta and spec.meta.get("version"):
        out["version"] = str(spec.meta["version"])
    if spec.meta and spec.meta.get("code"):
        out["code"] = list(spec.meta["code"])
    if exporter.contained:
        out["contained"] = list(exporter.contained.values())
    variables = list(spec.meta.get("variables", []) or []) if spec.meta else []
    if variables:
        out["extension"] = [{"url": CORE + "variable", "valueExpression": {
            "name": v["name"], "language": "text/fhirpath", "expression": v["expression"]}}
            for v in variables]
    out["item"] = items
    return out


def _same(option: Mapping[str, Any], answer: Mapping[str, Any]) -> bool:
    """An answer option and an answer coding (or primitive value) name the same answer."""
    if "code" in option:
        return option.get("code") == answer.get("code") and \
            option.get("system") == answer.get("system")
    return any(k.startswith("value") and answer.get(k) == v for k, v in option.items())


def _fhir_id(key: str) -> str:
    """R4 ids are ``[A-Za-z0-9\\-.]{1,64}``: a key's ``_`` becomes ``-``."""
    return key.replace("_", "-")[:64]


def _fhir_name(key: str) -> str:
    """R4 names should be computer-friendly: ``phq9_total`` → ``Phq9Total``."""
    return "".join(part.capitalize() for part in key.split("_")) or "Form"


def fhir_item(field: FieldSpec, locale: str) -> dict[str, Any] | None:
    """The Questionnaire item of a field, as its type maps it (``None``: no item)."""
    from careloop.engine.i18n import pick
    from careloop.forms.fields import fhir_option

    mapping = fhir_map(field)
    if not mapping.item_type:
        return None
    item: dict[str, Any] = {"linkId": _link(field), "type": mapping.item_type,
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


def _unique_variables(extensions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An item's extensions with each SDC variable once (a condition, an initial value and
    answer options may read the same variables in scope)."""
    seen: set[str] = set()
    out = []
    for ext in extensions:
        if ext.get("url") == CORE + "variable":
            name = str(ext.get("valueExpression", {}).get("name"))
            if name in seen:
                continue
            seen.add(name)
        out.append(ext)
    return out
