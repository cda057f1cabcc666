"""A rule set of plain conditions decided by one function built from the checked trees
(careloop.rules.flat): the same decisions as the reference evaluator, built only from the fixed
table of names, never from definition text."""

from __future__ import annotations

import ast
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.engine.check import check_documents
from careloop.engine.expressions import ExpressionError, compile_expression
from careloop.engine.sources import load_file, load_text
from careloop.rules import flat
from careloop.rules.flat import build, flat_matcher
from careloop.rules.spec import RuleSetSpec
from tests.rules.test_matcher import _decides_like_the_reference

ROOT = Path(__file__).resolve().parents[2]
ROUTING = ROOT / "app_definitions" / "satisfaction" / "rules" / "followup_routing.yaml"


def test_the_seed_routing_set_is_decided_by_one_built_function() -> None:
    result = check_documents([load_file(ROUTING)], external=lambda kind, key: {"stored": True})
    spec: RuleSetSpec = result.specs[("ruleset", "followup_routing")]
    assert spec.matcher is not None and spec.matcher.__code__.co_filename == "<rule set>"
    ctx: dict[str, Any] = {"event": {"form": "inpatient_satisfaction"},
                           "answers": {"overall": 2, "medication_clear": "no"},
                           "classification": {"negative": []}}
    assert [m.rule.key for m in spec.match(ctx)] == ["dissatisfied", "medication_guidance"]
    ctx["event"] = {"form": "other"}  # the filter fails: nothing, and nothing allocated
    assert spec.match(ctx) == () and spec.match(ctx) is spec.match({"event": {}})
    # the same tuple every time: a result is prebuilt, not made per call
    ctx = {"event": {"form": "discharge_day3"}, "answers": {"overall": 5}}
    assert spec.match(ctx) is spec.match(dict(ctx)) and len(spec.match(ctx)) == 1


@pytest.mark.parametrize("text", [
    "len(answers) > 1",            # a function call
    "answers.overall + 1 > 3",     # arithmetic
    "1 < answers.overall < 4",     # a chained comparison
    "3 > answers.overall",         # the constant on the left of an ordering
    "answers.overall < 'a'",       # ordering with text
    "answers.overall is 3",        # identity with a number
    "answers[answers.k] == 1",     # a computed key
    "answers.overall in tags",     # membership of two reads
])
def test_other_shapes_are_left_to_the_closures(text: str) -> None:
    assert flat_matcher(None, [(compile_expression(text), False)], False) is None


def test_constants_and_keys_stay_values_never_code() -> None:
    # Text that would be code if it were pasted into source is only ever a constant.
    key = "a'); import os; ('"
    expression = compile_expression(f'answers[{key!r}] == "x\\"); os.system(\\"echo\\")"')
    matcher = flat_matcher(None, [(expression, False)], False)
    assert matcher is not None
    assert matcher({"answers": {key: 'x"); os.system("echo")'}}) == 1
    assert matcher({"answers": {key: "x"}}) == 0
    assert matcher.__globals__["__builtins__"] == {}  # no builtin reachable but the helpers
    module = build(None, [(expression, False)], False)
    assert module is not None
    names = {n.id for n in ast.walk(module) if isinstance(n, ast.Name)}
    assert names <= {"ctx", "_m", "_r0", "_r1", *flat.HELPERS}
    constants = {n.value for n in ast.walk(module) if isinstance(n, ast.Constant)}
    assert key in constants


@pytest.mark.parametrize("node", [
    ast.Attribute(value=ast.Name(id="ctx", ctx=ast.Load()), attr="__class__", ctx=ast.Load()),
    ast.Name(id="open", ctx=ast.Load()),
    ast.Constant(value=b"bytes"),
    ast.Lambda(args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[],
                                  defaults=[]), body=ast.Constant(value=1)),
])
def test_the_built_tree_is_verified_against_the_fixed_table(node: ast.expr) -> None:
    module = build(None, [(compile_expression("x.a == 1"), False)], False)
    assert module is not None
    function = module.body[0]
    assert isinstance(function, ast.FunctionDef)
    function.body.insert(0, ast.Expr(value=node))
    with pytest.raises(ValueError):
        flat._verify(module)


def test_a_hostile_expression_is_still_refused_with_its_path() -> None:
    text = ("kind: ruleset\nkey: r\ntitle: {zh-CN: 规则, en: Rules}\non: [form.submitted]\n"
            "rules:\n  - key: a\n    when: \"answers.__class__ == 1\"\n"
            "    then: [{do: tag, tag: x}]\n")
    result = check_documents([load_text(text, "r.yaml")])
    assert [(p.code, p.path) for p in result.errors] == [("expr.forbidden", ("rules", 0, "when"))]


def test_an_unusual_value_falls_back_to_the_engines_decision() -> None:
    c = compile_expression
    rules = [(c("answers.overall < 3"), False), (c("'x' in answers.tags"), False)]
    matcher = flat_matcher(None, rules, False)
    assert matcher is not None
    assert matcher({"answers": {"overall": None, "tags": None}}) == 0  # null-safe, inline
    assert matcher({"answers": MappingProxyType({"overall": 1, "tags": ["x"]})}) == 0b11
    for odd in ({"overall": "2"}, {"overall": len}, {"tags": "x"}):  # the engine decides
        with pytest.raises(Exception):  # noqa: B017 - any exception means "fall back"
            matcher({"answers": odd})
    with pytest.raises(ExpressionError) as error:  # and raises its located error
        rules[0][0].evaluate({"answers": {"overall": "2"}})
    assert error.value.code == "expr.runtime"


@pytest.mark.parametrize("text", ["answers.a == 1", "answers.a != 1", "answers.a is None",
                                  "answers.a in [1, 'x']", "answers.a", "not answers.a",
                                  "answers.a.b == 1", "'x' in answers.a", "answers.a >= 1"])
def test_a_function_as_a_value_is_refused_as_the_reference_refuses_it(text: str) -> None:
    expression = compile_expression(text)
    matcher = flat_matcher(None, [(expression, False)], False)
    assert matcher is not None
    with pytest.raises(Exception):  # noqa: B017 - the built function never decides it
        matcher({"answers": {"a": len}})
    with pytest.raises(ExpressionError) as error:
        expression.evaluate({"answers": {"a": len}})
    assert error.value.code == "expr.forbidden"


# --- generated plain rule sets: the built function against the reference evaluator -------------

_paths = st.sampled_from(["x", "tags", "answers.a", "answers['b']", "answers.a.b", "event.form",
                          "missing.a", "answers[0]"])
_consts = st.sampled_from(["0", "3", "2.5", "None", "True", "'a'", "''", "-1", "-2.5"])
_numbers = st.sampled_from(["0", "3", "2.5", "-1", "100000000000000000"])
_plain_leaf = st.one_of(
    st.tuples(_paths, st.sampled_from(["<", "<=", ">", ">="]), _numbers).map(" ".join),
    st.tuples(_paths, st.sampled_from(["==", "!="]), _consts).map(" ".join),
    st.tuples(_paths, st.sampled_from(["is", "is not"]),
              st.sampled_from(["None", "True", "False"])).map(" ".join),
    st.tuples(_paths, st.sampled_from(["in", "not in"]),
              st.lists(_consts, max_size=3).map(lambda xs: f"[{', '.join(xs)}]")).map(" ".join),
    st.tuples(_consts, st.sampled_from(["in", "not in"]), _paths).map(" ".join),
    _paths, st.sampled_from(["True", "False", "0", "'a'"]))
_plain_condition = st.recursive(_plain_leaf, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"),
    inner.map(lambda a: f"not ({a})")), max_leaves=5)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-5, 5),
                    st.sampled_from(["a", "b", "", "ab"]), st.just(len))
_value = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "form"]), inner, max_size=2)
    | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2).map(MappingProxyType),
    max_leaves=5)
_context = st.fixed_dictionaries({}, optional={n: _value for n in
                                              ("x", "tags", "answers", "event")})


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.none() | _plain_condition, st.lists(st.tuples(_plain_condition, st.booleans()),
                                              min_size=1, max_size=4), st.booleans(), _context)
def test_generated_plain_rule_sets_decide_like_the_reference(
        flt_text: str | None, rule_texts: list[tuple[str, bool]], first: bool,
        ctx: dict[str, Any]) -> None:
    flt = compile_expression(flt_text) if flt_text is not None else None
    rules = [(compile_expression(text), stop) for text, stop in rule_texts]
    matcher = flat_matcher(flt, rules, first)
    assert matcher is not None, (flt_text, rule_texts)  # every plain shape is built
    _decides_like_the_reference(matcher, flt, rules, first, ctx, (flt_text, rule_texts))
