"""The expression language: semantics, null-safety, refusals, limits and error locations."""

from __future__ import annotations

import ast
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.engine import expressions
from careloop.engine.expressions import Expression, ExpressionError, compile_expression

CONTEXT: dict[str, Any] = {
    "answers": {"overall": 2, "comment": "出院后用药说明不清楚", "q-1": [1, None, 3], "ok": True},
    "patient": {"name": "王芳", "address": None},
}


def ev(text: str, context: dict[str, Any] | None = None) -> Any:
    return compile_expression(text).evaluate(CONTEXT if context is None else context)


class Trap:
    """A context value that records every way an expression could touch it."""

    events: ClassVar[list[str]] = []

    def fire(self, *args: object, **kwargs: object) -> str:
        Trap.events.append("fire")
        return "fired"

    def __getattribute__(self, name: str) -> Any:
        if name != "__class__":  # isinstance() may look at the class; that runs no code of ours
            Trap.events.append(f"getattr {name}")
        return object.__getattribute__(self, name)

    def __getitem__(self, key: object) -> Any:
        Trap.events.append("getitem")
        return self.fire

    def __format__(self, spec: str) -> str:
        Trap.events.append("format")
        return "formatted"

    def __str__(self) -> str:
        Trap.events.append("str")
        return "trap"



@pytest.fixture
def trap() -> Trap:
    Trap.events.clear()
    return Trap()


# --- semantics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("-answers.overall", -2),
        ("not answers.ok", False),
        ("answers.overall <= 2 and answers.ok", True),
        ("answers.overall > 5 or 'fallback'", "fallback"),
        ("'high' if answers.overall >= 4 else 'low'", "low"),
        ("1 < answers.overall < 3", True),
        ("answers.overall in [1, 2]", True),
        ("3 not in answers['q-1']", False),
        ("'用药' in answers.comment", True),
        ("'comment' in answers", True),
        ("answers.comment[:2]", "出院"),
        ("answers['q-1'][-1]", 3),
        ("{'a': [1, (2, 3)]}", {"a": [1, (2, 3)]}),
        ("'ab' + 'cd'", "abcd"),
        ("[1] * 3", [1, 1, 1]),
        ("patient.address is None", True),
        ("contains(answers.comment, '用药') and answers.overall <= 2", True),
    ],
)
def test_evaluates(text: str, expected: Any) -> None:
    assert ev(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("answers.missing", None),
        ("patient.address.city", None),
        ("nobody.at.all", None),
        ("answers['q-1'][7]", None),
        ("answers['q-1'][-9]", None),
        ("answers.missing < 3", False),
        ("answers.missing >= 3", False),
        ("3 > answers.missing", False),
        ("answers.missing == None", True),
        ("answers.missing != 3", True),
        ("answers.missing + 1", None),
        ("answers.missing * 2 - 1", None),
        ("-answers.missing", None),
        ("1 in answers.missing", False),
        ("1 not in answers.missing", True),
        ("answers['q-1'][1] + 1", None),
    ],
)
def test_null_safety(text: str, expected: Any) -> None:
    assert ev(text) == expected


def test_names_are_top_level_variables_not_functions() -> None:
    compiled = compile_expression("contains(answers.comment, patient.name) or len(x) > 0")
    assert compiled.names == frozenset({"answers", "patient", "x"})
    assert compiled.functions == frozenset({"contains", "len"})
    assert compile_expression("1 + 1").names == frozenset()


def test_unknown_name_is_refused_with_a_hint() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression("answrs.overall > 2", names=["answers", "patient"])
    assert exc.value.code == "expr.unknown-name"
    assert exc.value.hint == "did you mean 'answers'?"
    assert exc.value.column == 1
    assert compile_expression("answers.x", names=["answers"]).names == {"answers"}


def test_unknown_function_is_refused_with_a_hint() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression("1 + cotains(a, 'b')")
    assert (exc.value.code, exc.value.column) == ("expr.unknown-function", 5)
    assert exc.value.hint == "did you mean 'contains'?"


def test_wrong_arguments_are_refused_at_compile_time() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression("round(1, 2, 3)")
    assert exc.value.code == "expr.arguments"
    assert exc.value.hint == "use round(x, n=0)"
    assert compile_expression("round(2.345, n=2)").evaluate({}) == 2.35


def test_evaluate_never_reparses(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_expression("answers.overall + 1")

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(ast, "parse", no_parse)
    assert compiled.evaluate({"answers": {"overall": 1}}) == 2
    assert compiled.evaluate({"answers": {"overall": 5}}) == 6


def test_expression_is_a_frozen_value() -> None:
    a, b = compile_expression("x + 1"), compile_expression("x + 1")
    assert isinstance(a, Expression) and a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.source = "2"  # type: ignore[misc]


# --- refusals -----------------------------------------------------------------------------------

REFUSED = [
    ("x.__class__", "expr.forbidden"),
    ("x.__class__.__subclasses__()", "expr.forbidden"),
    ("x.__globals__", "expr.forbidden"),
    ("x.__dict__", "expr.forbidden"),
    ("x['__builtins__']", "expr.forbidden"),
    ("__builtins__", "expr.forbidden"),
    ("__import__('os')", "expr.forbidden"),
    ("x.mro", "expr.forbidden"),
    ("x.gi_frame", "expr.forbidden"),
    ("x.gi_code", "expr.forbidden"),
    ("x.f_globals", "expr.forbidden"),
    ("x.f_back", "expr.forbidden"),
    ("x.tb_frame", "expr.forbidden"),
    ("x.cr_frame", "expr.forbidden"),
    ("x.func_globals", "expr.forbidden"),
    ("'{0.__class__}'.format(x)", "expr.forbidden"),
    ("'{x}'.format_map(y)", "expr.forbidden"),
    ("x.format", "expr.forbidden"),
    ("x.fire()", "expr.forbidden"),
    ("y['fire']()", "expr.forbidden"),
    ("lower(x).upper()", "expr.forbidden"),
    ("import os", "expr.forbidden"),
    ("from os import system", "expr.forbidden"),
    ("x = 1", "expr.forbidden"),
    ("x += 1", "expr.forbidden"),
    ("(x := 1)", "expr.forbidden"),
    ("1; x.fire()", "expr.forbidden"),
    ("eval('1')", "expr.forbidden"),
    ("exec('x.fire()')", "expr.forbidden"),
    ("open('/etc/passwd')", "expr.forbidden"),
    ("compile('1', 'f', 'eval')", "expr.forbidden"),
    ("getattr(x, 'fire')()", "expr.forbidden"),
    ("type(x)", "expr.forbidden"),
    ("lambda: x.fire()", "expr.forbidden"),
    ("[v for v in y]", "expr.forbidden"),
    ("(v for v in y)", "expr.forbidden"),
    ("{k: 1 for k in y}", "expr.forbidden"),
    ("f'{x}'", "expr.forbidden"),
    ("f'{x!r:>10}'", "expr.forbidden"),
    ("{1, 2}", "expr.forbidden"),
    ("[*y]", "expr.forbidden"),
    ("{**y}", "expr.forbidden"),
    ("len(*y)", "expr.forbidden"),
    ("len(**y)", "expr.forbidden"),
    ("1 | 2", "expr.forbidden"),
    ("~1", "expr.forbidden"),
    ("1 << 2", "expr.forbidden"),
    ("b'bytes'", "expr.forbidden"),
    ("1j", "expr.forbidden"),
    ("...", "expr.forbidden"),
    ("fire()", "expr.unknown-function"),
    ("x(1)", "expr.unknown-function"),
    ("(lower)(x)", "expr.runtime"),
    ("y['fire']", "expr.forbidden"),
    ("y.fire", "expr.forbidden"),
    ("y[0](1)", "expr.forbidden"),
    ("x.fire", "expr.runtime"),
    ("x['fire']", "expr.runtime"),
    ("x + 1", "expr.runtime"),
    ("'%s' % x", "expr.runtime"),
    ("'%999999999d' % 1", "expr.runtime"),
]


@pytest.mark.parametrize(("text", "code"), REFUSED)
def test_refused_and_nothing_executed(trap: Trap, text: str, code: str) -> None:
    context = {"x": trap, "y": {"fire": trap.fire}}
    Trap.events.clear()  # building the context read trap.fire
    with pytest.raises(ExpressionError) as exc:
        compile_expression(text).evaluate(context)
    assert exc.value.code == code, exc.value.message
    assert exc.value.expression == text
    assert Trap.events == []


def test_method_call_hint_names_the_function() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression("answers.comment.lower()")
    assert exc.value.hint == "call a function instead, e.g. lower(x)"


def test_functions_are_not_values() -> None:
    # A bare function name is just a (missing) variable, never the function itself.
    assert ev("len") is None
    assert ev("[contains, today]") == [None, None]


def test_unicode_lookalike_dunder_is_refused() -> None:
    # Python normalises identifiers (NFKC): fullwidth "ｃｌａｓｓ" becomes "class".
    with pytest.raises(ExpressionError) as exc:
        compile_expression("x.__\uff43\uff4c\uff41\uff53\uff53__")
    assert exc.value.code == "expr.forbidden"


# --- limits ---------------------------------------------------------------------------------------


def test_too_long() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression("[" + "1, " * 700 + "1]")
    assert exc.value.code == "expr.too-long"
    assert compile_expression("[" + "1, " * 600 + "1]").evaluate({}) == [1] * 601


@pytest.mark.parametrize(
    "text",
    ["(" * 250 + "1" + ")" * 250, "-" * 1999 + "1", "[" * 40 + "]" * 40, "not " * 40 + "x",
     "len(" * 40 + "x" + ")" * 40],
)
def test_too_deep(text: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression(text)
    assert exc.value.code == "expr.too-deep"


def test_redundant_parentheses_add_no_depth() -> None:
    assert compile_expression("(" * 40 + "1" + ")" * 40).evaluate({}) == 1


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert compile_expression("-" * 30 + "1").evaluate({}) == 1


def test_long_sums_get_a_hint() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression(" + ".join(f"q{i}" for i in range(40)))
    assert exc.value.code == "expr.too-deep"
    assert exc.value.hint == "for a long sum use sum([a, b, ...])"
    assert compile_expression(f"sum([{', '.join(f'q{i}' for i in range(40))}])").evaluate(
        {f"q{i}": 1 for i in range(40)}
    ) == 40


@pytest.mark.parametrize("text", ["(" * 10_000, "-" * 100_000 + "1", "[" * 100_000])
def test_parser_guard_on_pathological_input(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(expressions, "MAX_LENGTH", 1_000_000)
    with pytest.raises(ExpressionError) as exc:
        compile_expression(text)
    assert exc.value.code in ("expr.too-deep", "expr.syntax")


@pytest.mark.parametrize(
    "text",
    ["9**9**9", "2**10000000", "2.0**100000", "10**19", "1e999", "-(10**18) - 10",
     "99999999999999999999", "'a' * 10**9", "10**9 * 'a'", "[0] * 100000", "'ab' * 5001",
     "x + x", "x * 2", "1e308 * 10"],
)
def test_too_large(text: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression(text).evaluate({"x": "a" * 6000})
    assert exc.value.code == "expr.too-large"


def test_budget_counts_list_items_passed_to_functions() -> None:
    compiled = compile_expression("sum(values)")
    assert compiled.evaluate({"values": list(range(5000))}) == sum(range(5000))
    with pytest.raises(ExpressionError) as exc:
        compiled.evaluate({"values": list(range(20_000))})
    assert exc.value.code == "expr.budget"


def test_budget_counts_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expressions, "MAX_STEPS", 10)
    assert compile_expression("1 + 2 + 3").evaluate({}) == 6  # 5 nodes
    with pytest.raises(ExpressionError) as exc:
        compile_expression("1 + 2 + 3 + 4 + 5 + 6").evaluate({})
    assert exc.value.code == "expr.budget"


# --- runtime errors and locations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("'a' - 1", "cannot apply '-' to text and number"),
        ("answers.overall < 'x'", "cannot compare number and text with '<'"),
        ("1 / 0", "division by zero in '/'"),
        ("answers.overall // 0", "division by zero"),
        ("-'a'", "unary '-'"),
        ("1 in 5", "'in'"),
        ("answers.comment.x", "cannot read field 'x' of text"),
        ("answers.overall[0]", "cannot read [0] of number"),
        ("(-8) ** 0.5", "not a real number"),
        ("date('not a date')", "date(): not an ISO date"),
        ("sum(['a'])", "sum(): expects a number"),
        ("{[1]: 2}", "unhashable"),
    ],
)
def test_runtime_errors_are_coded(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        ev(text)
    assert exc.value.code == "expr.runtime"
    assert fragment in exc.value.message


def test_runtime_error_column_points_at_the_failing_node() -> None:
    with pytest.raises(ExpressionError) as exc:
        ev("answers.overall + 1 > 0 and '用药' - 1")
    assert exc.value.column == len("answers.overall + 1 > 0 and ") + 1


def test_column_counts_characters_not_bytes() -> None:
    text = 'contains(answers.comment, "用药") + foo(1)'
    with pytest.raises(ExpressionError) as exc:
        compile_expression(text)
    assert exc.value.column == text.index("foo") + 1


def test_column_with_leading_whitespace_and_lines() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression("  (answers.ok and\n x.__class__)")
    assert exc.value.column == len("  (answers.ok and\n ") + 1
    assert compile_expression("  (1 +\n 2)  ").evaluate({}) == 3


@pytest.mark.parametrize(("text", "column"), [("1 +", 4), ("x[1:2", 2), ("用药 +", 5), ("", None)])
def test_syntax_errors(text: str, column: int | None) -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression(text)
    assert exc.value.code == "expr.syntax"
    assert exc.value.column == column


def test_error_reads_well_and_converts_to_a_problem() -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression("answrs.x", names=["answers"])
    err = exc.value
    assert str(err) == "expr.unknown-name: unknown name 'answrs' (did you mean 'answers'?)"
    problem = err.to_problem(("rules", 0, "when"), file="r.yaml", line=4, column_offset=11)
    assert (problem.code, problem.line, problem.column) == ("expr.unknown-name", 4, 11)
    assert problem.hint == "did you mean 'answers'?" and "answrs.x" in problem.message


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60) | st.text(alphabet="()[]{}-+*/%<>=!.,:'\"xa1_ ", max_size=60))
def test_arbitrary_text_only_ever_raises_expression_error(text: str) -> None:
    try:
        compiled = compile_expression(text)
    except ExpressionError as exc:
        assert exc.code.startswith("expr.")
        return
    try:
        compiled.evaluate({"x": {"a": 1}, "a": [1, "a", None]})
    except ExpressionError as exc:
        assert exc.code.startswith("expr.")
