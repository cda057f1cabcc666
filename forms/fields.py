"""Built-in field types. Each is a :class:`FieldType` registered in ``catalogue("field_type")``.

A field type owns: the JSON Schema of its own options (keys an author may add to a field of that
type), how a submitted value is checked and normalised (its *stored shape*), which leaf values go
to ``submission_answers``, its numeric value for scores, and the template macro that renders it.

    >>> from careloop.forms.spec import FieldSpec
    >>> FIELD_TYPES["integer"].check(FieldSpec(key="age", type="integer"), "42")
    (42, [])
    >>> FIELD_TYPES["mobile"].check(FieldSpec(key="m", type="mobile"), "1380013800")[1]
    [((), 'forms.mobile', {})]
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from stdnum.cn import ric

from careloop.forms.spec import FieldSpec

# (sub-path within the value, i18n message key, message parameters)
Issue = tuple[tuple[str | int, ...], str, dict[str, Any]]
# (row key, number, text, code) — one row of submission_answers
Leaf = tuple[str | None, float | None, str | None, str | None]
Checker = Callable[[FieldSpec, Any], tuple[Any, list[Issue]]]

NUM = {"type": "number"}
TEXT = {"$ref": "#/$defs/text"}


@dataclass(frozen=True, slots=True)
class FieldType:
    """A registered field type."""

    name: str
    title: dict[str, str]
    check: Checker
    options: dict[str, Any] = field(default_factory=dict)  # JSON Schema "properties"
    answerable: bool = True
    uses_choices: bool = False
    uses_rows: bool = False
    widget: str = "text"
    valid_examples: tuple[Any, ...] = ()
    invalid_examples: tuple[Any, ...] = ()

    def leaves(self, spec: FieldSpec, value: Any) -> list[Leaf]:
        return _leaves(self, spec, value)

    def number(self, spec: FieldSpec, value: Any) -> float | None:
        """The value's contribution to a score (choice scores, or the number itself)."""
        return _number(self, spec, value)


def ok(value: Any) -> tuple[Any, list[Issue]]:
    return value, []


def bad(key: str, sub: tuple[str | int, ...] = (), **params: Any) -> tuple[Any, list[Issue]]:
    return None, [(sub, key, params)]


def _text(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if not isinstance(value, str):
        return bad("forms.not_text")
    value = value.strip()
    limit = int(spec.options.get("max_length", 200 if spec.type == "short_text" else 5000))
    if len(value) > limit:
        return bad("forms.too_long", max=limit)
    pattern = spec.options.get("pattern")
    if pattern and not re.fullmatch(str(pattern), value):
        return bad("forms.pattern")
    return ok(value)


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _range(spec: FieldSpec, number: float, lo: float | None, hi: float | None,
           sub: tuple[str | int, ...] = ()) -> list[Issue]:
    if lo is not None and number < lo:
        return [(sub, "forms.below_min", {"min": _fmt(lo)})]
    if hi is not None and number > hi:
        return [(sub, "forms.above_max", {"max": _fmt(hi)})]
    return []


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _opt(spec: FieldSpec, name: str, default: float | None = None) -> float | None:
    value = spec.options.get(name, default)
    return None if value is None else float(value)


def _integer(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    number = _to_number(value)
    if number is None or not number.is_integer():
        return bad("forms.not_integer")
    return int(number), _range(spec, number, _opt(spec, "min"), _opt(spec, "max"))


def _decimal(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    number = _to_number(value)
    if number is None or number != number or number in (float("inf"), float("-inf")):
        return bad("forms.not_number")
    issues = _range(spec, number, _opt(spec, "min"), _opt(spec, "max"))
    step = _opt(spec, "step")
    if step and not issues:
        base = _opt(spec, "min", 0.0) or 0.0
        ratio = (number - base) / step
        if abs(ratio - round(ratio)) > 1e-9:
            issues.append(((), "forms.step", {"step": _fmt(step)}))
    return number, issues


def _scale(default_lo: float, default_hi: float) -> Checker:
    def check(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
        number = _to_number(value)
        lo, hi = _opt(spec, "min", default_lo), _opt(spec, "max", default_hi)
        if number is None or not number.is_integer():
            return bad("forms.not_integer")
        return int(number), _range(spec, number, lo, hi)
    return check


def _slider(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    number, issues = _decimal(FieldSpec(key=spec.key, type=spec.type, options={
        "min": spec.options.get("min", 0), "max": spec.options.get("max", 10),
        "step": spec.options.get("step", 1)}), value)
    if number is not None and float(number).is_integer():
        number = int(number)
    return number, issues


EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MOBILE = re.compile(r"^1[3-9]\d{9}$")


def _email(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if not isinstance(value, str) or not EMAIL.match(value.strip()) or len(value) > 254:
        return bad("forms.email")
    return ok(value.strip().lower())


def _mobile(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    text = re.sub(r"[\s-]", "", value) if isinstance(value, str) else ""
    text = text.removeprefix("+86")
    return ok(text) if MOBILE.match(text) else bad("forms.mobile")


def _resident_id(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    text = value.strip().upper() if isinstance(value, str) else ""
    return ok(text) if len(text) == 18 and ric.is_valid(text) else bad("forms.resident_id")


def _parser(parse: Callable[[str], Any], key: str) -> Checker:
    def check(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
        if not isinstance(value, str):
            return bad(key)
        try:
            parsed = parse(value.strip())
        except ValueError:
            return bad(key)
        return ok(parsed.isoformat() if not isinstance(parsed, str) else parsed)
    return check


def _parse_datetime(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed


def _parse_time(text: str) -> str:
    return time.fromisoformat(text).strftime("%H:%M")


def _visible_codes(spec: FieldSpec) -> list[str]:
    return [c.code for c in spec.choices]


def _single(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if isinstance(value, dict):  # {"code": "other", "other": "…"} for an "other" choice
        return _single_other(spec, value)
    if isinstance(value, bool) or spec.choice(value) is None:
        return bad("forms.choice")
    return ok(value)


def _single_other(spec: FieldSpec, value: dict[str, Any]) -> tuple[Any, list[Issue]]:
    choice = spec.choice(value.get("code"))
    if choice is None:
        return bad("forms.choice")
    if not choice.other:
        return ok(choice.code)
    other = value.get("other")
    if not isinstance(other, str) or not other.strip():
        return bad("forms.other_text", ("other",))
    return ok({"code": choice.code, "other": other.strip()[:500]})


def _multiple(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return bad("forms.choices_list")
    codes: list[str] = []
    other_text: str | None = None
    for index, item in enumerate(value):
        if isinstance(item, dict):
            item_value, issues = _single_other(spec, item)
            if issues:
                return None, [((index, *sub), key, p) for sub, key, p in issues]
            if isinstance(item_value, dict):
                other_text = item_value["other"]
                item = item_value["code"]
            else:
                item = item_value
        if isinstance(item, bool) or spec.choice(item) is None:
            return bad("forms.choice", (index,))
        if item not in codes:
            codes.append(item)
    exclusive = [c for c in codes if spec.choice(c) and spec.choice(c).exclusive]  # type: ignore[union-attr]
    if exclusive and len(codes) > 1:
        return bad("forms.exclusive", label=exclusive[0])
    lo, hi = spec.options.get("min_selected"), spec.options.get("max_selected")
    if lo is not None and len(codes) < int(lo):
        return bad("forms.min_selected", min=lo)
    if hi is not None and len(codes) > int(hi):
        return bad("forms.max_selected", max=hi)
    ordered = [c for c in _visible_codes(spec) if c in codes]
    if other_text is not None:
        return ok({"codes": ordered, "other": other_text})
    return ok(ordered)


def _yes_no(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if value is True or value in ("yes", "true", "1", 1):
        return ok("yes")
    if value is False or value in ("no", "false", "0", 0):
        return ok("no")
    return bad("forms.choice")


def _matrix(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if not isinstance(value, dict):
        return bad("forms.not_object")
    rows = {r.code for r in spec.rows}
    out: dict[str, Any] = {}
    issues: list[Issue] = []
    for row, code in value.items():
        if isinstance(code, int) and not isinstance(code, bool):
            code = str(code)
        if row not in rows:
            issues.append(((row,), "forms.unknown_row", {}))
        elif code in (None, ""):
            continue
        elif isinstance(code, bool) or spec.choice(code) is None:
            issues.append(((row,), "forms.choice", {}))
        else:
            out[row] = code
    if spec.options.get("all_rows_required") and not issues:
        for row_spec in spec.rows:
            if row_spec.code not in out:
                issues.append(((row_spec.code,), "forms.required", {}))
    return (None if issues else {r.code: out[r.code] for r in spec.rows if r.code in out}), issues


def _ranking(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    codes = [c.code for c in spec.choices]
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        return bad("forms.ranking")
    if len(set(value)) != len(value) or not set(value) <= set(codes):
        return bad("forms.ranking")
    if spec.options.get("rank_all", True) and set(value) != set(codes):
        return bad("forms.ranking")
    return ok(list(value))


def _file(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    # Files are stored outside the row (var/uploads/<sha256>); the answer holds the reference.
    if not isinstance(value, dict) or not isinstance(value.get("sha256"), str):
        return bad("forms.file")
    allowed = spec.options.get("accept", ["image/jpeg", "image/png", "application/pdf"])
    if value.get("content_type") not in allowed:
        return bad("forms.file_type", types=", ".join(allowed))
    limit = int(spec.options.get("max_size_kb", 5120)) * 1024
    size = value.get("size")
    if not isinstance(size, int) or size <= 0 or size > limit:
        return bad("forms.file_size", max_kb=limit // 1024)
    if not re.fullmatch(r"[0-9a-f]{64}", value["sha256"]):
        return bad("forms.file")
    name = str(value.get("name", ""))[:200]
    return ok({"sha256": value["sha256"], "content_type": value["content_type"],
               "size": size, "name": name})


PNG_PREFIX = "data:image/png;base64,"


def _signature(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if not isinstance(value, str) or not value.startswith(PNG_PREFIX) or len(value) > 300_000:
        return bad("forms.signature")
    try:
        raw = base64.b64decode(value[len(PNG_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return bad("forms.signature")
    return ok(value) if raw.startswith(b"\x89PNG\r\n\x1a\n") else bad("forms.signature")


def _consent(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if value in (True, "yes", "true", "on", "1"):
        return ok(True)
    return bad("forms.consent")


def _hidden(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return ok(value if not isinstance(value, str) else value[:500])
    return bad("forms.not_text")


def _display(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    return ok(None)


def _blood_pressure(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    if not isinstance(value, dict):
        return bad("forms.bp_pair")
    issues: list[Issue] = []
    out: dict[str, int] = {}
    for part, lo, hi in (("systolic", 50, 300), ("diastolic", 30, 200)):
        number = _to_number(value.get(part))
        if number is None or not number.is_integer():
            issues.append(((part,), "forms.not_integer", {}))
            continue
        found = _range(spec, number, lo, hi, (part,))
        issues.extend(found)
        out[part] = int(number)
    if not issues and out["systolic"] <= out["diastolic"]:
        issues.append(((), "forms.bp_order", {}))
    return (None if issues else out), issues


# Units the measurement type converts between: unit -> (quantity, factor to the canonical unit).
UNITS: dict[str, tuple[str, float]] = {
    "mmol/L": ("glucose", 1.0), "mg/dL": ("glucose", 1 / 18.0),
    "kg": ("mass", 1.0), "g": ("mass", 0.001), "lb": ("mass", 0.45359237),
    "cm": ("length", 1.0), "m": ("length", 100.0), "in": ("length", 2.54),
    "°C": ("temperature", 1.0),
}


def convert(value: float, unit: str, to: str) -> float:
    """Convert between units of one quantity (glucose: 1 mmol/L = 18 mg/dL).

    >>> round(convert(126, "mg/dL", "mmol/L"), 2)
    7.0
    """
    return value * UNITS[unit][1] / UNITS[to][1]


def _measurement(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    canonical = str(spec.options.get("unit", "mmol/L"))
    allowed = list(spec.options.get("units", [canonical]))
    if not isinstance(value, dict):
        return bad("forms.not_object")
    unit = value.get("unit", canonical)
    if unit not in allowed or unit not in UNITS:
        return bad("forms.unit", ("unit",), units=", ".join(allowed))
    number = _to_number(value.get("value"))
    if number is None:
        return bad("forms.not_number", ("value",))
    converted = convert(number, unit, canonical)
    issues = _range(spec, converted, _opt(spec, "min"), _opt(spec, "max"), ("value",))
    return {"value": number, "unit": unit, "canonical": round(converted, 4)}, issues


def _repeat(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    # Sub-fields are checked by the logic module (it knows visibility); here only the shape.
    if not isinstance(value, list) or any(not isinstance(item, dict) for item in value):
        return bad("forms.repeat_shape")
    return ok(value)


def _leaves(ftype: FieldType, spec: FieldSpec, value: Any) -> list[Leaf]:
    if value is None or not ftype.answerable or ftype.name == "repeat_group":
        return []
    if ftype.uses_rows and isinstance(value, dict):
        return [(row, _score_of(spec, code), None, code) for row, code in value.items()]
    if ftype.name in ("multiple_choice", "ranking"):
        codes = value["codes"] if isinstance(value, dict) else value
        return [(str(i) if ftype.name == "ranking" else None, _score_of(spec, c), None, c)
                for i, c in enumerate(codes, 1)]
    if ftype.name == "blood_pressure":
        return [(part, float(value[part]), None, None) for part in ("systolic", "diastolic")]
    if ftype.name == "measurement":
        return [(value["unit"], float(value["canonical"]), None, None)]
    if ftype.uses_choices or ftype.name == "yes_no":
        code = value["code"] if isinstance(value, dict) else value
        text = value.get("other") if isinstance(value, dict) else None
        number = _score_of(spec, code) if ftype.uses_choices else (1.0 if code == "yes" else 0.0)
        return [(None, number, text, code)]
    if isinstance(value, bool):
        return [(None, 1.0 if value else 0.0, None, None)]
    if isinstance(value, int | float):
        return [(None, float(value), None, None)]
    if isinstance(value, dict):
        return [(None, None, value.get("sha256") or str(value), None)]
    return [(None, None, str(value), None)]


def _score_of(spec: FieldSpec, code: Any) -> float | None:
    choice = spec.choice(code)
    return choice.score if choice is not None else None


def _number(ftype: FieldType, spec: FieldSpec, value: Any) -> float | None:
    if value is None:
        return None
    if ftype.uses_rows and isinstance(value, dict):
        scores = [_score_of(spec, c) for c in value.values()]
        return sum(s for s in scores if s is not None) if scores else None
    if ftype.name == "multiple_choice":
        codes = value["codes"] if isinstance(value, dict) else value
        return sum(s for s in (_score_of(spec, c) for c in codes) if s is not None)
    if ftype.uses_choices:
        return _score_of(spec, value["code"] if isinstance(value, dict) else value)
    if ftype.name == "yes_no":
        return 1.0 if value == "yes" else 0.0
    if ftype.name == "measurement":
        return float(value["canonical"])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _t(zh: str, en: str) -> dict[str, str]:
    return {"zh-CN": zh, "en": en}


RANGE = {"min": NUM, "max": NUM}
TEXT_OPTS = {"max_length": {"type": "integer", "minimum": 1, "maximum": 20000},
             "pattern": {"type": "string"}, "placeholder": TEXT}
CHOICE_OPTS = {"display": {"enum": ["radio", "dropdown", "buttons"]}}

BUILTIN_FIELD_TYPES: tuple[FieldType, ...] = (
    FieldType("short_text", _t("单行文本", "Short text"), _text, TEXT_OPTS, widget="text",
              valid_examples=("张三",), invalid_examples=(12, "x" * 201)),
    FieldType("long_text", _t("多行文本", "Long text"), _text, TEXT_OPTS, widget="textarea",
              valid_examples=("出院后用药说明不清楚",), invalid_examples=(["a"],)),
    FieldType("integer", _t("整数", "Integer"), _integer, dict(RANGE, unit=TEXT), widget="number",
              valid_examples=(42, "7"), invalid_examples=("4.5", "abc")),
    FieldType("decimal", _t("小数", "Decimal"), _decimal,
              dict(RANGE, step={"type": "number", "exclusiveMinimum": 0}, unit=TEXT),
              widget="number", valid_examples=(36.5,), invalid_examples=("x", True)),
    FieldType("email", _t("电子邮箱", "E-mail"), _email, widget="email",
              valid_examples=("a@example.cn",), invalid_examples=("not-an-email",)),
    FieldType("mobile", _t("手机号码", "Mobile phone (mainland China)"), _mobile, widget="tel",
              valid_examples=("13800138000", "+86 138-0013-8000"),
              invalid_examples=("12800138000", "1380013800")),
    FieldType("resident_id", _t("居民身份证号", "Resident ID number"), _resident_id,
              widget="text", valid_examples=("11010519491231002X",),
              invalid_examples=("110105194912310021",)),
    FieldType("date", _t("日期", "Date"), _parser(date.fromisoformat, "forms.date"),
              {"min": {"type": "string"}, "max": {"type": "string"}}, widget="date",
              valid_examples=("2026-03-01",), invalid_examples=("2026-02-30",)),
    FieldType("time", _t("时间", "Time"), _parser(_parse_time, "forms.time"), widget="time",
              valid_examples=("08:30",), invalid_examples=("25:00",)),
    FieldType("datetime", _t("日期时间", "Date and time"),
              _parser(_parse_datetime, "forms.datetime"), widget="datetime-local",
              valid_examples=("2026-03-01T08:30",), invalid_examples=("yesterday",)),
    FieldType("single_choice", _t("单选", "Single choice"), _single, CHOICE_OPTS,
              uses_choices=True, widget="radio", valid_examples=("a",),
              invalid_examples=("zzz",)),
    FieldType("multiple_choice", _t("多选", "Multiple choice"), _multiple,
              {"min_selected": {"type": "integer", "minimum": 0},
               "max_selected": {"type": "integer", "minimum": 1}},
              uses_choices=True, widget="checkbox", valid_examples=(["a", "b"],),
              invalid_examples=(["a", "none"], "zzz")),
    FieldType("yes_no", _t("是/否", "Yes / no"), _yes_no, widget="yes_no",
              valid_examples=("yes", False), invalid_examples=("maybe",)),
    FieldType("rating", _t("星级评分", "Rating (stars)"), _scale(1, 5),
              {"max": {"type": "integer", "minimum": 2, "maximum": 10}, "min_label": TEXT,
               "max_label": TEXT}, widget="rating",
              valid_examples=(5,), invalid_examples=(0, 6)),
    FieldType("nps", _t("净推荐值", "Net Promoter Score (0–10)"), _scale(0, 10),
              {"min_label": TEXT, "max_label": TEXT}, widget="nps",
              valid_examples=(0, 10), invalid_examples=(11, "x")),
    FieldType("slider", _t("滑块/视觉模拟评分", "Slider / visual analogue scale"), _slider,
              dict(RANGE, step={"type": "number", "exclusiveMinimum": 0}, min_label=TEXT,
                   max_label=TEXT), widget="slider",
              valid_examples=(7,), invalid_examples=(11, -1)),
    FieldType("likert_matrix", _t("量表矩阵", "Likert matrix"), _matrix,
              {"all_rows_required": {"type": "boolean"}}, uses_choices=True, uses_rows=True,
              widget="matrix", valid_examples=({"r1": "5"},),
              invalid_examples=({"nope": "5"}, {"r1": "9"})),
    FieldType("ranking", _t("排序", "Ranking"), _ranking, {"rank_all": {"type": "boolean"}},
              uses_choices=True, widget="ranking", valid_examples=(["b", "a"],),
              invalid_examples=(["a", "a"],)),
    FieldType("file", _t("文件/图片上传", "File / image upload"), _file,
              {"accept": {"type": "array", "items": {"type": "string"}},
               "max_size_kb": {"type": "integer", "minimum": 1, "maximum": 51200}},
              widget="file",
              valid_examples=({"sha256": "a" * 64, "content_type": "image/png", "size": 10},),
              invalid_examples=({"sha256": "a" * 64, "content_type": "text/html", "size": 10},)),
    FieldType("signature", _t("签名", "Signature"), _signature, widget="signature",
              valid_examples=(PNG_PREFIX + base64.b64encode(b"\x89PNG\r\n\x1a\n0").decode(),),
              invalid_examples=("data:text/plain;base64,AAAA",)),
    FieldType("display", _t("说明文字", "Display text (markdown)"), _display,
              {"markdown": TEXT}, answerable=False, widget="display"),
    FieldType("section", _t("分节标题", "Section heading"), _display, answerable=False,
              widget="section"),
    FieldType("page_break", _t("分页", "Page break"), _display, answerable=False,
              widget="page_break"),
    FieldType("repeat_group", _t("重复组", "Repeat group"), _repeat,
              {"min_items": {"type": "integer", "minimum": 0},
               "max_items": {"type": "integer", "minimum": 1, "maximum": 50}},
              widget="repeat", valid_examples=([{"name": "阿司匹林"}],),
              invalid_examples=("x",)),
    FieldType("calculated", _t("计算字段", "Calculated field"), _hidden, widget="calculated"),
    FieldType("hidden", _t("隐藏/预填字段", "Hidden / prefilled field"), _hidden,
              widget="hidden", valid_examples=("ward_3",), invalid_examples=({"a": 1},)),
    FieldType("consent", _t("知情同意", "Consent"), _consent, {"statement": TEXT},
              widget="consent", valid_examples=(True,), invalid_examples=(False,)),
    FieldType("blood_pressure", _t("血压", "Blood pressure"), _blood_pressure, widget="bp",
              valid_examples=({"systolic": 128, "diastolic": 82},),
              invalid_examples=({"systolic": 80, "diastolic": 90}, {"systolic": 400,
                                                                   "diastolic": 80})),
    FieldType("measurement", _t("测量值（单位换算）", "Measurement with unit conversion"),
              _measurement,
              dict(RANGE, unit={"enum": sorted(UNITS)},
                   units={"type": "array", "items": {"enum": sorted(UNITS)}}),
              widget="measurement", valid_examples=({"value": 126, "unit": "mg/dL"},),
              invalid_examples=({"value": 7, "unit": "furlong"},)),
)

FIELD_TYPES: dict[str, FieldType] = {ft.name: ft for ft in BUILTIN_FIELD_TYPES}
