"""Server-side evaluation of answers against a form: visibility, requiredness, validation,
calculations and scores. The server is authoritative: whatever the client computed is ignored.

    >>> from careloop.forms.testing import form_from_yaml
    >>> spec = form_from_yaml('''
    ... kind: form
    ... key: demo
    ... title: {zh-CN: 演示, en: Demo}
    ... fields:
    ...   - {key: pain, type: slider, label: {en: Pain}, required: true}
    ...   - {key: where, type: short_text, label: {en: Where}, visible_if: "answers.pain >= 5"}
    ... ''')
    >>> result = evaluate(spec, {"pain": 2, "where": "knee"}, locale="en")
    >>> result.valid, result.answers, result.visible
    (True, {'pain': 2}, ['pain'])
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from careloop.engine.expressions import Expression, ExpressionError
from careloop.engine.i18n import pick, t
from careloop.engine.registry import Catalogue, loaded_registry
from careloop.forms.fields import FieldType, Issue
from careloop.forms.scoring import ScoreInput, ScoreMethod
from careloop.forms.spec import FieldSpec, FormSpec, ScoreSpec


@dataclass(slots=True)
class Evaluation:
    """What the server concluded about a set of answers."""

    valid: bool
    errors: list[dict[str, Any]]
    answers: dict[str, Any]
    visible: list[str]
    scores: dict[str, float | None]
    bands: dict[str, str | None]
    disabled: list[str] = field(default_factory=list)
    #: visible fields that must be answered now (``required``, or ``required_if`` holds)
    required: list[str] = field(default_factory=list)
    #: the fields with computed choices (``choices_fhirpath``) as the answers gave them
    fields: dict[str, FieldSpec] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "errors": self.errors, "visible": self.visible,
                "answers": self.answers, "scores": self.scores, "bands": self.bands}


def _types() -> Catalogue[FieldType]:
    # Asked each time: a type registered after start-up (a plugin loaded late) is seen.
    return loaded_registry().catalogue("field_type")


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


Context = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


def _resolve(context: Context) -> Mapping[str, Any]:
    return context() if callable(context) else context


def _truthy(expr: Expression | None, context: Context, default: bool) -> bool:
    """The condition's truth; ``context`` may be a callable, built only when needed."""
    if expr is None:
        return default
    try:
        return bool(expr.evaluate(_resolve(context)))
    except ExpressionError:
        # A condition over answers not given yet (``None > 3``) is simply not met.
        return False


def render_path(parts: tuple[str | int, ...]) -> str:
    """``("meds", 1, "dose")`` → ``meds[1].dose``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Run:
    def __init__(self, spec: FormSpec, raw: Mapping[str, Any], locale: str,
                 extra: Mapping[str, Any], pages: Collection[int] | None) -> None:
        self.spec, self.locale, self.pages = spec, locale, pages
        self.types = _types()
        self.current: dict[str, Any] = {k: v for k, v in raw.items() if isinstance(k, str)}
        self.raw = dict(self.current)
        self.extra = dict(extra)
        self.errors: list[dict[str, Any]] = []
        self.visible: list[str] = []
        self.required: list[str] = []
        self.disabled: list[str] = []
        self.done: list[str] = []
        self.computed: dict[str, FieldSpec] = {}

    def context(self, value: Any = None, row: Any = None) -> dict[str, Any]:
        ctx = {**self.extra, "answers": self.current, "value": value}
        if row is not None:
            ctx["row"] = row
        return ctx

    def error(self, parts: tuple[str | int, ...], code: str, message: str) -> None:
        self.errors.append({"path": render_path(parts), "code": code, "message": message})

    def issue(self, base: tuple[str | int, ...], issue: Issue) -> None:
        sub, key, params = issue
        self.error((*base, *sub), key, t(key, self.locale, **params))

    def checks_page(self, spec: FieldSpec) -> bool:
        return self.pages is None or spec.page in self.pages

    def run(self) -> None:
        for spec in self.spec.fields:
            self.field(spec)
            self.done.append(spec.key)

    def field(self, spec: FieldSpec) -> None:
        ftype = self.types[spec.type]
        if spec.visible_if is not None and not _truthy(spec.visible_if, self.context(), True):
            self.current.pop(spec.key, None)
            return
        if spec.visible_fhirpath is not None and not self.fhirpath_visible(spec):
            self.current.pop(spec.key, None)
            return
        if not ftype.answerable:
            return
        if spec.choices_fhirpath is not None:
            spec = self.computed_choices(spec)
        self.visible.append(spec.key)
        if spec.required or _truthy(spec.required_if, self.context(), False):
            self.required.append(spec.key)
        if spec.calculate is not None:
            try:
                self.current[spec.key] = spec.calculate.evaluate(self.context())
            except ExpressionError:
                self.current[spec.key] = None
            return
        if spec.enabled_if is not None and not _truthy(spec.enabled_if, self.context(), True):
            self.disabled.append(spec.key)
            self.current.pop(spec.key, None)
            return
        value = self.raw.get(spec.key)
        if ftype.group:
            self.current[spec.key] = self.repeat(spec, ftype, value)
            return
        result = self.leaf(spec, ftype, value, (spec.key,), None)
        if result is None:
            self.current.pop(spec.key, None)
        else:
            self.current[spec.key] = result

    def fhirpath_visible(self, spec: FieldSpec) -> bool:
        """An imported FHIRPath condition reads the answers of the fields before this one, as
        checked so far (the page is answered in order; a later answer is not yet known)."""
        from careloop.forms.fhirpath import visible

        seen = {k: self.current[k] for k in self.done if k in self.current}
        return visible(self.spec, spec.visible_fhirpath or {}, seen)

    def computed_choices(self, spec: FieldSpec) -> FieldSpec:
        """The field with the choices an imported ``answerExpression`` gives on the answers
        before it, as checked so far (what the page shows is what the answer is held to)."""
        from dataclasses import replace

        from careloop.forms.fhirpath import dynamic_choices

        seen = {k: self.current[k] for k in self.done if k in self.current}
        found = replace(spec, choices=dynamic_choices(self.spec, spec, seen))
        self.computed[spec.key] = found
        return found

    def leaf(self, spec: FieldSpec, ftype: FieldType, value: Any, base: tuple[str | int, ...],
             row_context: dict[str, Any] | None) -> Any:
        if not spec.repeats:
            return self.one(spec, ftype, value, base, row_context)
        values = [v for v in (value if isinstance(value, list) else [value])
                  if not is_empty(v)]
        if not values:
            return self.one(spec, ftype, None, base, row_context)
        if len(values) > 50:
            self.issue(base, ((), "forms.repeat_max", {"max": 50}))
            return None
        out = [self.one(spec, ftype, v, (*base, i), row_context) for i, v in enumerate(values)]
        return None if any(v is None for v in out) else out

    def one(self, spec: FieldSpec, ftype: FieldType, value: Any, base: tuple[str | int, ...],
            row_context: dict[str, Any] | None) -> Any:
        checking = self.checks_page(spec)
        context: Context = row_context if row_context is not None else self.context
        if is_empty(value):
            if checking and (spec.required or _truthy(spec.required_if, context, False)):
                self.error(base, "forms.required", t("forms.required", self.locale))
            return None
        normalised, issues = ftype.check(spec, value)
        if not issues and spec.choice_logic:
            issues = self.hidden_choices(spec, normalised, context)
        if issues:
            if checking:
                for issue in issues:
                    self.issue(base, issue)
            return None
        for check in spec.validations:
            scope = {**_resolve(context), "value": normalised}
            if checking and not _truthy(check.expression, scope, False):
                self.error(base, "forms.validation", pick(dict(check.message), self.locale))
                return None
        return normalised

    def hidden_choices(self, spec: FieldSpec, value: Any, context: Context) -> list[Issue]:
        chosen = value if isinstance(value, list) else (
            value.get("codes") or [value.get("code")] if isinstance(value, dict)
            and spec.type != "likert_matrix" else
            list(value.values()) if isinstance(value, dict) else [value])
        for code in chosen:
            choice = spec.choice(code)
            if choice is not None and not _truthy(choice.visible_if, context, True):
                return [((), "forms.choice", {})]
        return []

    def repeat(self, spec: FieldSpec, ftype: FieldType, value: Any) -> list[dict[str, Any]] | None:
        base = (spec.key,)
        if is_empty(value):
            if self.checks_page(spec) and (spec.required or _truthy(spec.required_if,
                                                                    self.context(), False)):
                self.error(base, "forms.required", t("forms.required", self.locale))
            return None
        _, issues = ftype.check(spec, value)
        if issues:
            for issue in issues:
                self.issue(base, issue)
            return None
        lo, hi = spec.options.get("min_items"), spec.options.get("max_items", 50)
        if lo is not None and len(value) < int(lo):
            self.issue(base, ((), "forms.repeat_min", {"min": lo}))
        if hi is not None and len(value) > int(hi):
            self.issue(base, ((), "forms.repeat_max", {"max": hi}))
            return None
        rows: list[dict[str, Any]] = []
        for index, item in enumerate(value):
            row: dict[str, Any] = {}
            raw_row = dict(item)
            for sub in spec.fields:
                sub_type = self.types[sub.type]
                context = self.context(row=raw_row)
                if not sub_type.answerable or not _truthy(sub.visible_if, context, True):
                    raw_row.pop(sub.key, None)
                    continue
                result = self.leaf(sub, sub_type, item.get(sub.key), (spec.key, index, sub.key),
                                   context)
                if result is not None:
                    row[sub.key] = result
                    raw_row[sub.key] = result
            rows.append(row)
        return rows


def initial_answers(spec: FormSpec) -> dict[str, Any]:
    """What a patient page starts with: each field's ``default`` (an imported FHIR
    ``initial``), or the value of its ``default_fhirpath`` (an ``initialExpression`` reading
    the clock) evaluated now, on the defaults before it. Only the page uses it; a submission
    holds what was answered."""
    out: dict[str, Any] = {}
    for item in spec.fields:
        if item.default is not None:
            out[item.key] = item.default
        elif item.default_fhirpath is not None:
            from careloop.forms.fhirpath import dynamic_default

            value = dynamic_default(spec, item, out)
            if value is not None:
                out[item.key] = value
    return out


def field_number(spec: FormSpec, name: str, answers: Mapping[str, Any]) -> float | None:
    """The numeric value of ``name`` (``field`` or ``matrix.row``) for scoring."""
    if name in answers:
        key, row = name, ""
    else:
        key, _, row = name.partition(".")
        if key not in answers:
            return None
    field_spec = spec.field(key)
    if field_spec is None:
        return None
    ftype = _types()[field_spec.type]
    value = answers[key]
    if row:
        if not isinstance(value, dict) or row not in value:
            return None
        choice = field_spec.choice(value[row])
        return choice.score if choice is not None else None
    number = ftype.number(field_spec, value)
    if number is None and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return number


def _methods() -> Catalogue[ScoreMethod]:
    return loaded_registry().catalogue("score_method")


def score(spec: FormSpec, item: ScoreSpec, answers: Mapping[str, Any],
          scores: Mapping[str, Any], extra: Mapping[str, Any]) -> float | None:
    """The value of one score (``None`` when too few of its fields are answered): its method
    computes it (the compiler refused a method that cannot)."""
    numbers = [(name, field_number(spec, name, answers)) for name in item.fields]
    given = [(name, n) for name, n in numbers if n is not None]
    if item.min_answered is not None and len(given) < item.min_answered:
        return None
    method = _methods()[item.method]
    return method.compute(item, ScoreInput(form=spec, answers=answers, scores=scores,
                                           extra=extra, given=given))


def band_of(item: ScoreSpec, value: float | None) -> str | None:
    if value is None:
        return None
    for band in item.bands:
        if band.matches(value):
            return band.code
    return None


def compute_scores(spec: FormSpec, answers: Mapping[str, Any],
                   extra: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, float | None], dict[str, str | None]]:
    """Every score of the form, in order (a later score may use an earlier one), and bands."""
    scores: dict[str, float | None] = {}
    bands: dict[str, str | None] = {}
    for item in spec.scores:
        value = score(spec, item, answers, scores, extra or {})
        scores[item.key] = value
        if item.bands:
            bands[item.key] = band_of(item, value)
    return scores, bands


def evaluate(spec: FormSpec, answers: Mapping[str, Any], *, locale: str = "zh-CN",
             context: Mapping[str, Any] | None = None,
             pages: Collection[int] | None = None) -> Evaluation:
    """Evaluate submitted answers; ``pages`` limits error checks to those pages (page flow).

    Hidden and disabled fields are dropped, calculated fields recomputed, then scores.
    """
    run = _Run(spec, answers if isinstance(answers, Mapping) else {}, locale, context or {},
               pages)
    run.run()
    keep = set(run.visible) - set(run.disabled)
    final = {key: value for key, value in run.current.items()
             if key in keep and value is not None}
    scores, bands = compute_scores(spec, final, context)
    return Evaluation(valid=not run.errors, errors=run.errors, answers=final,
                      visible=run.visible, scores=scores, bands=bands, disabled=run.disabled,
                      required=[k for k in run.required if k not in run.disabled],
                      fields=run.computed)
