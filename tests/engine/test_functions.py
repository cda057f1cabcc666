"""The expression function library, its registration, and the clock it reads."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from careloop.engine import functions
from careloop.engine.clock import (
    ClockError,
    clock_offset,
    frozen_now,
    hospital_tz,
    now_utc,
    to_local,
    wall_clock_utc,
)
from careloop.engine.expressions import ExpressionError, compile_expression, function_names
from careloop.engine.registry import DuplicateRegistration, Registry

# 2026-03-01 01:00 UTC is 09:00 in Shanghai.
NOW = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)


def ev(text: str, **context: Any) -> Any:
    with frozen_now(NOW):
        return compile_expression(text).evaluate(context)


# --- clock ----------------------------------------------------------------------------------------


def test_hospital_tz_defaults_to_shanghai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARELOOP_TIMEZONE", raising=False)
    assert hospital_tz() == ZoneInfo("Asia/Shanghai")
    monkeypatch.setenv("CARELOOP_TIMEZONE", "Europe/London")
    assert hospital_tz() == ZoneInfo("Europe/London")


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd"])
def test_unknown_time_zone_is_a_clock_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("CARELOOP_TIMEZONE", name)
    with pytest.raises(ClockError) as exc:
        hospital_tz()
    assert "CARELOOP_TIMEZONE" in str(exc.value)


def test_frozen_now_nests_and_restores() -> None:
    assert now_utc().tzinfo is UTC
    with frozen_now(NOW):
        assert now_utc() == NOW
        with frozen_now(datetime(2026, 1, 1, 8, 0)):  # naive: hospital wall time
            assert now_utc() == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
        assert now_utc() == NOW
    assert abs((now_utc() - wall_clock_utc() - clock_offset()).total_seconds()) < 60


def test_to_local() -> None:
    assert to_local(NOW).hour == 9
    assert to_local(NOW).utcoffset() == ZoneInfo("Asia/Shanghai").utcoffset(NOW)
    with pytest.raises(ClockError) as exc:
        to_local(datetime(2026, 1, 1))
    assert "naive" in str(exc.value)


# --- registration ---------------------------------------------------------------------------------


def test_register_puts_every_spec_in_the_function_catalogue() -> None:
    registry = Registry()
    functions.register(registry)
    catalogue = registry.catalogue("function")
    assert catalogue.names() == [spec.name for spec in functions.FUNCTIONS]
    assert catalogue["days_between"].func is functions.fn_days_between
    with pytest.raises(DuplicateRegistration):
        functions.register(registry)


def test_the_language_uses_the_registered_functions() -> None:
    assert function_names() == [spec.name for spec in functions.FUNCTIONS]


@pytest.mark.parametrize("spec", functions.FUNCTIONS, ids=lambda s: s.name)
def test_every_function_is_documented_in_both_languages(spec: functions.FunctionSpec) -> None:
    assert spec.signature.startswith(spec.name + "(")
    assert spec.doc_zh and spec.doc_en
    assert any("\u4e00" <= ch <= "\u9fff" for ch in spec.doc_zh)
    assert spec.doc_en[0].isupper()


# --- dates ----------------------------------------------------------------------------------------


def test_today_and_now_use_the_hospital_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ev("today()") == date(2026, 3, 1)
    assert ev("now()") == datetime(2026, 3, 1, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    monkeypatch.setenv("CARELOOP_TIMEZONE", "America/New_York")
    assert ev("today()") == date(2026, 2, 28)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("days_between('2026-01-01', '2026-01-31')", 30),
        ("days_between('2026-01-31', '2026-01-01')", -30),
        ("days_between('2026-01-31T20:00:00+00:00', '2026-02-01')", 0),  # 04:00 on 1 Feb locally
        ("days_between(d, '2026-03-01')", 28),
        ("days_between(None, '2026-03-01')", None),
        ("days_between(missing.x, today())", None),
        ("hours_between('2026-03-01', '2026-03-01T06:30:00+08:00')", 6.5),
        ("hours_between('2026-03-01T00:00:00', None)", None),
        ("add_days('2026-02-27', 3)", date(2026, 3, 2)),
        ("add_days('2026-03-02', -3)", date(2026, 2, 27)),
        ("add_days(d, 1)", date(2026, 2, 2)),
        ("add_days(None, 1)", None),
        ("add_days('2026-01-01', None)", None),
        ("age('1956-03-01')", 70),
        ("age('1956-03-02')", 69),
        ("age(None)", None),
        ("date('2026-02-01T01:00:00+08:00')", date(2026, 2, 1)),
        ("date(None)", None),
        ("[year(d), month(d), day(d)]", [2026, 2, 1]),
        ("year(None)", None),
    ],
)
def test_date_functions(text: str, expected: Any) -> None:
    assert ev(text, d=date(2026, 2, 1)) == expected


def test_add_days_keeps_date_times() -> None:
    assert ev("add_days('2026-03-01T10:00:00+08:00', 1)") == datetime.fromisoformat(
        "2026-03-02T10:00:00+08:00"
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("date('31/01/2026')", "date(): not an ISO date"),
        ("date(5)", "date(): expects a date, got int"),
        ("add_days('2026-01-01', 1.5)", "add_days(): the number of days must be a whole number"),
        ("add_days(5, 1)", "add_days(): expects a date"),
        ("add_days('9999-12-31', 1)", "add_days()"),
        ("hours_between(1, 2)", "hours_between(): expects a date or date-time"),
        ("today().isoformat", "cannot read field 'isoformat' of date"),
    ],
)
def test_date_function_errors(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        ev(text)
    assert exc.value.code == "expr.runtime"
    assert fragment in exc.value.message


# --- text -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contains('出院后用药说明不清楚', '用药')", True),
        ("contains('Nurse was KIND', 'kind')", True),
        ("contains('bed 12', 12)", True),
        ("contains('好', '差')", False),
        ("contains(None, 'x')", False),
        ("contains('x', None)", False),
        ("contains(['Fever', 'cough'], 'fever')", True),
        ("contains([1, 2], 3)", False),
        ("any_of('伤口红肿', ['渗液', '红肿'])", True),
        ("any_of('伤口红肿', ['渗液'])", False),
        ("any_of('伤口红肿', '红肿')", True),
        ("any_of(None, ['x'])", False),
        ("any_of('x', None)", False),
        ("any_of('x', [None, 'x'])", True),
        ("all_of('用药和复诊', ['用药', '复诊'])", True),
        ("all_of('用药', ['用药', '复诊'])", False),
        ("all_of(None, ['x'])", False),
        ("len('满意')", 2),
        ("len([1, None])", 2),
        ("len({'a': 1})", 1),
        ("len(None)", 0),
        ("lower('ABC')", "abc"),
        ("upper('abc')", "ABC"),
        ("lower(None)", None),
        ("upper(None)", None),
    ],
)
def test_text_functions(text: str, expected: Any) -> None:
    assert ev(text) == expected


@pytest.mark.parametrize("text", ["contains(5, 'x')", "len(5)", "lower(1)", "upper([])",
                                  "any_of('x', 5)"])
def test_text_function_type_errors(text: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        ev(text)
    assert exc.value.code == "expr.runtime"
    assert exc.value.message.startswith(text.split("(")[0] + "(): expects")


# --- numbers and collections ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("number('42')", 42),
        ("number(' 38.5 ')", 38.5),
        ("number('')", None),
        ("number(None)", None),
        ("number(True)", 1),
        ("number(7)", 7),
        ("round(2.5)", 3),
        ("round(-2.5)", -3),
        ("round(2.675, 2)", 2.68),
        ("round(1234, -2)", 1200),
        ("round(None)", None),
        ("min(3, 1, 2)", 1),
        ("min([3, None, 2])", 2),
        ("min(None)", None),
        ("max([])", None),
        ("max('2026-01-01', '2026-03-01')", "2026-03-01"),
        ("sum([1, 2.5, None])", 3.5),
        ("sum(None)", 0),
        ("sum([])", 0),
        ("mean([1, 2, None])", 1.5),
        ("mean([])", None),
        ("mean(None)", None),
        ("abs(-2.5)", 2.5),
        ("abs(None)", None),
        ("count([1, None, 1])", 2),
        ("count([1, None, 1], 1)", 2),
        ("count([1, None, 1], None)", 1),
        ("count(None)", 0),
        ("coalesce(None, missing.x, 0, 5)", 0),
        ("coalesce()", None),
    ],
)
def test_number_and_collection_functions(text: str, expected: Any) -> None:
    result = ev(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("number('abc')", "number(): not a number"),
        ("number('nan')", "number(): not a number"),
        ("number([1])", "number(): expects text or a number"),
        ("round('1')", "round(): expects a number"),
        ("round(1.5, 99)", "round(): digits must be"),
        ("round(1e300)", "round(): cannot round"),
        ("sum([1, 'a'])", "sum(): expects a number"),
        ("mean('abc')", "mean(): expects a list"),
        ("count('abc')", "count(): expects a list"),
        ("min(1, 'a')", "min()"),
        ("abs('x')", "abs(): expects a number"),
    ],
)
def test_number_function_errors(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        ev(text)
    assert exc.value.code == "expr.runtime"
    assert fragment in exc.value.message


def test_function_results_are_bounded() -> None:
    with pytest.raises(ExpressionError) as exc:
        ev("number('1' * 25)")
    assert exc.value.code == "expr.too-large"
