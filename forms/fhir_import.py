"""FHIR R4 / SDC Questionnaire → form definition, under one fidelity rule.

Every element and extension of the Questionnaire is either carried with its meaning, ignored
because it is layout only (listed in :data:`LAYOUT`, documented in docs/forms.md), or refused:
a refusal is a located note (``item[3].item[0].extension[sdc-questionnaire-calculatedExpression]:
…``) and an ``import.unresolved`` entry, which the form compiler reports as
``form.import-unresolved`` — the form saves as a draft and does not publish until resolved.

    item (group)              → section, its items follow (its enableWhen joins theirs)
    item (group, repeats)     → repeat_group with its items as sub-fields
    item under a question     → a field after its parent (``fhir.items[key].parent``)
    choice / open-choice      → single_choice / multiple_choice (repeats), choices expanded
                                from answerOption or answerValueSet (contained, bundle, catalogue)
    calculatedExpression      → a score ``method: fhirpath`` (variables in scope), computed on
                                the server by fhirpathpy inside Careloop's limits
    initialExpression         → the field's ``default``, answerExpression → its choices: both
                                evaluated once at import (as SDC populates a form: an empty
                                response), written back by the export; refused when the value
                                would not be constant (clock, launch context, the answers)
    questionnaire-unit        → the field's ``unit``; quantity + unitOption → measurement
    itemControl               → radio / dropdown / slider / check-box
    language + translation    → labels under zh-CN / en

Structure Careloop needs for an exact export is kept under the form's ``fhir`` key (``items``:
per field or score its parent, FHIR item type when it differs, UCUM unit, coding systems,
position), so import → export → import is a fixpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from careloop.forms import fhir_valuesets as valuesets
from careloop.forms.fhir_import_base import (  # re-exported: the import's vocabulary
    _REFUSED,
    CAREL_EXPR,
    CONTROL_CHOICE,
    CONTROL_HELP,
    CONTROL_LAYOUT,
    CORE,
    ITEM_WEIGHT,
    KNOWN_TOTALS,
    LAYOUT,
    LOINC,
    NATURAL,
    ORDINAL,
    SDC,
    SIMPLE_TYPES,
    TRANSLATION,
    Result,
    Scope,
    _control,
    _control_of,
    _join,
    _option,
    key_from_link_id,
    locale_of,
    safe_code,
    short,
)
from careloop.forms.fhir_import_logic import LogicImport

__all__ = ["CAREL_EXPR", "CONTROL_CHOICE", "CONTROL_HELP", "CONTROL_LAYOUT", "CORE",
           "ITEM_WEIGHT", "KNOWN_TOTALS", "LAYOUT", "LOINC", "NATURAL", "ORDINAL", "SDC",
           "SIMPLE_TYPES", "TRANSLATION", "_REFUSED", "Importer", "Result", "Scope",
           "import_questionnaire", "key_from_link_id", "locale_of", "safe_code", "short"]


def repeatable(field_type: str) -> bool:
    """The field type takes ``repeats`` and ``read_only`` (:attr:`FieldType.repeatable`)."""
    from careloop.forms.fields import FIELD_TYPES

    found = FIELD_TYPES.get(field_type)
    return found is not None and found.repeatable


class Importer(LogicImport):
    """One Questionnaire's import: items, groups, types, numbers and choices."""

    def items(self, items: list[dict[str, Any]], scope: Scope) -> Iterator[dict[str, Any]]:
        for index, item in enumerate(items):
            yield from self.item(item, Scope(f"{scope.path}item[{index}]", scope.parent,
                                             scope.group, scope.condition,
                                             list(scope.variables)), index)

    def item(self, item: dict[str, Any], scope: Scope, position: int
             ) -> Iterator[dict[str, Any]]:
        where = scope.path
        link_id = str(item.get("linkId"))
        key = self.keys[link_id]
        if item.get("linkId") is None:
            self.refuse(f"{where}.linkId", "an item without a linkId: answers could not be "
                        "matched to it")
        if key in self.emitted:
            self.refuse(f"{where}.linkId", f"linkId {link_id!r} is used twice")
            base, n = key, 2
            while key in self.used:
                key, n = f"{base[:60]}_{n}", n + 1
            self.used.add(key)
        self.emitted.add(key)
        kind = str(item.get("type"))
        meta: dict[str, Any] = {}
        if scope.parent:
            meta["parent"] = scope.parent
        exts = self.extensions(item, where)
        for ext in exts.pop("variable", []):
            found = self.variable(ext, f"{where}.extension[variable]")
            if found is not None:
                scope.variables.append(found)
        for ext_key in ("modifierExtension",):
            if item.get(ext_key):
                self.refuse(f"{where}.{ext_key}", "a modifier extension changes the item's "
                            "meaning and is not understood")
        self.unknown_keys(item, where)
        codes = list(item.get("code", []) or [])
        label = self.text(item.get("text"), item.get("_text"), f"{where}._text")
        calc = exts.pop("sdc-questionnaire-calculatedExpression", [])
        hidden = bool(exts.pop("questionnaire-hidden", [{}])[0].get("valueBoolean", False)) \
            if "questionnaire-hidden" in exts else False
        if hidden:
            meta["hidden"] = True
        loinc = next((c.get("code") for c in codes if c.get("system") == LOINC), None)
        if calc:
            self.calculated(item, scope, key, kind, calc[0], label, codes, meta, exts,
                            position)
            return
        if (kind in ("decimal", "integer") and not item.get("item")
                and (loinc in KNOWN_TOTALS or "total score" in str(item.get("text", "")).lower())):
            self.total = (link_id, key, KNOWN_TOTALS.get(str(loinc)))
            self.score_keys.add(key)
            self.items_meta[key] = {**meta, "total": True, "position": position, "type": kind,
                                    "link_id": link_id, **({"code": codes} if codes else {})}
            self.rest(exts, item, where)
            return
        body: dict[str, Any] = {"key": key, "link_id": link_id}
        if label:
            body["label"] = label
        if codes:
            body["code"] = {k: v for k, v in codes[0].items() if k in ("system", "code",
                                                                       "display")}
            if len(codes) > 1:
                meta["code"] = codes
        condition = self.conditions(item, scope, exts, body)
        if hidden and kind != "group":
            self.refuse(f"{where}.extension[questionnaire-hidden]",
                        "a hidden item that is not calculated: Careloop has no hidden "
                        "answerable field")
        full = _join(scope.condition, condition)
        if full:
            body["visible_if"] = full
        if item.get("required"):
            body["required"] = True
        if kind == "group":
            yield from self.group(item, scope, key, body, meta, exts, full)
            return
        if not item.get("repeats"):
            self.occurs(body, meta, exts, where)
        populated = self.answer_expression(item, scope, kind, exts, meta, body)
        populated, initial_at = self.initial_expression(populated, scope, exts, meta, body)
        computed: dict[str, Any] = {name: body.pop(name) for name in (
            "choices_fhirpath", "default_fhirpath") if name in body}
        self.typed(populated, scope, key, kind, body, meta, exts,
                   dynamic="choices_fhirpath" in computed)
        self.initial(populated, body, meta, where, initial_at)
        if "default_fhirpath" in computed:  # checked on today's value, evaluated per page
            body.pop("default", None)
        body.update(computed)
        if item.get("readOnly") and repeatable(str(body["type"])):
            body["read_only"] = True
        elif item.get("readOnly"):
            self.refuse(f"{where}.readOnly", f"a read-only {kind} item that is not calculated: "
                        "only text, number, date and time fields can be read-only")
        self.rest(exts, item, where)
        if meta:
            self.items_meta[key] = meta
        yield body
        children = list(item.get("item", []) or [])
        if children:
            helps = [c for c in children if c.get("type") == "display"
                     and _control(c) in CONTROL_HELP][:1]
            for child in helps:
                text = self.text(child.get("text"), child.get("_text"),
                                 f"{where}.item[{children.index(child)}]._text")
                body.setdefault("help", {}).update(text)
                meta.setdefault("help_link_ids", []).append(child.get("linkId"))
                self.items_meta[key] = meta
                self.rest(self.extensions(child, f"{where}.item[{children.index(child)}]",
                                          skip_control=True), child, where)
            for index, child in enumerate(children):
                if child not in helps:
                    yield from self.item(child, Scope(f"{where}.item[{index}]", key,
                                                      scope.group, full,
                                                      list(scope.variables)), index)

    def group(self, item: dict[str, Any], scope: Scope, key: str, body: dict[str, Any],
              meta: dict[str, Any], exts: dict[str, list[dict[str, Any]]],
              condition: str | None) -> Iterator[dict[str, Any]]:
        where = scope.path
        link_id = str(item.get("linkId"))
        children = list(item.get("item", []) or [])
        control = exts.pop("questionnaire-itemControl", [])
        self.control_layout(control, where)
        if item.get("readOnly"):
            self.refuse(f"{where}.readOnly", "a read-only group")
        lo = exts.pop("questionnaire-minOccurs", [])
        hi = exts.pop("questionnaire-maxOccurs", [])
        if item.get("repeats"):
            if scope.group:
                self.refuse(f"{where}.repeats", "a repeating group inside a repeating group: "
                            "Careloop has no nested repeats")
                return
            body["type"] = "repeat_group"
            self.kinds[key] = "repeat_group"
            if lo:
                body["min_items"] = int(lo[0].get("valueInteger", 0))
            if hi:
                body["max_items"] = int(hi[0].get("valueInteger", 50))
            inner = Scope(f"{where}.", key, key, None, list(scope.variables))
            sub = list(self.items(children, inner))
            if not sub:
                self.refuse(f"{where}.item", "a repeating group without items")
                empty = f"{link_id}-empty"
                empty_key = key_from_link_id(empty)
                sub = [{"key": empty_key, "link_id": empty, "type": "display"}]
                self.items_meta[empty_key] = {"parent": key}
            body["fields"] = sub
            self.rest(exts, item, where)
            if meta:
                self.items_meta[key] = meta
            if body.get("required"):
                body["min_items"] = max(1, int(body.get("min_items", 1)))
            yield body
            return
        for name, found in (("questionnaire-minOccurs", lo), ("questionnaire-maxOccurs", hi)):
            if found:
                self.refuse(f"{where}.extension[{name}]", "occurrence limits on a group that "
                            "does not repeat")
        body["type"] = "section"
        if meta.get("hidden"):
            if item.get("enableWhen") or any(self.answerable(c) for c in children):
                self.refuse(f"{where}.extension[questionnaire-hidden]", "a hidden group with "
                            "a condition or with items a patient answers")
            else:
                body["hidden"] = True
        if body.pop("required", None):
            self.refuse(f"{where}.required", "a required group (one of its items must be "
                        "answered) has no Careloop equivalent")
        self.kinds[key] = "section"
        self.rest(exts, item, where)
        if meta:
            self.items_meta[key] = meta
        yield body
        yield from self.items(children, Scope(f"{where}.", key, scope.group, condition,
                                              list(scope.variables)))

    def occurs(self, body: dict[str, Any], meta: dict[str, Any],
               exts: dict[str, list[dict[str, Any]]], where: str) -> None:
        """``minOccurs`` / ``maxOccurs`` on an item that does not repeat: at most one answer,
        so ``minOccurs`` 1 is ``required`` and 0 or ``maxOccurs`` 1 say nothing more (kept
        for the export); anything else contradicts the item and is refused."""
        for name, allowed in (("questionnaire-minOccurs", (0, 1)),
                              ("questionnaire-maxOccurs", (1,))):
            found = exts.pop(name, [])
            if not found:
                continue
            value = found[0].get("valueInteger")
            if value not in allowed:
                self.refuse(f"{where}.extension[{name}]", f"{value!r} occurrences on an item "
                            "that does not repeat")
                continue
            meta["min_occurs" if name.endswith("minOccurs") else "max_occurs"] = value
            if name.endswith("minOccurs") and value == 1:
                body["required"] = True

    def answerable(self, item: Mapping[str, Any]) -> bool:
        """The item, or one under it, is answered by the patient (not calculated, not text)."""
        key = self.keys.get(str(item.get("linkId")))
        own = item.get("type") not in ("group", "display") and key not in self.score_keys
        return own or any(self.answerable(c) for c in item.get("item", []) or [])

    def typed(self, item: dict[str, Any], scope: Scope, key: str, kind: str,
              body: dict[str, Any], meta: dict[str, Any],
              exts: dict[str, list[dict[str, Any]]], *, dynamic: bool = False) -> None:
        """The field type; ``dynamic``: the choices are computed from the answers
        (``choices_fhirpath``), so the field has none of its own but "other"."""
        where = scope.path
        control = _control_of(exts.pop("questionnaire-itemControl", []))
        has_options = bool(item.get("answerOption") or item.get("answerValueSet")) or dynamic
        if kind in ("choice", "open-choice", "coding") or (has_options and kind in (
                "integer", "date", "time", "string")):
            repeats = bool(item.get("repeats"))
            body["type"] = "multiple_choice" if repeats else "single_choice"
            body["choices"] = [] if dynamic else self.choices(item, key, meta, where)
            if kind == "open-choice" or (has_options and kind == "string"):
                other = self.text(None, None, where)
                label = exts.pop("sdc-questionnaire-openLabel", [])
                if label:
                    other = {self.locale: str(label[0].get("valueString"))}
                body["choices"].append({"code": "other", "other": True,
                                        "label": other or {"zh-CN": "其他", "en": "Other"}})
            if not body["choices"]:
                del body["choices"]  # computed ones only (choices_fhirpath)
            if kind != "choice":
                meta["type"] = kind
            for name, option in (("questionnaire-minOccurs", "min_selected"),
                                 ("questionnaire-maxOccurs", "max_selected")):
                found = exts.pop(name, [])
                if found and repeats:
                    body[option] = int(found[0].get("valueInteger", 0))
                elif found:
                    self.refuse(f"{where}.extension[{name}]", "occurrences on an item that "
                                "does not repeat")
            if control in ("radio", "dropdown") and not repeats:
                body["display"] = control
            elif control == "check-box" and not repeats:
                self.refuse(f"{where}.extension[questionnaire-itemControl]",
                            "check-boxes on an item that does not repeat")
            elif control not in (None, "radio", "dropdown", "check-box", "layout"):
                self.refuse(f"{where}.extension[questionnaire-itemControl]",
                            f"item control {control!r} has no Careloop widget")
            if control and control != "layout":
                meta["control"] = control
        elif kind in SIMPLE_TYPES:
            body["type"] = SIMPLE_TYPES[kind]
            if control == "slider" and kind in ("integer", "decimal"):
                body["type"] = "slider"
                meta["type"] = kind
                meta["control"] = "slider"
            elif control not in (None, "layout"):
                self.refuse(f"{where}.extension[questionnaire-itemControl]",
                            f"item control {control!r} on a {kind} item has no Careloop widget")
            if item.get("repeats") and kind != "display":
                if repeatable(str(body["type"])):
                    body["repeats"] = True
                else:
                    self.refuse(f"{where}.repeats", f"a repeating {kind} item: a "
                                f"{body['type']} field holds one answer (put it in a repeating "
                                "group instead)")
            self.numeric(item, kind, body, meta, exts, where)
        else:
            self.refuse(f"{where}.type", f"item type {kind!r} has no field type")
            body["type"] = "short_text"
            meta["type"] = kind
        if isinstance(item.get("maxLength"), int) and body["type"] in ("short_text",
                                                                        "long_text"):
            body["max_length"] = item["maxLength"]
        self.kinds[key] = str(body["type"])

    def initial(self, item: Mapping[str, Any], body: dict[str, Any], meta: Mapping[str, Any],
                where: str, at: str | None = None) -> None:
        """``initial`` / ``initialSelected`` (or the values of an ``initialExpression``, which
        a refusal names: ``at``) → the field's ``default`` (what the patient page starts
        with), as an answer of the field's type."""
        at = at or f"{where}.initial"
        selected = [c["code"] for c, o in zip(body.get("choices", []),
                                              item.get("answerOption", []) or [], strict=False)
                    if o.get("initialSelected")]
        values = [initial_value(v, body, meta) for v in item.get("initial", []) or []]
        values = selected + [v for v in values if v is not None]
        if len(values) < len(item.get("initial", []) or []) + len(selected):
            self.refuse(at, "an initial value of a kind the field does not take")
            return
        if not values:
            return
        if body.get("type") == "multiple_choice" or body.get("repeats"):
            body["default"] = values
        elif len(values) > 1:
            self.refuse(at, "several initial values on an item that does not repeat")
        else:
            body["default"] = values[0]

    def numeric(self, item: dict[str, Any], kind: str, body: dict[str, Any],
                meta: dict[str, Any], exts: dict[str, list[dict[str, Any]]], where: str) -> None:
        from careloop.forms.fields import UNITS

        units = exts.pop("questionnaire-unit", [])
        options = exts.pop("questionnaire-unitOption", [])
        for name in ("minValue", "maxValue"):
            found = exts.pop(name, [])
            if found and kind in ("integer", "decimal"):
                value = found[0].get("valueInteger", found[0].get("valueDecimal"))
                body["min" if name == "minValue" else "max"] = value
            elif found:
                self.refuse(f"{where}.extension[{name}]", f"a bound on a {kind} item")
        if kind == "quantity":
            codes = [str(o.get("valueCoding", {}).get("code")) for o in options]
            codes += [str(u.get("valueCoding", {}).get("code")) for u in units]
            unknown = [c for c in codes if c not in UNITS]
            if not codes:
                self.refuse(f"{where}.type", "a quantity without questionnaire-unit or "
                            "unitOption: the unit to measure in is unknown")
                body["type"] = "decimal"
                meta["type"] = "quantity"
                return
            if unknown:
                self.refuse(f"{where}.extension[questionnaire-unitOption]",
                            f"unit(s) {', '.join(unknown)} are not among the units Careloop "
                            f"converts ({', '.join(sorted(UNITS))})")
                body["type"] = "decimal"
                meta["type"] = "quantity"
                meta["unit_options"] = [o.get("valueCoding", {}) for o in options + units]
                return
            body["unit"] = codes[0]
            body["units"] = list(dict.fromkeys(codes))
            return
        if units and kind in ("integer", "decimal"):
            coding = units[0].get("valueCoding", {})
            body["unit"] = {self.locale: str(coding.get("display") or coding.get("code"))}
            meta["unit"] = {k: v for k, v in coding.items() if k in ("system", "code",
                                                                     "display")}
        elif units or options:
            self.refuse(f"{where}.extension[questionnaire-unit]", f"a unit on a {kind} item")

    def choices(self, item: dict[str, Any], key: str, meta: dict[str, Any],
                where: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        systems: dict[str, str] = {}
        values: dict[str, str] = {}
        weight_url = None
        if item.get("answerValueSet"):
            found = valuesets.resolve(str(item["answerValueSet"]), self.contained, self.bundle)
            if found.problem:
                self.refuse(f"{where}.answerValueSet", found.problem)
                return [{"code": "unresolved", "label": {"zh-CN": "（未导入的选项）",
                                                         "en": "(options not imported)"}}]
            meta["value_set"] = str(item["answerValueSet"])
            taken: set[str] = set()
            for concept in found.concepts:
                code = base = safe_code(concept.code)
                n = 2
                while code in taken:
                    code, n = f"{base[:60]}_{n}", n + 1
                taken.add(code)
                if code != concept.code:
                    values[code] = concept.code
                label = {self.locale: concept.display}
                for lang, text in concept.designations:
                    locale = locale_of(lang)
                    if locale:
                        label.setdefault(locale, text)
                choice: dict[str, Any] = {"code": code, "label": label}
                if concept.score is not None:
                    choice["score"] = concept.score
                if concept.system:
                    systems[code] = concept.system
                out.append(choice)
        for index, option in enumerate(item.get("answerOption", []) or []):
            at = f"{where}.answerOption[{index}]"
            raw, display, system, element = _option(option)
            if raw is None:
                self.refuse(at, "an answer option without a value")
                continue
            code = safe_code(raw)
            if code != raw:
                values[code] = raw
            label = self.text(display, element, f"{at}.valueCoding._display")
            choice = {"code": code, "label": label or {self.locale: code}}
            for ext in list(option.get("extension", []) or []) + list(
                    (option.get("valueCoding") or {}).get("extension", []) or []):
                url = ext.get("url")
                if url in (ORDINAL, ITEM_WEIGHT):
                    value = ext.get("valueDecimal", ext.get("valueInteger"))
                    if isinstance(value, int | float):
                        choice["score"] = float(value)
                        weight_url = url
                elif url not in LAYOUT:
                    self.refuse(f"{at}.extension[{short(str(url))}]",
                                "an answer option extension Careloop does not carry")
            if system:
                systems[code] = system
            out.append(choice)
        if weight_url == ITEM_WEIGHT:
            meta["weight"] = "itemWeight"
        if systems:
            meta["systems"] = systems
        if values:
            meta["values"] = values
        if not out:
            self.refuse(where, "a choice item without answer options")
            out.append({"code": "unresolved", "label": {"zh-CN": "（未导入的选项）",
                                                        "en": "(options not imported)"}})
        return out


def initial_value(value: Mapping[str, Any], body: Mapping[str, Any],
                  meta: Mapping[str, Any]) -> Any:
    """One FHIR ``initial`` as the stored answer of the field ``body`` describes (``None``
    when it does not fit): a coding as its choice code, a boolean as ``yes``/``no``, a
    quantity as ``{"value", "unit"}``.

        >>> initial_value({"valueBoolean": False}, {"type": "yes_no"}, {})
        'no'
    """
    codes = {str(raw): code for code, raw in (meta.get("values") or {}).items()}
    for name, raw in value.items():
        if not name.startswith("value"):
            continue
        if name == "valueBoolean":
            return ("yes" if raw else "no") if body.get("type") == "yes_no" else None
        if name == "valueCoding":
            code = str(raw.get("code"))
            code = codes.get(code, code)
            return code if any(c["code"] == code for c in body.get("choices", [])) else None
        if name == "valueQuantity":
            return _initial_quantity(raw, body)
        if body.get("choices"):
            code = codes.get(str(raw), safe_code(str(raw)))
            return code if any(c["code"] == code for c in body["choices"]) else None
        if name == "valueDateTime" and isinstance(raw, str):
            from careloop.forms.fhir_qr import _datetime_in

            raw = _datetime_in(raw)   # the hospital's wall clock, as a datetime field stores
        return raw if body.get("type") in _INITIAL_TYPES.get(name, ()) else None
    return None


def _initial_quantity(raw: Mapping[str, Any], body: Mapping[str, Any]) -> Any:
    """An initial quantity in one of the field's units, or converted to its unit when it is
    the same kind of quantity (1.8 m → 180 cm); ``None`` otherwise."""
    from careloop.forms.fields import UNITS, convert

    unit, value = raw.get("code") or raw.get("unit"), raw.get("value")
    allowed = body.get("units") or [body.get("unit")]
    if unit in allowed:
        return {"value": value, "unit": unit}
    target = body.get("unit")
    if isinstance(value, int | float) and unit in UNITS and target in UNITS and \
            UNITS[str(unit)][0] == UNITS[str(target)][0]:
        return {"value": round(convert(float(value), str(unit), str(target)), 9),
                "unit": target}
    return None


#: which field types an ``initial`` value[x] fits (choices and quantities are matched above)
_INITIAL_TYPES = {"valueString": ("short_text", "long_text"), "valueUri": ("short_text",),
                  "valueInteger": ("integer", "decimal", "slider"),
                  "valueDecimal": ("decimal", "slider"), "valueDate": ("date",),
                  "valueDateTime": ("datetime",), "valueTime": ("time",)}


def import_questionnaire(questionnaire: Mapping[str, Any], key: str | None = None, *,
                         bundle: list[Mapping[str, Any]] | None = None) -> Result:
    """Translate a FHIR R4 Questionnaire (``bundle``: the other resources of its Bundle)."""
    if questionnaire.get("resourceType") != "Questionnaire":
        raise ValueError("not a FHIR Questionnaire (resourceType)")
    importer = Importer(questionnaire, bundle)
    if questionnaire.get("language") and locale_of(questionnaire.get("language")) is None:
        importer.refuse("language", f"language {questionnaire['language']!r}: forms carry "
                        "zh-CN and en labels only (the text is kept under en)")
    items = list(questionnaire.get("item", []) or [])
    importer.assign(items)
    variables: list[dict[str, str]] = []
    exts = importer.extensions(questionnaire, "")
    for ext in exts.pop("variable", []):
        found = importer.variable(ext, "extension[variable]", on_item=False)
        if found is not None:
            variables.append(found)
    importer.rest({k: v for k, v in exts.items()}, questionnaire, "")
    if questionnaire.get("modifierExtension"):
        importer.refuse("modifierExtension", "a modifier extension is not understood")
    for index, resource in enumerate(questionnaire.get("contained", []) or []):
        if resource.get("resourceType") != "ValueSet":
            importer.note(f"contained[{index}]", f"a contained {resource.get('resourceType')} "
                          "is not used by the form")
    fields = list(importer.items(items, Scope("", variables=variables)))
    title_text = importer.text(questionnaire.get("title") or questionnaire.get("name")
                               or "Questionnaire", questionnaire.get("_title"), "_title")
    first = next(iter(title_text.values()))
    title = {"zh-CN": title_text.get("zh-CN", first), "en": title_text.get("en", first)}
    body: dict[str, Any] = {
        "kind": "form",
        "key": key or key_from_link_id(str(questionnaire.get("name")
                                           or questionnaire.get("id") or "imported")),
        "title": title,
        "default_locale": importer.locale,
        "fields": fields or [{"key": "empty", "type": "display",
                              "label": {"en": "(no items)"}}],
    }
    fhir: dict[str, Any] = {}
    for name in ("url", "version", "code"):
        if questionnaire.get(name):
            fhir[name] = questionnaire[name]
    if str(fhir.get("url", "")).startswith("urn:careloop:form:"):
        del fhir["url"]  # the URN a form without a canonical URL exports under
    if importer.scores:
        body["scores"] = importer.scores
    if importer.total is not None and not importer.scores:
        link_id, total_key, bands = importer.total
        scored = [f["key"] for f in fields if f.get("choices")
                  and all("score" in c for c in f["choices"])]
        score: dict[str, Any] = {"key": total_key, "label": {"zh-CN": "总分",
                                                             "en": "Total score"},
                                 "method": "sum", "fields": scored}
        if bands:
            score["bands"] = bands
        body["scores"] = [score]
        fhir["total_link_id"] = link_id
        fhir["total_score"] = total_key
    elif importer.total is not None:
        importer.refuse(importer.total[0], "a total item without a calculation, beside FHIRPath "
                        "calculations")
    if importer.items_meta:
        fhir["items"] = importer.items_meta
    if variables:
        fhir["variables"] = variables
    if fhir:
        body["fhir"] = fhir
    body["import"] = {"source": "fhir", "unresolved": importer.refused}
    return Result(body, importer.notes, importer.refused)
