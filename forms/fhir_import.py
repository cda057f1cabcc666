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
    questionnaire-unit        → the field's ``unit``; quantity + unitOption → measurement
    itemControl               → radio / dropdown / slider / check-box
    language + translation    → labels under zh-CN / en

Structure Careloop needs for an exact export is kept under the form's ``fhir`` key (``items``:
per field or score its parent, FHIR item type when it differs, UCUM unit, coding systems,
position), so import → export → import is a fixpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from careloop.forms import fhir_valuesets as valuesets
from careloop.forms.fhirpath import check_expression

LOINC = "http://loinc.org"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
CORE = "http://hl7.org/fhir/StructureDefinition/"
TRANSLATION = CORE + "translation"
ORDINAL = CORE + "ordinalValue"
ITEM_WEIGHT = CORE + "itemWeight"
CAREL_EXPR = "text/x-careloop-expression"

# Known instruments: LOINC code of the total-score item → bands.
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
#: the FHIR item type each field type exports as; a field whose source type differs keeps it
NATURAL = {"yes_no": "boolean", "decimal": "decimal", "integer": "integer", "date": "date",
           "datetime": "dateTime", "time": "time", "short_text": "string", "long_text": "text",
           "file": "attachment", "measurement": "quantity", "display": "display",
           "single_choice": "choice", "multiple_choice": "choice", "section": "group",
           "repeat_group": "group", "slider": "decimal"}

#: extensions that only say how to lay a form out: not carried, and no meaning is lost
LAYOUT = {
    CORE + "questionnaire-choiceOrientation": "choice layout (horizontal / vertical)",
    CORE + "questionnaire-displayCategory": "display category (instructions / security)",
    CORE + "rendering-xhtml": "rich text rendering (the plain text is kept)",
    CORE + "rendering-markdown": "markdown rendering (the plain text is kept)",
    CORE + "rendering-style": "CSS style",
    CORE + "designNote": "a note for form designers",
    CORE + "questionnaire-optionPrefix": "a prefix shown before an answer option",
    CORE + "questionnaire-supportLink": "a link to support material",
    CORE + "entryFormat": "an input hint",
    SDC + "sdc-questionnaire-entryFormat": "an input hint",
    CORE + "artifact-versionAlgorithm": "how versions are compared",
    SDC + "sdc-questionnaire-preferredTerminologyServer": (
        "a terminology server: never contacted, value sets are expanded offline"),
    CORE + "terminology-server": "a terminology server: never contacted",
    "http://hl7.org/fhir/StructureDefinition/questionnaire-sliderStepValue": "slider step",
}
#: item-control codes and what they become
CONTROL_CHOICE = {"radio-button": "radio", "drop-down": "dropdown", "autocomplete": "dropdown",
                  "check-box": "check-box"}
CONTROL_LAYOUT = {"gtable", "htable", "table", "grid", "list", "tab-container", "header",
                  "footer", "spinner", "text-box", "page", "legal", "prompt"}
CONTROL_HELP = {"help", "flyover"}


def key_from_link_id(link_id: str) -> str:
    """The rule: lower-case; every run of characters other than a–z, 0–9 becomes ``_``; leading
    and trailing ``_`` are dropped; a key that would start with a digit (or be empty) gets ``q_``;
    at most 64 characters. Duplicates get ``_2``, ``_3`` …"""
    key = re.sub(r"[^a-z0-9]+", "_", link_id.lower()).strip("_")
    if not key or not key[0].isalpha():
        key = "q_" + key
    return key[:64]


def locale_of(code: str | None) -> str | None:
    """FHIR language code → a form locale (``zh``, ``zh-CN``, ``zh-Hans`` → zh-CN; ``en*`` →
    en); ``None`` for a language forms cannot carry."""
    if not code:
        return None
    low = code.lower()
    if low.startswith("zh"):
        return "zh-CN"
    if low == "en" or low.startswith("en-"):
        return "en"
    return None


def short(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Scope:
    """Where an item sits: its located path, parent field key, repeat group, inherited
    condition and FHIRPath variables in scope."""

    path: str
    parent: str | None = None
    group: str | None = None
    condition: str | None = None
    variables: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Result:
    body: dict[str, Any]
    notes: list[str]
    refused: list[dict[str, Any]]


class Importer:
    """One Questionnaire's import (two passes: keys for every linkId first, then fields)."""

    def __init__(self, questionnaire: Mapping[str, Any],
                 bundle: list[Mapping[str, Any]] | None = None) -> None:
        self.q = questionnaire
        self.contained = valuesets.index(list(questionnaire.get("contained", []) or []))
        self.bundle = valuesets.index(list(bundle or []))
        self.keys: dict[str, str] = {}
        self.used: set[str] = set()
        self.kinds: dict[str, str] = {}      # field key -> Careloop type
        self.groups: dict[str, str] = {}     # field key -> repeat group key it is in
        self.score_keys: set[str] = set()
        self.notes: list[str] = []
        self.refused: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        self.items_meta: dict[str, dict[str, Any]] = {}
        self.locale = locale_of(questionnaire.get("language")) or "en"
        self.total: tuple[str, str, list[dict[str, Any]] | None] | None = None
        self.renames: dict[str, str] = {}
        self.emitted: set[str] = set()

    # -- reporting -------------------------------------------------------------------------
    def refuse(self, where: str, message: str) -> None:
        self.refused.append({"field": where, "message": message})
        self.notes.append(f"{where}: refused: {message}")

    def note(self, where: str, message: str) -> None:
        self.notes.append(f"{where}: {message}")

    # -- keys ------------------------------------------------------------------------------
    def assign(self, items: list[dict[str, Any]], group: str | None = None) -> None:
        """Keys for every linkId, and what conditions need to know before the items are
        read (a condition may name a later item): its kind, its repeat group, whether it is
        calculated."""
        for item in items:
            link_id = str(item.get("linkId"))
            base = key_from_link_id(link_id)
            key, n = base, 2
            while key in self.used:
                key, n = f"{base[:60]}_{n}", n + 1
            self.used.add(key)
            self.keys[link_id] = key
            kind = str(item.get("type"))
            urls = {short(str(e.get("url"))) for e in item.get("extension", []) or []}
            if "sdc-questionnaire-calculatedExpression" in urls:
                self.score_keys.add(key)
            if kind in ("choice", "open-choice", "coding") or item.get("answerOption") or \
                    item.get("answerValueSet"):
                self.kinds[key] = "multiple_choice" if item.get("repeats") else "single_choice"
            else:
                self.kinds[key] = SIMPLE_TYPES.get(kind, kind)
            if group:
                self.groups[key] = group
            inner = key if kind == "group" and item.get("repeats") and not group else group
            self.assign(list(item.get("item", []) or []), inner)

    # -- text ------------------------------------------------------------------------------
    def text(self, value: Any, element: Mapping[str, Any] | None, where: str) -> dict[str, str]:
        out: dict[str, str] = {}
        if isinstance(value, str) and value:
            out[self.locale] = value
        for ext in (element or {}).get("extension", []) or []:
            if ext.get("url") != TRANSLATION:
                if ext.get("url") not in LAYOUT:
                    self.refuse(f"{where}.extension[{short(str(ext.get('url')))}]",
                                "an extension on the text that Careloop does not carry")
                continue
            parts = {e.get("url"): e for e in ext.get("extension", []) or []}
            lang = parts.get("lang", {}).get("valueCode")
            content = parts.get("content", {}).get("valueString")
            locale = locale_of(lang)
            if locale is None:
                self.refuse(f"{where}.extension[translation]",
                            f"a translation into {lang!r}: forms carry zh-CN and en labels only")
            elif content:
                out.setdefault(locale, content)
        return out

    # -- items -----------------------------------------------------------------------------
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
        condition = self.conditions(item, scope, exts)
        if hidden:
            self.refuse(f"{where}.extension[questionnaire-hidden]",
                        "a hidden item that is not calculated: Careloop has no hidden "
                        "answerable field")
        if item.get("readOnly"):
            self.refuse(f"{where}.readOnly", "a read-only item that is not calculated: no "
                        "read-only field option")
        if item.get("initial") or any(o.get("initialSelected") for o in
                                      item.get("answerOption", []) or []):
            self.refuse(f"{where}.initial", "an initial value: field defaults are not applied "
                        "by the form runtime")
        full = _join(scope.condition, condition)
        if full:
            body["visible_if"] = full
        if item.get("required"):
            body["required"] = True
        if kind == "group":
            yield from self.group(item, scope, key, body, meta, exts, full)
            return
        self.typed(item, scope, key, kind, body, meta, exts)
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

    def typed(self, item: dict[str, Any], scope: Scope, key: str, kind: str,
              body: dict[str, Any], meta: dict[str, Any],
              exts: dict[str, list[dict[str, Any]]]) -> None:
        where = scope.path
        control = _control_of(exts.pop("questionnaire-itemControl", []))
        has_options = bool(item.get("answerOption") or item.get("answerValueSet"))
        if kind in ("choice", "open-choice", "coding") or (has_options and kind in (
                "integer", "date", "time", "string")):
            repeats = bool(item.get("repeats"))
            body["type"] = "multiple_choice" if repeats else "single_choice"
            body["choices"] = self.choices(item, key, meta, where)
            if kind == "open-choice" or (has_options and kind == "string"):
                other = self.text(None, None, where)
                label = exts.pop("sdc-questionnaire-openLabel", [])
                if label:
                    other = {self.locale: str(label[0].get("valueString"))}
                body["choices"].append({"code": "other", "other": True,
                                        "label": other or {"zh-CN": "其他", "en": "Other"}})
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
                self.refuse(f"{where}.repeats", f"a repeating {kind} item: a field holds one "
                            "answer (put it in a repeating group instead)")
            self.numeric(item, kind, body, meta, exts, where)
        else:
            self.refuse(f"{where}.type", f"item type {kind!r} has no field type")
            body["type"] = "short_text"
            meta["type"] = kind
        if isinstance(item.get("maxLength"), int) and body["type"] in ("short_text",
                                                                        "long_text"):
            body["max_length"] = item["maxLength"]
        self.kinds[key] = str(body["type"])

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

    # -- conditions ------------------------------------------------------------------------
    def conditions(self, item: dict[str, Any], scope: Scope,
                   exts: dict[str, list[dict[str, Any]]]) -> str | None:
        where = scope.path
        found: list[str] = []
        for index, when in enumerate(item.get("enableWhen", []) or []):
            expr = self.condition(when, scope, f"{where}.enableWhen[{index}]")
            if expr is None:
                return None
            found.append(expr)
        expression = exts.pop("sdc-questionnaire-enableWhenExpression", [])
        if expression:
            value = expression[0].get("valueExpression", {})
            if value.get("language") == CAREL_EXPR:
                found.append(str(value.get("expression")))
            else:
                self.refuse(f"{where}.extension[sdc-questionnaire-enableWhenExpression]",
                            "a FHIRPath condition: field conditions are Careloop expressions "
                            f"and {value.get('expression')!r} has no exact translation")
                return None
        if not found:
            return None
        joiner = " or " if item.get("enableBehavior") == "any" else " and "
        return joiner.join(f"({c})" if len(found) > 1 else c for c in found)

    def condition(self, when: Mapping[str, Any], scope: Scope, where: str) -> str | None:
        link = str(when.get("question"))
        question = self.keys.get(link)
        if question is None:
            self.refuse(f"{where}.question", f"enableWhen names no item {link!r}")
            return None
        if question in self.score_keys:
            self.refuse(f"{where}.question", "a condition on a calculated item: field "
                        "conditions cannot read a score")
            return None
        in_group = self.groups.get(question)
        if in_group and in_group != scope.group:
            self.refuse(f"{where}.question", "a condition on an answer inside a repeating "
                        "group, from outside it")
            return None
        root = "row" if in_group and in_group == scope.group else "answers"
        ref = f"{root}.{question}"
        op = str(when.get("operator", "="))
        answer = next(((k, v) for k, v in when.items() if k.startswith("answer")), None)
        if answer is None:
            self.refuse(where, "an enableWhen without an answer")
            return None
        name, value = answer
        if op == "exists":
            return f"{ref} {'!=' if value else '=='} None"
        ops = {"=": "==", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}
        if op not in ops:
            self.refuse(f"{where}.operator", f"operator {op!r}")
            return None
        kind = self.kinds.get(question, "")
        if name == "answerCoding":
            literal = repr(safe_code(str(value.get("code"))))
        elif name == "answerBoolean":
            literal = repr("yes" if value else "no")
        elif name == "answerQuantity":
            self.refuse(where, "a condition on a quantity")
            return None
        elif kind in ("single_choice", "multiple_choice"):
            literal = repr(safe_code(str(value)))
        else:
            literal = repr(value)
        if kind == "multiple_choice":
            if op not in ("=", "!="):
                self.refuse(f"{where}.operator", "an order comparison on a multiple choice")
                return None
            return f"{literal} {'in' if op == '=' else 'not in'} {ref}"
        return f"{ref} {ops[op]} {literal}"

    # -- calculations ----------------------------------------------------------------------
    def variable(self, ext: Mapping[str, Any], where: str, on_item: bool = True
                 ) -> dict[str, str] | None:
        """An SDC variable in FHIRPath (``None`` when refused). A name that is not an R4 id
        (``q1_value``) is renamed (``q1value``) here and in every expression that reads it, so
        the export validates."""
        value = ext.get("valueExpression", {})
        if value.get("language") != "text/fhirpath":
            self.refuse(where, f"a variable in {value.get('language')!r}: only FHIRPath is "
                        "evaluated")
            return None
        name = str(value.get("name"))
        if not re.fullmatch(r"[A-Za-z0-9]{1,64}", name):
            renamed = re.sub(r"[^A-Za-z0-9]", "", name) or "v"
            while renamed in self.renames.values() and self.renames.get(name) != renamed:
                renamed += "x"
            self.renames[name] = renamed
            name = renamed
        expression = self.rename(str(value.get("expression", "")))
        problem = check_expression(expression)
        if problem:
            self.refuse(where, problem)
            return None
        if self.relative(expression, where, on_item):
            return None
        return {"name": name, "expression": expression}

    def relative(self, expression: str, where: str, on_item: bool) -> bool:
        """An expression on an item is evaluated with that item's answer as its context;
        Careloop evaluates on the whole response, so a path that does not start from a
        ``%`` variable, a literal or a function is refused there (at the Questionnaire level
        the context is the response, and it is carried)."""
        if on_item and re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:[.\[]|$)", expression) and \
                not re.match(r"\s*(true|false)\b", expression):
            self.refuse(where, f"{expression!r} is relative to its item: Careloop evaluates "
                        "FHIRPath on the whole response, so its context would differ")
            return True
        return False

    def rename(self, expression: str) -> str:
        for old, new in self.renames.items():
            expression = re.sub(rf"%{re.escape(old)}\b", f"%{new}", expression)
        return expression

    def calculated(self, item: dict[str, Any], scope: Scope, key: str, kind: str,
                   ext: Mapping[str, Any], label: dict[str, str], codes: list[dict[str, Any]],
                   meta: dict[str, Any], exts: dict[str, list[dict[str, Any]]],
                   position: int) -> None:
        where = f"{scope.path}.extension[sdc-questionnaire-calculatedExpression]"
        value = ext.get("valueExpression", {})
        expression = self.rename(str(value.get("expression", "")))
        if value.get("language") != "text/fhirpath":
            self.refuse(where, f"a calculation in {value.get('language')!r}")
        elif problem := check_expression(expression):
            self.refuse(where, problem)
        else:
            self.relative(expression, where, True)
        if kind not in ("decimal", "integer", "quantity"):
            self.refuse(where, f"a calculated {kind} item: a score is a number")
        if scope.group:
            self.refuse(where, "a calculation inside a repeating group (one value per row)")
        if item.get("item"):
            self.refuse(f"{scope.path}.item", "items nested under a calculated item")
        if item.get("enableWhen") or "sdc-questionnaire-enableWhenExpression" in exts:
            self.refuse(f"{scope.path}.enableWhen", "a condition on a calculated item")
            exts.pop("sdc-questionnaire-enableWhenExpression", None)
        exts.pop("questionnaire-itemControl", None)
        for name in ("questionnaire-unit",):
            found = exts.pop(name, [])
            if found:
                meta["unit"] = {k: v for k, v in found[0].get("valueCoding", {}).items()
                                if k in ("system", "code", "display")}
        self.rest(exts, item, scope.path)
        self.score_keys.add(key)
        name = str(item.get("linkId"))
        score: dict[str, Any] = {"key": key, "label": label or {self.locale: name},
                                 "method": "fhirpath", "fhirpath": expression,
                                 "link_id": str(item.get("linkId"))}
        if scope.variables:
            score["variables"] = scope.variables
        loinc = next((c.get("code") for c in codes if c.get("system") == LOINC), None)
        if loinc in KNOWN_TOTALS:
            score["bands"] = KNOWN_TOTALS[str(loinc)]
        meta["position"] = position
        meta["type"] = kind
        if codes:
            meta["code"] = codes
        if item.get("readOnly"):
            meta["readOnly"] = True
        self.items_meta[key] = meta
        self.scores.append(score)

    # -- extensions ------------------------------------------------------------------------
    def extensions(self, item: Mapping[str, Any], where: str, skip_control: bool = False
                   ) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for ext in item.get("extension", []) or []:
            url = str(ext.get("url"))
            if url in LAYOUT or (skip_control and short(url) == "questionnaire-itemControl"):
                continue
            out.setdefault(short(url), []).append(ext)
        return out

    def rest(self, exts: dict[str, list[dict[str, Any]]], item: Mapping[str, Any],
             where: str) -> None:
        """Every extension still not taken is refused, located."""
        prefix = f"{where}." if where else ""
        for name in list(exts):
            if name == "questionnaire-itemControl":
                control = _control_of(exts[name])
                if control in (None, "layout"):
                    continue
            self.refuse(f"{prefix}extension[{name}]", _REFUSED.get(
                name, "an extension Careloop does not carry"))
        exts.clear()

    def control_layout(self, control: list[dict[str, Any]], where: str) -> None:
        code = _control_of(control)
        if code not in (None, "layout"):
            self.refuse(f"{where}.extension[questionnaire-itemControl]",
                        f"item control {code!r} on a group")

    def unknown_keys(self, item: Mapping[str, Any], where: str) -> None:
        for name in item:
            if name not in _ITEM_KEYS:
                self.refuse(f"{where}.{name}", f"item element {name!r} is not carried")


_ITEM_KEYS = {"linkId", "text", "_text", "type", "code", "required", "repeats", "readOnly",
              "item", "enableWhen", "enableBehavior", "answerOption", "answerValueSet",
              "initial", "extension", "modifierExtension", "maxLength", "prefix", "_prefix",
              "definition", "id"}
_REFUSED = {
    "sdc-questionnaire-initialExpression": "an initial value from FHIRPath (pre-population): "
                                           "field defaults are not applied by the runtime",
    "questionnaire-initialExpression": "an initial value from FHIRPath (pre-population)",
    "sdc-questionnaire-answerExpression": "answer options computed by FHIRPath: choices are "
                                          "fixed in a form",
    "sdc-questionnaire-candidateExpression": "candidate answers from FHIRPath",
    "sdc-questionnaire-observationLinkPeriod": "pre-population from earlier Observations",
    "sdc-questionnaire-observationExtract": "extraction of Observations from answers",
    "sdc-questionnaire-observation-extract-category": "extraction of Observations",
    "sdc-questionnaire-templateExtract": "template-based extraction",
    "sdc-questionnaire-extractAllocateId": "template-based extraction",
    "sdc-questionnaire-launchContext": "launch context (pre-population)",
    "questionnaire-launchContext": "launch context (pre-population)",
    "questionnaire-externallydefined": "answers from an external source",
    "sdc-questionnaire-unitOpen": "free-text units",
    "sdc-questionnaire-unitSupplementalSystem": "units from another system",
    "maxSize": "attachment size limit",
    "mimeType": "attachment content types",
    "questionnaire-answerRepeats": "repeating answers in a matrix",
    "targetConstraint": "a cross-item constraint",
    "sdc-questionnaire-enableWhenExpression": "a FHIRPath condition",
    "sdc-questionnaire-calculatedExpression": "a calculation at this level",
}


def _control_of(found: list[dict[str, Any]]) -> str | None:
    if not found:
        return None
    codings = found[0].get("valueCodeableConcept", {}).get("coding", []) or []
    code = str(codings[0].get("code")) if codings else ""
    if code in CONTROL_CHOICE:
        return CONTROL_CHOICE[code]
    if code in CONTROL_LAYOUT:
        return "layout"
    return code or None


def _control(item: Mapping[str, Any]) -> str | None:
    found = [e for e in item.get("extension", []) or []
             if short(str(e.get("url"))) == "questionnaire-itemControl"]
    return _control_of(found)


def _option(option: Mapping[str, Any]) -> tuple[str | None, str | None, str | None,
                                                 Mapping[str, Any] | None]:
    if "valueCoding" in option:
        coding = option["valueCoding"]
        code = coding.get("code")
        display = coding.get("display") or code
        return (str(code) if code is not None else None, display, coding.get("system"),
                coding.get("_display"))
    for name in ("valueString", "valueInteger", "valueDate", "valueTime"):
        if name in option:
            return str(option[name]), str(option[name]), None, option.get(f"_{name}")
    return None, None, None, None


def safe_code(value: str) -> str:
    """A choice code as forms allow (``[A-Za-z0-9_.-]{1,64}``): ``'10:30:00'`` → ``10_30_00``;
    the FHIR value is kept in ``fhir.items[key].values``."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        return value
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value).strip("_")[:64] or "empty"


def _join(outer: str | None, inner: str | None) -> str | None:
    if outer and inner:
        return f"({outer}) and ({inner})"
    return outer or inner


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
