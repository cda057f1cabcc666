"""Compiled forms: frozen specs of a form, its fields, choices and scores.

    FormSpec(key="phq9", fields=(FieldSpec(key="q1", type="single_choice", …), …),
             scores=(ScoreSpec(key="total", method="sum", bands=(BandSpec("minimal", 0, 4), …)),))

Behaviour (evaluating answers) lives in :mod:`careloop.forms.logic`, which takes a spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from careloop.engine.expressions import Expression

Text = Mapping[str, str]
EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return EMPTY


@dataclass(frozen=True, slots=True)
class ChoiceSpec:
    """A choice of a choice field, or a row of a Likert matrix (code is stored, never the label)."""

    code: str
    label: Text
    score: float | None = None
    exclusive: bool = False
    other: bool = False
    visible_if: Expression | None = None


@dataclass(frozen=True, slots=True)
class ValidationSpec:
    """An author's validation: ``expression`` must be true, else ``message`` is shown."""

    expression: Expression
    message: Text


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field (question, display text, page break, repeat group …) of a form."""

    key: str
    type: str
    label: Text = field(default_factory=_empty)
    help: Text = field(default_factory=_empty)
    required: bool = False
    visible_if: Expression | None = None
    required_if: Expression | None = None
    enabled_if: Expression | None = None
    calculate: Expression | None = None
    choices: tuple[ChoiceSpec, ...] = ()
    rows: tuple[ChoiceSpec, ...] = ()
    validations: tuple[ValidationSpec, ...] = ()
    fields: tuple[FieldSpec, ...] = ()
    options: Mapping[str, Any] = field(default_factory=_empty)
    page: int = 0
    # e.g. {"system": "http://loinc.org", "code": "44250-9"}
    code: Mapping[str, Any] = field(default_factory=_empty)
    link_id: str | None = None
    #: an imported SDC ``enableWhenExpression``: ``{"expression": FHIRPath, "variables": [...]}``
    #: evaluated on the server (:func:`careloop.forms.fhirpath.visible`), with ``visible_if``
    visible_fhirpath: Mapping[str, Any] | None = None
    #: an imported SDC ``answerExpression`` that reads the answers or the clock:
    #: ``{"expression", "variables"}``, the choices computed on the server from the answers so
    #: far (:func:`careloop.forms.fhirpath.dynamic_choices`), after the static ``choices``
    choices_fhirpath: Mapping[str, Any] | None = None
    #: an imported SDC ``initialExpression`` that reads the clock: evaluated when the patient
    #: page is first drawn (:func:`careloop.forms.fhirpath.dynamic_default`), like ``default``
    default_fhirpath: Mapping[str, Any] | None = None
    #: the answer the patient page starts with (FHIR ``initial``); never an answer by itself
    default: Any = None
    #: several answers, stored as a list (FHIR ``repeats`` on a text, number or date item)
    repeats: bool = False
    #: the patient page cannot change it: it shows what the form was given (its ``default``,
    #: or an answer a system submitted) and ignores what is posted for it (FHIR ``readOnly``)
    read_only: bool = False
    #: the answer identifies a person: masked on staff pages and exports unless revealed
    #: (:func:`careloop.forms.pages.describe`), like a type with a ``mask``
    identifier: bool = False
    _by_code: Mapping[str, ChoiceSpec] = field(default_factory=_empty, init=False, repr=False,
                                               compare=False)

    choice_logic: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_code", {c.code: c for c in self.choices})
        object.__setattr__(self, "choice_logic", any(c.visible_if for c in self.choices))

    def choice(self, code: object) -> ChoiceSpec | None:
        return self._by_code.get(code) if isinstance(code, str) else None


@dataclass(frozen=True, slots=True)
class BandSpec:
    """An interpretation band of a score: ``min <= value <= max`` (either bound optional)."""

    code: str
    label: Text
    min: float | None = None
    max: float | None = None

    def matches(self, value: float) -> bool:
        return ((self.min is None or value >= self.min)
                and (self.max is None or value <= self.max))


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    """A form score computed by its method (``catalogue("score_method")``), with bands.
    ``options`` holds every key the method owns as written; the built-ins' are also kept
    parsed (``weights``, ``codes``, ``threshold``, ``expression``)."""

    key: str
    method: str
    label: Text = field(default_factory=_empty)
    fields: tuple[str, ...] = ()
    weights: Mapping[str, float] = field(default_factory=_empty)
    codes: frozenset[str] = frozenset()
    threshold: float | None = None
    expression: Expression | None = None
    min_answered: int | None = None
    bands: tuple[BandSpec, ...] = ()
    options: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class FormSpec:
    """A compiled form. ``field_keys`` lists every answerable key (repeat sub-fields "g.sub")."""

    key: str
    title: Text
    default_locale: str
    fields: tuple[FieldSpec, ...]
    scores: tuple[ScoreSpec, ...] = ()
    events: tuple[str, ...] = ()
    # (reading type, answer key, measured-at answer key or None): see ``readings:`` in form.json
    readings: tuple[tuple[str, str, str | None], ...] = ()
    field_keys: frozenset[str] = frozenset()
    pages: int = 1
    content_hash: str = ""
    meta: Mapping[str, Any] = field(default_factory=_empty)
    _by_key: Mapping[str, FieldSpec] = field(default_factory=_empty, init=False, repr=False,
                                             compare=False)
    #: every top-level name the form's expressions read (conditions, calculations, validations,
    #: choice conditions, expression scores): what the page and the submission must provide
    names: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {f.key: f for f in self.fields})
        found = [e for f in self.fields for e in _expressions(f)]
        found += [s.expression for s in self.scores if s.expression is not None]
        object.__setattr__(self, "names", frozenset().union(*(e.names for e in found)))

    def field(self, key: str) -> FieldSpec | None:
        return self._by_key.get(key)


def _expressions(spec: FieldSpec) -> list[Expression]:
    """The field's expressions, its choices' and rows' and its sub-fields' (repeat groups)."""
    found = [e for e in (spec.visible_if, spec.required_if, spec.enabled_if, spec.calculate)
             if e is not None]
    found += [c.visible_if for c in (*spec.choices, *spec.rows) if c.visible_if is not None]
    found += [v.expression for v in spec.validations]
    return found + [e for sub in spec.fields for e in _expressions(sub)]
