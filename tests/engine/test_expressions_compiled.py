"""The compiled fast path gives exactly what the reference evaluator gives (value or error)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.engine import expressions
from careloop.engine.expression_compile import count_nodes
from careloop.engine.expression_runtime import Evaluator
from careloop.engine.expressions import ExpressionError, compile_expression

NAMES = ["x", "y", "s", "items", "answers"]


def _outcome(run: Any, context: dict[str, Any]) -> tuple[Any, ...]:
    try:
        value = run(context)
    except ExpressionError as exc:
        return ("error", exc.code, exc.column, exc.message, exc.hint)
    return ("value", type(value).__name__, repr(value))


# --- generated expressions ----------------------------------------------------------------------

_constants = st.one_of(
    st.integers(-5, 5).map(str), st.sampled_from(["0", "10**17", "999999999999999999", "2.5",
                                                  "0.1", "1e308", "True", "False", "None",
                                                  "'a'", "'用药'", "''", "'ab'"]),
)
_reads = st.sampled_from([
    "x", "y", "s", "items", "answers", "answers.a", "answers.b", "answers['a']", "answers.a.b",
    "items[0]", "items[-1]", "items[5]", "s[1:3]", "items[::2]", "s[x:]", "missing", "items[x]",
    "answers[s]",
])
_leaves = _constants | _reads
_BINARY = ["+", "-", "*", "/", "//", "%", "**"]
_COMPARE = ["<", "<=", ">", ">=", "==", "!=", "in", "not in", "is", "is not"]
_FUNCTIONS = ["len", "sum", "min", "max", "abs", "round", "number", "lower", "contains",
              "coalesce", "count", "mean", "any_of"]


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        st.tuples(inner, st.sampled_from(_BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(_COMPARE), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(["<", "<=", "=="]), inner, st.sampled_from(["<", "!="]),
                  inner).map(lambda t: f"({t[0]} {t[1]} {t[2]} {t[3]} {t[4]})"),
        st.tuples(st.lists(inner, min_size=2, max_size=4), st.sampled_from(["and", "or"])).map(
            lambda t: "(" + f" {t[1]} ".join(t[0]) + ")"),
        inner.map(lambda a: f"(not {a})"),
        inner.map(lambda a: f"(-{a})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: "(" + ", ".join(xs) + ",)"),
        pair.map(lambda t: f"{{{t[0]}: {t[1]}}}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(inner, st.sampled_from(["a", "b"])).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(st.sampled_from(_FUNCTIONS), st.lists(inner, min_size=1, max_size=2)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"),
        inner.map(lambda a: f"round({a}, n=1)"),
    )


EXPRESSIONS = st.recursive(_leaves, _extend, max_leaves=12)

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.integers(),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5),
                     st.sampled_from(["a", "b", "用药"]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
                       max_leaves=8)
CONTEXTS = st.fixed_dictionaries({}, optional={name: _values for name in NAMES})


@settings(max_examples=1500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(EXPRESSIONS, CONTEXTS)
def test_fast_path_equals_reference_evaluator(text: str, context: dict[str, Any]) -> None:
    try:
        compiled = compile_expression(text)
    except ExpressionError:
        return
    reference = _outcome(compiled.evaluate_reference, context)
    assert _outcome(compiled.evaluate, context) == reference
    # The closures alone (without the fallback) never return a value the reference would not.
    assert compiled.program is not None
    try:
        value = compiled.program.run(context)
    except Exception:  # the fallback decides; checked above
        return
    assert reference == ("value", type(value).__name__, repr(value))


# --- targeted cases -----------------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any]]] = [
    ("x", {"x": len}),
    ("x.a", {"x": {"a": print}}),
    ("x[0]", {"x": [dict]}),
    ("coalesce(x, 1)", {"x": max}),
    ("sum(x)", {"x": list(range(20_000))}),
    ("sum(x) + sum(y)", {"x": list(range(5000)), "y": list(range(5000))}),
    ("x + 1", {"x": 10**18}),
    ("x * 2.0", {"x": 1e308}),
    ("x < 'a'", {"x": 3}),
    ("x.a.b", {"x": {"a": "text"}}),
    ("x[None]", {"x": [1]}),
    ("x['a']", {"x": [1]}),
    ("x[1:'b']", {"x": "abc"}),
    ("x[::0]", {"x": "abc"}),
    ("{x: 1}", {"x": [1]}),
    ("1 < x < 3 < y", {"x": 2, "y": None}),
    ("x and y and z", {"x": 1, "y": 0}),
    ("x or y or z", {"y": "a"}),
    ("-x", {"x": "a"}),
    ("not x", {"x": []}),
    ("x ** 80", {"x": 10}),
    ("x % 2", {"x": "a%s"}),
    # fused one-key reads (a path and a constant in one closure): every other case unfused
    ("x.a < 3", {"x": {"a": True}}),
    ("x.a >= 3", {"x": {"a": "3"}}),
    ("x.a <= 3", {"x": {"a": None}}),
    ("x.a > 3", {"x": [1]}),
    ("x.a == 'a'", {"x": {"a": print}}),
    ("x.a != 1", {"x": "text"}),
    ("'a' in x.a", {"x": {"a": "cat"}}),
    ("'a' not in x.a", {"x": {"a": 3}}),
    ("x.a in ['a', 'b']", {"x": {"a": len}}),
    ("x['a'] not in ('a',)", {"x": {"a": "b"}}),
]


@pytest.mark.parametrize(("text", "context"), CASES)
def test_targeted_cases_match_the_reference(text: str, context: dict[str, Any]) -> None:
    compiled = compile_expression(text)
    assert _outcome(compiled.evaluate, context) == _outcome(compiled.evaluate_reference, context)


def test_functions_as_values_are_refused_on_the_fast_path_too() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression("answers.x").evaluate({"answers": {"x": print}})
    assert exc.value.code == "expr.forbidden"


def test_budget_shared_between_calls_falls_back_to_exact_metering() -> None:
    compiled = compile_expression("sum(x) + sum(y)")
    # 9,000 items > one call's share, but the exact count (9,000 + 7 nodes) is within budget.
    assert compiled.evaluate({"x": list(range(9000)), "y": []}) == sum(range(9000))
    with pytest.raises(ExpressionError) as exc:
        compiled.evaluate({"x": list(range(6000)), "y": list(range(6000))})
    assert exc.value.code == "expr.budget"


@pytest.mark.parametrize(("text", "taken"), [
    ("answers.a + 1 + [1, 2][0] + x[1:2][0]", True),  # every node evaluated: the bound is exact
    ("answers.a if answers.b else {1: (2, 3)}", False),  # a branch skipped: an upper bound
])
def test_static_node_count_bounds_the_reference_steps(text: str, taken: bool) -> None:
    compiled = compile_expression(text)
    evaluator = Evaluator(text, {"answers": {"a": 1, "b": 1}, "x": [1, 2]}, compiled.table, 10**6)
    evaluator.eval(text, previously_parsed=compiled.tree.body)
    assert compiled.program is not None
    assert compiled.program.nodes == count_nodes(compiled.tree.body)
    assert (evaluator.steps == compiled.program.nodes) is taken
    assert evaluator.steps <= compiled.program.nodes


def test_budget_change_after_compiling_uses_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_expression("1 + 2 + 3 + 4 + 5 + 6")
    assert compiled.evaluate({}) == 21
    monkeypatch.setattr(expressions, "MAX_STEPS", 10)
    with pytest.raises(ExpressionError) as exc:
        compiled.evaluate({})
    assert exc.value.code == "expr.budget"


def test_closures_never_call_the_reference_on_the_happy_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_expression("answers.overall <= 2 and contains(answers.comment, '用药')")

    def refuse(self: object, context: object) -> None:
        raise AssertionError("reference evaluator used")

    monkeypatch.setattr(expressions.Expression, "evaluate_reference", refuse)
    assert compiled.evaluate({"answers": {"overall": 1, "comment": "停用药了"}}) is True
