"""Score methods. Each is a :class:`ScoreMethod` registered in ``catalogue("score_method")``.

A method owns its options (JSON Schema properties of the keys a score may carry beside the
common ``key``, ``label``, ``method``, ``fields``, ``min_answered`` and ``bands``), its own
compile-time check (located problems), and how it computes a value from the answers. The form
compiler refuses a score whose method is unknown, is registered without a ``compute``, or is
given options its method does not declare; :func:`careloop.forms.logic.score` only asks the
method, so a plugin's method scores real values.

    scores:
      - {key: burden, method: weighted, fields: [q1, q2], weights: {q1: 2}}
    ──▶ ScoreSpec(key="burden", method="weighted", options={"weights": {"q1": 2}}, …)
    ──▶ METHODS["weighted"].compute(score_spec, ScoreInput(…)) == 2 * q1 + q2

A plugin adds a method with one module whose ``register(registry)`` adds a ``ScoreMethod`` (the
recipe "Adding a score method" in docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from careloop.engine.expressions import ExpressionError
from careloop.forms.spec import FormSpec, ScoreSpec

# (path below the score, e.g. ("weights", "q9"), code, message) — a compile-time problem
ScoreProblem = tuple[tuple[str | int, ...], str, str]

#: keys every score may carry; the rest are options of its method
COMMON_SCORE_KEYS = frozenset({"key", "label", "method", "fields", "min_answered", "bands"})


@dataclass(frozen=True, slots=True)
class ScoreInput:
    """What a method computes from: the form, its answers, the earlier scores, the expression
    context, and the numeric value of each named field that was answered (in order)."""

    form: FormSpec
    answers: Mapping[str, Any]
    scores: Mapping[str, Any]
    extra: Mapping[str, Any]
    given: Sequence[tuple[str, float]]

    @property
    def values(self) -> list[float]:
        return [n for _, n in self.given]


def _no_problems(score: Mapping[str, Any], field_keys: frozenset[str]) -> list[ScoreProblem]:
    return []


@dataclass(frozen=True, slots=True)
class ScoreMethod:
    """A registered score method: options schema, compile-time check, compute."""

    name: str
    title: dict[str, str]
    compute: Callable[[ScoreSpec, ScoreInput], float | None]
    options: dict[str, Any] = field(default_factory=dict)  # JSON Schema "properties"
    required: tuple[str, ...] = ()  # options the method cannot do without
    needs_fields: bool = True
    #: (the score as written, the form's top-level field keys) -> located problems
    check: Callable[[Mapping[str, Any], frozenset[str]], list[ScoreProblem]] = _no_problems

    def panel(self) -> dict[str, Any]:
        """What the form builder's score editor needs."""
        return {"name": self.name, "title": dict(self.title), "options": self.options,
                "required": list(self.required), "needs_fields": self.needs_fields}


def _sum(score: ScoreSpec, given: ScoreInput) -> float | None:
    return float(sum(given.values)) if given.given else None


def _mean(score: ScoreSpec, given: ScoreInput) -> float | None:
    values = given.values
    return sum(values) / len(values) if values else None


def _weighted(score: ScoreSpec, given: ScoreInput) -> float | None:
    if not given.given:
        return None
    return float(sum(score.weights.get(name, 1.0) * n for name, n in given.given))


def _top_box(score: ScoreSpec, given: ScoreInput) -> float | None:
    values = given.values
    if not values:
        return None
    return sum(1 for v in values if v >= (score.threshold or 0)) / len(values)


def _value(score: ScoreSpec, given: ScoreInput) -> float | None:
    return given.values[0] if given.given else None


def codes_of(value: Any) -> list[str]:
    """The codes in an answer (a code, a list, ``{"code"}``, ``{"codes"}`` or matrix rows)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        if "codes" in value:
            return [str(v) for v in value["codes"]]
        if "code" in value:
            return [str(value["code"])]
        return [str(v) for v in value.values()]
    return [str(value)]


def lookup(answers: Mapping[str, Any], name: str) -> Any:
    """The answer ``name`` (``field`` or ``matrix.row``) names."""
    key, _, row = name.partition(".")
    value = answers.get(key)
    if row and isinstance(value, dict):
        return value.get(row)
    return value


def _count(score: ScoreSpec, given: ScoreInput) -> float | None:
    return float(sum(1 for name in score.fields if name.split(".")[0] in given.answers
                     for code in codes_of(lookup(given.answers, name)) if code in score.codes))


def _expression(score: ScoreSpec, given: ScoreInput) -> float | None:
    if score.expression is None:
        return None
    try:
        value = score.expression.evaluate({**given.extra, "answers": given.answers,
                                           "scores": given.scores})
    except ExpressionError:
        return None
    return float(value) if isinstance(value, int | float) and value is not None else None


def _weights_name_fields(score: Mapping[str, Any], keys: frozenset[str]) -> list[ScoreProblem]:
    named = set(score.get("fields") or ())
    weights = score.get("weights")
    if not isinstance(weights, Mapping):
        return []
    return [(("weights", name), "form.unknown-field-reference",
             f"weight '{name}' names no field of this score")
            for name in weights if name not in named]


WEIGHTS = {"type": "object", "additionalProperties": {"type": "number"},
           "x-label": {"zh-CN": "各字段权重", "en": "Weight per field"}}
EXPRESSION = {"$ref": "#/$defs/expression", "x-label": {"zh-CN": "表达式", "en": "Expression"}}

BUILTIN_SCORE_METHODS: tuple[ScoreMethod, ...] = (
    ScoreMethod("sum", {"zh-CN": "求和", "en": "Sum of the fields' values/scores"}, _sum),
    ScoreMethod("mean", {"zh-CN": "平均", "en": "Mean of the answered fields"}, _mean),
    ScoreMethod("weighted", {"zh-CN": "加权求和", "en": "Weighted sum (weights per field)"},
                _weighted, {"weights": WEIGHTS}, check=_weights_name_fields),
    ScoreMethod("count", {"zh-CN": "计数", "en": "Count of answers whose code is in 'codes'"},
                _count, {"codes": {"type": "array", "items": {"type": ["string", "integer"]},
                                   "x-label": {"zh-CN": "计入的选项代码",
                                               "en": "Codes counted"}}},
                required=("codes",)),
    ScoreMethod("top_box", {"zh-CN": "高分占比",
                            "en": "Share of answers ≥ threshold (CSAT top-box)"},
                _top_box, {"threshold": {"type": "number",
                                         "x-label": {"zh-CN": "阈值", "en": "Threshold"}}}),
    ScoreMethod("value", {"zh-CN": "取值", "en": "The value of one field (e.g. NPS, banded)"},
                _value, needs_fields=False),
    ScoreMethod("expression", {"zh-CN": "表达式",
                               "en": "An expression over answers and earlier scores"},
                _expression, {"expression": EXPRESSION}, required=("expression",),
                needs_fields=False),
)

SCORE_METHODS: dict[str, ScoreMethod] = {m.name: m for m in BUILTIN_SCORE_METHODS}
