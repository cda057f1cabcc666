"""FHIRPath for imported SDC calculations: evaluated on the server, inside Careloop's limits.

An SDC ``calculatedExpression`` (and the ``variable`` extensions it reads) is kept as FHIRPath
and computed by the score method ``fhirpath``: the form's answers become a QuestionnaireResponse
(:func:`careloop.forms.fhir.export_response`, each chosen coding carrying its choice's score as
``ordinalValue`` so ``weight()`` / ``ordinal()`` work), the form itself is ``%questionnaire``,
variables are evaluated in order, then the expression. Nothing the client sent is trusted.

    scores:
      - key: bmi
        method: fhirpath
        fhirpath: "(%weight/(%height.power(2))).round(1)"
        variables:
          - {name: weight, expression: "%resource.item.where(linkId='/29463-7').answer.value"}
          - {name: height, expression: "%resource.item.where(linkId='/8302-2').answer.value*0.0254"}

The bounds are those of Careloop expressions (``engine/limits.py``): the text is at most
``expr_length`` characters, one evaluation makes at most ``fhirpath_calls`` Python calls and
runs at most ``work_seconds``, and a result holds at most ``expr_items`` values. Beyond a bound
the score is ``None`` and :class:`~careloop.engine.limits.LimitExceeded` says which.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from types import FrameType
from typing import Any

from careloop.engine.limits import LIMITS, LimitExceeded
from careloop.forms.scoring import ScoreInput, ScoreMethod, ScoreProblem

ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
#: Python calls one evaluation may make (the interpreter's frames, counted by a trace hook)
FHIRPATH_CALLS = 2_000_000


class FhirPathError(Exception):
    """The expression does not parse, or failed while it ran (the score is then ``None``)."""


def _weight_of(value: Any) -> list[Any]:
    coding = value.get("valueCoding", value) if isinstance(value, Mapping) else None
    if not isinstance(coding, Mapping):
        return []
    for ext in coding.get("extension", []) or []:
        if ext.get("url") in (ORDINAL, ITEM_WEIGHT):
            number = ext.get("valueDecimal", ext.get("valueInteger"))
            if isinstance(number, int | float | Decimal):
                return [number]
    return []


def _weight(inputs: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in inputs:
        out.extend(_weight_of(value))
    return out


USER_FUNCTIONS = {"weight": {"fn": _weight, "arity": {0: []}},
                  "ordinal": {"fn": _weight, "arity": {0: []}}}


class _Strict:
    """An ANTLR error listener that stops at the first syntax error (fhirpathpy's own parser
    recovers and carries on, which would evaluate a broken expression)."""

    def syntaxError(self, recognizer: Any, offending: Any, line: int, column: int,
                    msg: str, e: Any) -> None:
        raise FhirPathError(f"column {column + 1}: {msg}")

    def reportAmbiguity(self, *args: Any) -> None:
        return None

    def reportAttemptingFullContext(self, *args: Any) -> None:
        return None

    def reportContextSensitivity(self, *args: Any) -> None:
        return None


def _parse_strict(text: str) -> None:
    from antlr4 import CommonTokenStream, InputStream, Token
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    lexer = FHIRPathLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Strict())
    stream = CommonTokenStream(lexer)
    parser = FHIRPathParser(stream)
    parser.removeErrorListeners()
    parser.addErrorListener(_Strict())
    parser.expression()
    following = stream.LT(1)
    if following is not None and following.type != Token.EOF:
        raise FhirPathError(f"column {following.column + 1}: unexpected {following.text!r}")


@functools.lru_cache(maxsize=1024)
def check_expression(text: str) -> str | None:
    """``None`` when ``text`` parses as FHIRPath within the length bound, else why not."""
    if len(text) > LIMITS.expr_length:
        return f"longer than {LIMITS.describe('expr_length')} characters"
    try:
        _parse_strict(text)
    except FhirPathError as exc:
        return f"not FHIRPath: {exc}"
    except Exception as exc:  # the generated lexer raises its own exceptions
        return f"not FHIRPath: {exc}"
    return None


class _Budget:
    """A trace hook bounding one evaluation in calls and wall time (restores any other hook)."""

    def __init__(self) -> None:
        self.calls = 0
        self.deadline = time.monotonic() + LIMITS.work_seconds

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1
            if self.calls > FHIRPATH_CALLS or (self.calls % 1000 == 0
                                               and time.monotonic() > self.deadline):
                raise LimitExceeded("expr.budget", "the FHIRPath expression did too much work",
                                    limit="work_seconds")
        return None


def _model() -> dict[str, Any]:
    """The R4 model (choice types: ``answer.value`` is ``valueDecimal``, ``valueCoding``…)."""
    from fhirpathpy.models import models

    model: dict[str, Any] = models["r4"]
    return model


@functools.lru_cache(maxsize=1024)
def _compiled(expression: str) -> Callable[[Any, Any], list[Any]]:
    """The expression parsed once (a form's conditions run on every page post)."""
    import fhirpathpy

    return fhirpathpy.compile(expression, _model(),
                              options={"userInvocationTable": USER_FUNCTIONS})


_CLOCK_SET = False


def _hospital_clock() -> None:
    """FHIRPath's ``today()``, ``now()`` and ``timeOfDay()`` read Careloop's one clock on the
    hospital's local date (:mod:`careloop.engine.clock`), not the machine's: fhirpathpy
    takes "now" from one ``SystemTime`` it resets before each evaluation, so that object's
    ``reset`` is given the engine clock (once; evaluations stay fixed to one instant)."""
    global _CLOCK_SET
    if _CLOCK_SET:
        return
    from fhirpathpy.engine.invocations import constants as fp_constants

    from careloop.engine.clock import now_utc, to_local

    class _HospitalTime(fp_constants.SystemTime):
        def reset(self) -> None:
            self.expressionExecutionDateTime = to_local(now_utc())

    fp_constants.systemtime.__class__ = _HospitalTime
    fp_constants.systemtime.expressionExecutionDateTime = to_local(now_utc())
    _CLOCK_SET = True


def evaluate(expression: str, resource: Mapping[str, Any], variables: Mapping[str, Any]
             ) -> list[Any]:
    """The result collection of ``expression`` on ``resource`` with ``%`` variables
    (``today()`` and ``now()`` on the engine clock, in the hospital's time zone)."""
    problem = check_expression(expression)
    if problem is not None:
        raise FhirPathError(problem)
    _hospital_clock()
    budget = _Budget()
    previous = sys.getprofile()
    sys.setprofile(budget)
    try:
        result = _compiled(expression)(dict(resource), dict(variables))
    except LimitExceeded:
        raise
    except Exception as exc:  # the engine raises plain exceptions for type errors
        raise FhirPathError(str(exc)) from None
    finally:
        sys.setprofile(previous)
    if len(result) > LIMITS.expr_items:
        raise LimitExceeded("expr.too-large", "the FHIRPath result is too large",
                            limit="expr_items")
    return list(result)


def run(expression: str, variables: Sequence[Mapping[str, str]], resource: Mapping[str, Any],
        questionnaire: Mapping[str, Any]) -> list[Any]:
    """Variables in order (each sees the earlier ones), then the expression."""
    env: dict[str, Any] = {"resource": resource, "questionnaire": questionnaire,
                           "context": resource}
    for variable in variables:
        env[str(variable["name"])] = evaluate(str(variable["expression"]), resource, env)
    return evaluate(expression, resource, env)


def visible(form: Any, condition: Mapping[str, Any], answers: Mapping[str, Any]) -> bool:
    """An imported ``enableWhenExpression``: true when the expression gives ``true`` on the
    answers so far (as a QuestionnaireResponse). An empty result, an error or a limit reached
    hides the field — on the page and on the server alike, as both ask this function.

        >>> from careloop.forms.spec import FieldSpec, FormSpec
        >>> form = FormSpec(key="f", title={"en": "F"}, default_locale="en",
        ...                 fields=(FieldSpec(key="n", type="integer", link_id="n"),))
        >>> rule = {"expression": "%resource.item.where(linkId='n').answer.value > 4"}
        >>> visible(form, rule, {"n": 5}), visible(form, rule, {"n": 1}), visible(form, rule, {})
        (True, False, False)
    """
    from careloop.forms.fhir import evaluation_resources

    resource, questionnaire = evaluation_resources(form, answers, {})
    try:
        result = run(str(condition["expression"]), list(condition.get("variables", []) or []),
                     resource, questionnaire)
    except (FhirPathError, LimitExceeded):
        return False
    return len(result) == 1 and result[0] is True


def _population(form: Any, found: Mapping[str, Any], answers: Mapping[str, Any]
                ) -> list[Any] | None:
    from careloop.forms.fhir import evaluation_resources

    resource, questionnaire = evaluation_resources(form, answers, {})
    try:
        return run(str(found["expression"]), list(found.get("variables", []) or []),
                   resource, questionnaire)
    except (FhirPathError, LimitExceeded):
        return None


def dynamic_choices(form: Any, field: Any, answers: Mapping[str, Any]) -> tuple[Any, ...]:
    """The choices of a field with ``choices_fhirpath`` (an imported SDC ``answerExpression``
    that reads the answers): the expression evaluated on the server on ``answers`` (the
    answers so far) within the calculations' bounds; each coding, text, whole number, date or
    time it gives is a choice whose code is the value itself (a coding's code), so the
    stored answer says what was chosen; then the field's own choices (its "other"). An error
    or a limit reached gives no computed choice — and so refuses any answer but "other".

        >>> from careloop.forms.spec import FieldSpec, FormSpec
        >>> q = FieldSpec(key="q1", type="short_text", link_id="q1", repeats=True)
        >>> pick = FieldSpec(key="pick", type="single_choice", link_id="pick",
        ...     choices_fhirpath={"expression": "%resource.item.where(linkId='q1').answer.value"})
        >>> form = FormSpec(key="f", title={"en": "F"}, default_locale="en", fields=(q, pick))
        >>> [c.code for c in dynamic_choices(form, pick, {"q1": ["apple", "pear"]})]
        ['apple', 'pear']
    """
    from careloop.forms.spec import ChoiceSpec

    out = [ChoiceSpec(code=code, label={"zh-CN": text, "en": text})
           for code, text, _ in computed_options(form, field, answers)]
    return (*out, *field.choices)


def computed_options(form: Any, field: Any, answers: Mapping[str, Any]
                     ) -> list[tuple[str, str, dict[str, Any] | None]]:
    """``(code, label, coding)`` of each choice ``choices_fhirpath`` gives on ``answers``
    (``coding`` the FHIR coding with its system and display, for the response export)."""
    from careloop.forms.fhir_import_logic import _fhir_value

    result = _population(form, field.choices_fhirpath or {}, answers) or []
    static = {c.code for c in field.choices}
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    seen: set[str] = set()
    for value in result:
        typed = _fhir_value(value)
        if typed is None or typed[0] not in ("valueCoding", "valueString", "valueInteger",
                                             "valueDate", "valueTime"):
            continue
        name, raw = typed
        coding = None
        if name == "valueCoding":
            code, text = str(raw.get("code", "")), str(raw.get("display") or raw.get("code"))
            coding = dict(raw)
        else:
            code = text = str(raw)
        if not code.strip() or code in seen or code in static:
            continue
        seen.add(code)
        out.append((code, text, coding))
    return out


def dynamic_default(form: Any, field: Any, answers: Mapping[str, Any]) -> Any:
    """What the patient page starts with for a field with ``default_fhirpath`` (an imported
    SDC ``initialExpression`` that reads the clock): the expression evaluated on the server
    when the page is first drawn (``today()`` is the hospital's local date), as an answer of
    the field's type; ``None`` when it gives nothing the field takes."""
    from careloop.forms.fhir_import import initial_value
    from careloop.forms.fhir_import_logic import _fhir_value, _temporal

    result = _population(form, field.default_fhirpath or {}, answers) or []
    body = {"type": field.type, "choices": [{"code": c.code} for c in field.choices],
            "unit": field.options.get("unit"), "units": field.options.get("units")}
    values = []
    for value in result:
        found = _temporal(value, field.type)
        typed = next(iter(found.items())) if found else _fhir_value(value)
        answer = initial_value(dict([typed]), body, {}) if typed is not None else None
        if answer is not None:
            values.append(answer)
    if not values:
        return None
    if field.repeats or field.type == "multiple_choice":
        return values
    return values[0] if len(values) == 1 else None


def number(result: list[Any]) -> float | None:
    """A one-value numeric result as a float; empty → ``None``."""
    if not result:
        return None
    value = result[0]
    if isinstance(value, Mapping) and "value" in value:  # a Quantity
        value = value["value"]
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float | Decimal):
        return float(value)
    return None


def _compute(score: Any, given: ScoreInput) -> float | None:
    from careloop.forms.fhir import evaluation_resources

    resource, questionnaire = evaluation_resources(given.form, given.answers, given.scores)
    options = score.options
    try:
        return number(run(str(options["fhirpath"]), list(options.get("variables", [])),
                          resource, questionnaire))
    except (FhirPathError, LimitExceeded):
        return None


def _check(score: Mapping[str, Any], field_keys: frozenset[str]) -> list[ScoreProblem]:
    problems: list[ScoreProblem] = []
    for index, variable in enumerate(score.get("variables", []) or []):
        found = check_expression(str(variable.get("expression", "")))
        if found is not None:
            problems.append((("variables", index, "expression"), "form.fhirpath", found))
    found = check_expression(str(score.get("fhirpath", "")))
    if found is not None:
        problems.append((("fhirpath",), "form.fhirpath", found))
    return problems


VARIABLES = {"type": "array", "items": {
    "type": "object", "required": ["name", "expression"], "additionalProperties": False,
    "properties": {"name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                   "expression": {"type": "string"}}},
    "x-label": {"zh-CN": "FHIRPath 变量", "en": "FHIRPath variables"}}

METHOD = ScoreMethod(
    "fhirpath", {"zh-CN": "FHIRPath 计算（SDC 导入）",
                 "en": "FHIRPath calculation (imported from FHIR SDC)"},
    _compute, {"fhirpath": {"type": "string", "x-label": {"zh-CN": "FHIRPath 表达式",
                                                          "en": "FHIRPath expression"}},
               "variables": VARIABLES,
               "link_id": {"type": "string", "x-label": {"zh-CN": "FHIR linkId",
                                                         "en": "FHIR linkId"}},
               "unit": {"type": "string"}},
    required=("fhirpath",), needs_fields=False, check=_check)
