"""The function library of the expression language: ``today()``, ``contains(...)``, ``mean(...)`` ….

Each function is a :class:`FunctionSpec` registered into ``registry.catalogue("function")``; an
extension package adds its own the same way. Functions are plain Python callables that take and
return plain values (``None``, bool, int, float, str, list, dict, date, datetime). They are
*null-tolerant*: a missing answer (``None``) gives ``None``, ``False`` or ``0`` — whatever reads
naturally — instead of an error. They raise :class:`ValueError` or :class:`TypeError` for values
of the wrong kind; the evaluator turns those into ``ExpressionError('expr.runtime')`` naming the
function.

Dates accept ISO text (``"2026-01-31"``, ``"2026-01-31T08:00:00+08:00"``), :class:`date` or
:class:`datetime`; an aware datetime is first converted to the hospital's time zone
(:mod:`careloop.engine.clock`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal, InvalidOperation
from typing import Any

from careloop.engine.clock import hospital_tz, now_utc, to_local
from careloop.engine.registry import Registry

CATALOGUE = "function"


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function of the expression language, as authors see it in the docs and the builder."""

    name: str
    func: Callable[..., Any]
    signature: str
    doc_zh: str
    doc_en: str


class _Missing:
    """Sentinel type for "argument not given" (distinct from an explicit ``None``)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


# --- conversions ------------------------------------------------------------------------------


def _parse_temporal(text: str) -> date | datetime:
    text = text.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO date or date-time: {text!r}") from None


def _as_date(value: object) -> date | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = _parse_temporal(value)
    if isinstance(value, datetime):
        return (to_local(value) if value.tzinfo is not None else value).date()
    if isinstance(value, date):
        return value
    raise TypeError(f"expects a date, got {type(value).__name__}")


def _as_datetime(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = _parse_temporal(value)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=hospital_tz())
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=hospital_tz())
    raise TypeError(f"expects a date or date-time, got {type(value).__name__}")


def _check_number(value: object) -> int | float:
    if isinstance(value, int | float):
        return value
    raise TypeError(f"expects a number, got {type(value).__name__}")


def _check_list(value: object) -> Sequence[Any]:
    if isinstance(value, list | tuple):
        return value
    raise TypeError(f"expects a list, got {type(value).__name__}")


def _items(args: tuple[Any, ...]) -> list[Any]:
    """``min(1, 2)`` and ``min([1, 2])`` both work; ``None`` items are skipped."""
    if len(args) == 1 and isinstance(args[0], list | tuple):
        args = tuple(args[0])
    elif len(args) == 1 and args[0] is None:
        return []
    return [a for a in args if a is not None]


# --- dates --------------------------------------------------------------------------------------


def fn_today() -> date:
    return to_local(now_utc()).date()


def fn_now() -> datetime:
    return to_local(now_utc())


def fn_date(value: object) -> date | None:
    return _as_date(value)


def fn_days_between(a: object, b: object) -> int | None:
    start, end = _as_date(a), _as_date(b)
    if start is None or end is None:
        return None
    return (end - start).days


def fn_hours_between(a: object, b: object) -> float | None:
    start, end = _as_datetime(a), _as_datetime(b)
    if start is None or end is None:
        return None
    return (end - start).total_seconds() / 3600


def fn_add_days(value: object, n: object) -> date | datetime | None:
    if value is None or n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"the number of days must be a whole number, got {n!r}")
    if isinstance(value, str):
        value = _parse_temporal(value)
    if isinstance(value, date):  # datetime is a date too; both keep their type
        return value + timedelta(days=n)
    raise TypeError(f"expects a date, got {type(value).__name__}")


def fn_age(birth_date: object) -> int | None:
    born = _as_date(birth_date)
    if born is None:
        return None
    today = fn_today()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def fn_year(value: object) -> int | None:
    d = _as_date(value)
    return None if d is None else d.year


def fn_month(value: object) -> int | None:
    d = _as_date(value)
    return None if d is None else d.month


def fn_day(value: object) -> int | None:
    d = _as_date(value)
    return None if d is None else d.day


# --- text ---------------------------------------------------------------------------------------


def fn_contains(text: object, word: object) -> bool:
    if text is None or word is None:
        return False
    if isinstance(text, str):
        return str(word).casefold() in text.casefold()
    if isinstance(text, list | tuple):
        folded = word.casefold() if isinstance(word, str) else word
        return any(
            (item.casefold() if isinstance(item, str) else item) == folded for item in text
        )
    raise TypeError(f"expects text or a list, got {type(text).__name__}")


def _words(words: object) -> list[Any]:
    if isinstance(words, str):
        return [words]
    return [w for w in _check_list(words) if w is not None]


def fn_any_of(text: object, words: object) -> bool:
    if text is None or words is None:
        return False
    return any(fn_contains(text, w) for w in _words(words))


def fn_all_of(text: object, words: object) -> bool:
    if text is None or words is None:
        return False
    return all(fn_contains(text, w) for w in _words(words))


def fn_len(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str | list | tuple | dict):
        return len(value)
    raise TypeError(f"expects text or a list, got {type(value).__name__}")


def fn_lower(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expects text, got {type(value).__name__}")
    return value.lower()


def fn_upper(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expects text, got {type(value).__name__}")
    return value.upper()


# --- numbers ------------------------------------------------------------------------------------


def fn_number(value: object) -> int | float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if len(text) <= 30:
            for convert in (int, float):
                try:
                    result: int | float = convert(text)
                except ValueError:
                    continue
                if isinstance(result, float) and not math.isfinite(result):
                    break
                return result
        raise ValueError(f"not a number: {value!r}")
    raise TypeError(f"expects text or a number, got {type(value).__name__}")


def fn_round(x: object, n: object = 0) -> int | float | None:
    return _round_with(x, n, ROUND_HALF_UP)


def fn_min(*values: object) -> Any:
    items = _items(values)
    return min(items) if items else None


def fn_max(*values: object) -> Any:
    items = _items(values)
    return max(items) if items else None


def fn_sum(values: object) -> int | float:
    if values is None:
        return 0
    return sum(_check_number(v) for v in _check_list(values) if v is not None)


def fn_mean(values: object) -> float | None:
    if values is None:
        return None
    numbers = [_check_number(v) for v in _check_list(values) if v is not None]
    return sum(numbers) / len(numbers) if numbers else None


def fn_abs(x: object) -> int | float | None:
    return None if x is None else abs(_check_number(x))


def _round_with(x: object, n: object, rounding: str) -> int | float | None:
    if x is None:
        return None
    number = _check_number(x)
    if not isinstance(n, int) or isinstance(n, bool) or not -15 <= n <= 15:
        raise ValueError(f"digits must be a whole number from -15 to 15, got {n!r}")
    try:
        rounded = Decimal(str(number)).quantize(Decimal(1).scaleb(-n), rounding=rounding)
    except InvalidOperation:
        raise ValueError(f"cannot round {number!r}") from None
    return int(rounded) if n <= 0 else float(rounded)


def fn_roundup(x: object, n: object = 0) -> int | float | None:
    return _round_with(x, n, ROUND_UP)


def fn_rounddown(x: object, n: object = 0) -> int | float | None:
    return _round_with(x, n, ROUND_DOWN)


def fn_sqrt(x: object) -> float | None:
    if x is None:
        return None
    number = _check_number(x)
    if number < 0:
        raise ValueError(f"no square root of a negative number ({number!r})")
    return math.sqrt(number)


def fn_isnumber(x: object) -> bool:
    if isinstance(x, bool) or x is None:
        return False
    if isinstance(x, int | float):
        return math.isfinite(x)
    if isinstance(x, str):
        try:
            return fn_number(x) is not None
        except ValueError:
            return False
    return False


#: Seconds in each datediff unit: a year is 365.2425 days and a month 30.44 days (REDCap's).
DATEDIFF_SECONDS = {"y": 365.2425 * 86400, "M": 30.44 * 86400, "d": 86400.0, "h": 3600.0,
                    "m": 60.0, "s": 1.0}


def fn_datediff(a: object, b: object, unit: object, signed: object = False
                ) -> int | float | None:
    if unit not in DATEDIFF_SECONDS:
        raise ValueError(f"unit must be one of {', '.join(DATEDIFF_SECONDS)}, got {unit!r}")
    start, end = _as_datetime(a), _as_datetime(b)
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    if not signed:
        seconds = abs(seconds)
    value = seconds / DATEDIFF_SECONDS[str(unit)]
    return int(value) if value.is_integer() else value


# --- collections --------------------------------------------------------------------------------


def fn_count(values: object, value: object = _MISSING) -> int:
    if values is None:
        return 0
    items = _check_list(values)
    if isinstance(value, _Missing):
        return sum(1 for item in items if item is not None)
    return sum(1 for item in items if item == value)


def fn_coalesce(*values: object) -> Any:
    return next((v for v in values if v is not None), None)


def _spec(name: str, func: Callable[..., Any], signature: str, zh: str, en: str) -> FunctionSpec:
    return FunctionSpec(name=name, func=func, signature=signature, doc_zh=zh, doc_en=en)


FUNCTIONS: tuple[FunctionSpec, ...] = (
    _spec("today", fn_today, "today()", "医院时区的今天日期。",
          "Today's date in the hospital time zone."),
    _spec("now", fn_now, "now()", "医院时区的当前时间。",
          "The current date-time in the hospital time zone."),
    _spec("date", fn_date, "date(text)", "把 ISO 文本转换为日期；空值得空值。",
          "Convert ISO text (or a date-time) to a date; null gives null."),
    _spec("days_between", fn_days_between, "days_between(a, b)",
          "从 a 到 b 的天数（b − a，按医院时区的日历日）；任一为空得空值。",
          "Days from a to b (b − a, calendar days in hospital time); null if either is null."),
    _spec("hours_between", fn_hours_between, "hours_between(a, b)",
          "从 a 到 b 的小时数（可为小数）；日期按当天零点计。",
          "Hours from a to b (may be fractional); a plain date counts as local midnight."),
    _spec("add_days", fn_add_days, "add_days(d, n)", "日期 d 加 n 天（n 可为负数）。",
          "The date d plus n days (n may be negative)."),
    _spec("age", fn_age, "age(birth_date)", "截至今天的周岁。", "Age in whole years as of today."),
    _spec("year", fn_year, "year(d)", "日期的年份。", "The year of a date."),
    _spec("month", fn_month, "month(d)", "日期的月份（1–12）。", "The month of a date (1–12)."),
    _spec("day", fn_day, "day(d)", "日期的日（1–31）。", "The day of the month of a date (1–31)."),
    _spec("contains", fn_contains, "contains(text, word)",
          "文本是否包含该词（不区分大小写）；对列表则判断是否有该项；空值得 false。",
          "Whether text contains word (case-insensitive); for a list, whether it has that item; "
          "null gives false."),
    _spec("any_of", fn_any_of, "any_of(text, words)", "文本包含任一词时为 true。",
          "True if text contains any of the words."),
    _spec("all_of", fn_all_of, "all_of(text, words)", "文本包含全部词时为 true；空值得 false。",
          "True if text contains every one of the words; null gives false."),
    _spec("len", fn_len, "len(x)", "文本的字数或列表的项数；空值为 0。",
          "Number of characters of text or items of a list; null gives 0."),
    _spec("lower", fn_lower, "lower(s)", "转为小写。", "Text in lower case."),
    _spec("upper", fn_upper, "upper(s)", "转为大写。", "Text in upper case."),
    _spec("number", fn_number, "number(x)", "把文本转换为数字；空文本得空值。",
          "Convert text to a number; empty text gives null."),
    _spec("round", fn_round, "round(x, n=0)", "四舍五入到 n 位小数（0.5 进位）。",
          "Round half up to n decimal places (n=0 gives a whole number)."),
    _spec("min", fn_min, "min(a, b, ...) or min(list)", "最小值，忽略空值；没有值时为空值。",
          "The smallest value, ignoring nulls; null if there is none."),
    _spec("max", fn_max, "max(a, b, ...) or max(list)", "最大值，忽略空值；没有值时为空值。",
          "The largest value, ignoring nulls; null if there is none."),
    _spec("sum", fn_sum, "sum(list)", "列表之和，忽略空值。", "The sum of a list, ignoring nulls."),
    _spec("mean", fn_mean, "mean(list)", "平均值，忽略空值；没有值时为空值。",
          "The average of a list, ignoring nulls; null if there is none."),
    _spec("abs", fn_abs, "abs(x)", "绝对值。", "The absolute value."),
    _spec("roundup", fn_roundup, "roundup(x, n=0)", "向远离零的方向进位到 n 位小数。",
          "Round away from zero to n decimal places."),
    _spec("rounddown", fn_rounddown, "rounddown(x, n=0)", "向零的方向舍去到 n 位小数。",
          "Round towards zero to n decimal places."),
    _spec("sqrt", fn_sqrt, "sqrt(x)", "平方根；负数报错。",
          "The square root; a negative number is an error."),
    _spec("isnumber", fn_isnumber, "isnumber(x)", "x 是数字或可读作数字的文本时为 true。",
          "True if x is a number or text that reads as one."),
    _spec("datediff", fn_datediff, "datediff(a, b, unit, signed=false)",
          "从 a 到 b 的时长，单位 y（年，365.2425 天）、M（月，30.44 天）、d、h、m、s；"
          "signed 为 false 时取绝对值；任一为空得空值。",
          "The time from a to b in unit y (years of 365.2425 days), M (months of 30.44 days), "
          "d, h, m or s; unsigned (absolute) unless signed is true; null if either is null."),
    _spec("count", fn_count, "count(list, value?)",
          "非空项的个数；给出 value 时为等于 value 的项数。",
          "The number of non-null items; with value, the number of items equal to it."),
    _spec("coalesce", fn_coalesce, "coalesce(a, b, ...)", "第一个非空值。",
          "The first value that is not null."),
)


def register(registry: Registry) -> None:
    """Register every built-in :class:`FunctionSpec` into ``registry.catalogue("function")``."""
    catalogue = registry.catalogue(CATALOGUE)
    for spec in FUNCTIONS:
        catalogue.register(spec.name, spec)
