"""``careloop expr check|eval|functions`` through click's CliRunner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from careloop.engine.cli_expr import expr
from careloop.engine.functions import FUNCTIONS


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(expr, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_check_ok_prints_the_names_used() -> None:
    code, out, _ = run("check", "answers.overall <= 2 and contains(patient.name, '王')")
    assert code == 0
    assert out.splitlines() == ["ok", "names: answers, patient", "functions: contains"]


def test_check_with_names_refuses_an_unknown_name_with_a_caret() -> None:
    code, out, err = run("check", "1 + answrs.overall", "--names", "answers, patient")
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "1 + answrs.overall",
        "    ^",
        "expr.unknown-name: unknown name 'answrs' (did you mean 'answers'?)",
    ]


def test_caret_accounts_for_wide_characters() -> None:
    code, _, err = run("check", "'用药' + foo(1)")
    assert code == 1
    lines = err.splitlines()
    assert lines[1] == " " * len("'用药' + ") + "  ^"  # two CJK characters take two columns each
    assert lines[2] == "expr.unknown-function: unknown function 'foo'"


def test_check_refuses_unsafe_expressions() -> None:
    code, _, err = run("check", "x.__class__")
    assert code == 1
    assert "expr.forbidden: field '__class__' is not allowed" in err


def test_eval_prints_json() -> None:
    code, out, _ = run("eval", "days_between('2026-01-01', '2026-01-31')")
    assert (code, out) == (0, "30\n")


def test_eval_with_context_and_now() -> None:
    context = json.dumps({"answers": {"comment": "用药说明不清楚", "score": None}})
    text = "[contains(answers.comment, '用药'), answers.score, add_days(today(), 7)]"
    code, out, _ = run("eval", text, "--context", context, "--now", "2026-03-01T23:00:00+08:00")
    assert code == 0
    assert json.loads(out) == [True, None, "2026-03-08"]
    assert "用药" not in out  # only the result is printed


def test_eval_naive_now_is_hospital_time() -> None:
    code, out, _ = run("eval", "now()", "--now", "2026-03-01T08:00:00")
    assert (code, json.loads(out)) == (0, "2026-03-01T08:00:00+08:00")


def test_eval_error_exits_1() -> None:
    code, out, err = run("eval", "'a' - 1")
    assert code == 1 and out == ""
    assert err.splitlines()[-1] == "expr.runtime: cannot apply '-' to text and number"


def test_eval_bad_options_are_usage_errors() -> None:
    assert run("eval", "1", "--context", "{not json")[0] == 2
    assert run("eval", "1", "--context", "[1]")[0] == 2
    code, _, err = run("eval", "1", "--now", "yesterday")
    assert code == 2 and "not an ISO date-time" in err


def test_functions_lists_every_function() -> None:
    code, out, _ = run("functions")
    assert code == 0
    assert len(out.splitlines()) == len(FUNCTIONS)
    assert "days_between(a, b)" in out and "Days from a to b" in out
    code, out, _ = run("functions", "--lang", "zh")
    assert code == 0 and "医院时区的今天日期" in out
