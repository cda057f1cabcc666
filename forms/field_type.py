"""The field-type contract: :class:`FieldType`, its FHIR mapping :class:`FhirMap`, and the
generic readers, storers, scorers and showers the built-in types (``forms/fields.py``) and
plugins' types share.

    >>> from careloop.forms.spec import FieldSpec
    >>> read_one(FieldSpec(key="age", type="integer"), {"age": ["42"]}, "age")
    '42'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from careloop.engine.i18n import pick
from careloop.forms.field_words import worded
from careloop.forms.spec import FieldSpec

# (sub-path within the value, i18n message key, message parameters)
Issue = tuple[tuple[str | int, ...], str, dict[str, Any]]
# (row key, number, text, code) — one row of submission_answers
Leaf = tuple[str | None, float | None, str | None, str | None]
Checker = Callable[[FieldSpec, Any], tuple[Any, list[Issue]]]
#: (field, posted form, the input's name) -> the answer, ``None`` when left empty
Reader = Callable[[FieldSpec, Mapping[str, Any], str], Any]
LeavesOf = Callable[[FieldSpec, Any], list[Leaf]]
NumberOf = Callable[[FieldSpec, Any], float | None]
#: (field, stored value, locale) -> the text a member of staff reads
Shower = Callable[[FieldSpec, Any, str], str]
FhirAnswers = Callable[[FieldSpec, Any], list[dict[str, Any]]]

NUM = {"type": "number"}
TEXT = {"$ref": "#/$defs/text"}
#: how the page frames a type's widget: a fieldset with a legend (groups of inputs), a label
#: bound to one input, help and error without a label (a hidden input), or nothing (the
#: template draws all of it)
FRAMES = ("fieldset", "label", "unlabelled", "bare")


def fhir_scalar(spec: FieldSpec, value: Any) -> list[dict[str, Any]]:
    if isinstance(value, bool):
        return [{"valueBoolean": value}]
    if isinstance(value, int):
        return [{"valueInteger": value}]
    if isinstance(value, float):
        return [{"valueDecimal": value}]
    return [{"valueString": str(value)}]


def fhir_codings(spec: FieldSpec, value: Any) -> list[dict[str, Any]]:
    codes = value if isinstance(value, list) else (
        value.get("codes") or [value.get("code")] if isinstance(value, dict) else [value])
    return [{"valueCoding": {"code": c}} for c in codes]


def fhir_boolean(spec: FieldSpec, value: Any) -> list[dict[str, Any]]:
    return [{"valueBoolean": value in ("yes", True)}]


def fhir_quantity(spec: FieldSpec, value: Any) -> list[dict[str, Any]]:
    return [{"valueQuantity": {"value": value["value"], "unit": value["unit"]}}]


ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
LOINC = "http://loinc.org"


def fhir_option(choice: Any, locale: str) -> dict[str, Any]:
    """A choice as an ``answerOption`` (its score as the ordinal value)."""
    option: dict[str, Any] = {"valueCoding": {"code": choice.code,
                                              "display": pick(dict(choice.label), locale)}}
    if choice.score is not None:
        option["extension"] = [{"url": ORDINAL, "valueDecimal": choice.score}]
    return option


@dataclass(frozen=True, slots=True)
class FhirMap:
    """How a field type maps to FHIR R4: the Questionnaire item ``type``, the answers of a
    QuestionnaireResponse, extra item keys (``answerOption``, nested ``item``…), the response
    item's body when it is not a list of answers (nested items), and whether answers repeat.
    ``item_type=""`` means the field has no item (a page break). A ``choice`` item lists the
    field's choices as ``answerOption``."""

    item_type: str
    answers: FhirAnswers = fhir_scalar
    item: Callable[[FieldSpec, str], dict[str, Any]] | None = None
    response: Callable[[FieldSpec, Any], dict[str, Any]] | None = None
    repeats: bool = False


NO_ITEM = FhirMap("")


def _one(form: Mapping[str, Any], name: str) -> Any:
    value = form.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _many(form: Mapping[str, Any], name: str) -> list[Any]:
    value = form.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def read_one(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    """One input named after the field; an empty input is no answer."""
    value = _one(form, name)
    return value if value not in (None, "") else None


def read_nothing(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    return None


def scalar_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    if isinstance(value, bool):
        return [(None, 1.0 if value else 0.0, None, None)]
    if isinstance(value, int | float):
        return [(None, float(value), None, None)]
    if isinstance(value, dict):
        return [(None, None, value.get("sha256") or str(value), None)]
    return [(None, None, str(value), None)]


def no_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    return []


def scalar_number(spec: FieldSpec, value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def label_of(spec: FieldSpec, code: Any, locale: str) -> str:
    choice = spec.choice(code)
    return pick(dict(choice.label), locale) if choice is not None else str(code)


def show_value(spec: FieldSpec, value: Any, locale: str) -> str:
    """The generic display: choice labels for codes, ``k: v`` pairs for structured values."""
    if isinstance(value, dict) and "code" in value:
        return f"{label_of(spec, value['code'], locale)} ({value.get('other', '')})"
    if isinstance(value, dict) and "codes" in value:
        return (", ".join(label_of(spec, c, locale) for c in value["codes"])
                + f" ({value.get('other', '')})")
    if isinstance(value, list) and spec.choices:
        return ", ".join(label_of(spec, c, locale) for c in value)
    if spec.choices:
        return label_of(spec, value, locale)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(", ".join(f"{k}: {v}" for k, v in row.items()) for row in value)
    return str(value)


@dataclass(frozen=True, slots=True)
class FieldType:
    """A registered field type: everything about the type lives here (see the module text)."""

    name: str
    title: dict[str, str]
    check: Checker
    options: dict[str, Any] = field(default_factory=dict)  # JSON Schema "properties"
    answerable: bool = True
    uses_choices: bool = False
    uses_rows: bool = False
    widget: str = "text"  # the HTML input type of the ``fields/input.html`` template
    valid_examples: tuple[Any, ...] = ()
    invalid_examples: tuple[Any, ...] = ()
    reader: Reader | None = read_one  # ``None``: never read from a post (uploads)
    storer: LeavesOf = scalar_leaves
    scorer: NumberOf = scalar_number
    shower: Shower = show_value
    fhir: FhirMap | None = None
    template: str | Path = "fields/input.html"
    frame: str = "label"
    #: extra attributes of the input (inputmode…)
    attrs: Mapping[str, str] = field(default_factory=dict)
    css: Path | None = None
    #: the answer identifies a person: how staff pages mask it unless revealed (audited)
    mask: Callable[[str], str | None] | None = None
    group: bool = False  # holds sub-fields (``fields:``), each row answered in turn
    #: drawn on its page whether or not answers show it (display text, a section heading)
    always_shown: bool = False
    breaks_page: bool = False  # starts a new page (and is not drawn)
    computed: bool = False  # its value is the field's ``calculate`` expression (required)
    #: a field of this type may take ``repeats: true`` (several answers, one input each)
    repeatable: bool = False

    def read(self, spec: FieldSpec, form: Mapping[str, Any], prefix: str = "") -> Any:
        """The answer a posted page gives for this field (``None`` when left empty)."""
        if self.reader is None:
            return None
        if spec.repeats:  # one input per answer, all named after the field
            found = [v for v in _many(form, prefix + spec.key) if v not in (None, "")]
            return found or None
        return self.reader(spec, form, prefix + spec.key)

    def leaves(self, spec: FieldSpec, value: Any) -> list[Leaf]:
        if value is None or not self.answerable:
            return []
        if spec.repeats and isinstance(value, list):
            return [leaf for one in value for leaf in self.storer(spec, one)]
        return self.storer(spec, value)

    def number(self, spec: FieldSpec, value: Any) -> float | None:
        """The value's contribution to a score (choice scores, or the number itself; several
        answers have none)."""
        if value is None or (spec.repeats and isinstance(value, list)):
            return None
        return self.scorer(spec, value)

    def display(self, spec: FieldSpec, value: Any, locale: str) -> str:
        if spec.repeats and isinstance(value, list):
            return "; ".join(self.shower(spec, one, locale) for one in value)
        return self.shower(spec, value, locale)

    @property
    def template_name(self) -> str:
        """The name the page's Jinja environment loads this type's template by."""
        return self.template if isinstance(self.template, str) else f"field-type:{self.name}"

    def panel(self) -> dict[str, Any]:
        """What the form builder needs: palette entry and the property panel's options."""
        return {"name": self.name, "title": dict(self.title), "options": worded(self.options),
                "uses_choices": self.uses_choices, "uses_rows": self.uses_rows,
                "answerable": self.answerable, "widget": self.widget, "group": self.group,
                "repeatable": self.repeatable,
                "fhir": self.fhir.item_type if self.fhir is not None else None,
                "answer": self.answer_kind()}

    def answer_kind(self) -> str | None:
        """What a condition on this field compares, read from its FHIR item type: ``number``,
        ``choice``, ``choices`` (repeating choice), ``boolean``, ``text``, ``date`` — or
        ``None`` (nothing to compare: groups, displays, attachments). The builder's condition
        pickers offer operators and values by it, so no field type is named in the browser.

        >>> from careloop.forms.fields import FIELD_TYPES
        >>> FIELD_TYPES["multiple_choice"].answer_kind(), FIELD_TYPES["rating"].answer_kind()
        ('choices', 'number')
        """
        if self.fhir is None or not self.answerable:
            return None
        if self.fhir.item_type == "choice":
            return "choices" if self.fhir.repeats else "choice"
        return _ANSWER_KINDS.get(self.fhir.item_type)


# FHIR item type → what a condition compares (FieldType.answer_kind).
_ANSWER_KINDS = {"integer": "number", "decimal": "number", "quantity": "number",
                 "boolean": "boolean", "string": "text", "text": "text",
                 "date": "date", "dateTime": "date"}


def ok(value: Any) -> tuple[Any, list[Issue]]:
    return value, []


def bad(key: str, sub: tuple[str | int, ...] = (), **params: Any) -> tuple[Any, list[Issue]]:
    return None, [(sub, key, params)]


def show_datetime(spec: FieldSpec, value: Any, locale: str) -> str:
    """A date and time as people read it, ``2026-11-27 12:41``: in the hospital's time when the
    value carries an offset (a page's answer is already local), never ISO's ``T``."""
    from datetime import datetime

    from careloop.engine.clock import hospital_tz

    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(hospital_tz())
    return parsed.strftime("%Y-%m-%d %H:%M")
