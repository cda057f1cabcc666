"""What every part of a FHIR Questionnaire import shares: the vocabulary (SDC and core
extension URLs, item types, layout-only extensions, refusal reasons), the linkId → key rule, and
:class:`ImportState` — one import's keys, notes and refusals, texts and extension bookkeeping.

    >>> key_from_link_id("/44250-9")
    'q_44250_9'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from careloop.forms import fhir_valuesets as valuesets

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


class ImportState:
    """One Questionnaire's import state (two passes: keys for every linkId first, then fields)."""

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
    "sdc-questionnaire-initialExpression": "an initial value from FHIRPath on an item that "
                                           "takes none (a group, a calculated item)",
    "questionnaire-initialExpression": "an initial value from FHIRPath on an item that takes "
                                       "none (a group, a calculated item)",
    "sdc-questionnaire-answerExpression": "answer options from FHIRPath on an item that takes "
                                          "none (a group, a calculated item)",
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


