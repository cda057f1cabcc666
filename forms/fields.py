"""Built-in field types. Each is a :class:`FieldType` registered in ``catalogue("field_type")``.

A field type owns everything about its type, and no other module switches on its name:

* ``options`` — the JSON Schema properties of its own options (checked per type at compile time);
* ``check`` — how a submitted value is checked and normalised (its *stored shape*);
* ``reader`` — how its value is read back from a posted patient page (:meth:`FieldType.read`);
* ``storer`` — the leaf values that go to ``submission_answers`` (:meth:`FieldType.leaves`);
* ``scorer`` — its numeric value for scores (:meth:`FieldType.number`);
* ``shower`` — how staff pages show a stored value in zh-CN or en (:meth:`FieldType.display`);
* ``fhir`` — its FHIR item type and answer shape (:class:`FhirMap`; ``None``: export refuses);
* ``template`` — the Jinja template of its patient-page widget (a name under
  ``forms/templates/``, or the path of a file next to a plugin's module), framed by ``frame``;
* ``css`` — a stylesheet of its own, served at ``/forms/static/types/<name>.css``;
* ``mask`` — for an answer that identifies a person, how staff pages mask it;
* ``group``, ``always_shown``, ``breaks_page``, ``computed`` — it holds sub-fields; it is drawn
  whatever the answers; it starts a page; its value is its ``calculate`` expression;
* ``title`` and the options' ``x-label`` — what the form builder's palette and panel show.

A plugin adds a type with one module whose ``register(registry)`` adds a ``FieldType`` to
``catalogue("field_type")`` (the recipe "Adding a field type" in docs/architecture.md).

    >>> from careloop.forms.spec import FieldSpec
    >>> FIELD_TYPES["integer"].check(FieldSpec(key="age", type="integer"), "42")
    (42, [])
    >>> FIELD_TYPES["mobile"].check(FieldSpec(key="m", type="mobile"), "1380013800")[1]
    [((), 'forms.mobile', {})]
    >>> FIELD_TYPES["yes_no"].display(FieldSpec(key="y", type="yes_no"), "yes", "en")
    'Yes'
"""


from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from typing import Any

from stdnum.cn import ric

from careloop.engine.i18n import pick, t
from careloop.engine.privacy import mask_id_number, mask_phone
from careloop.forms.field_type import (  # re-exported: plugins import the contract from here
    FRAMES,
    LOINC,
    NO_ITEM,
    NUM,
    ORDINAL,
    TEXT,
    Checker,
    FhirAnswers,
    FhirMap,
    FieldType,
    Issue,
    Leaf,
    LeavesOf,
    NumberOf,
    Reader,
    Shower,
    _many,
    _one,
    bad,
    fhir_boolean,
    fhir_codings,
    fhir_option,
    fhir_quantity,
    fhir_scalar,
    label_of,
    no_leaves,
    ok,
    read_nothing,
    read_one,
    scalar_leaves,
    scalar_number,
    show_datetime,
    show_value,
)
from careloop.forms.spec import FieldSpec

__all__ = ["BUILTIN_FIELD_TYPES", "FIELD_TYPES", "FRAMES", "LOINC", "NO_ITEM", "NUM", "ORDINAL",
           "PNG_PREFIX", "TEXT", "UNITS", "Checker", "FhirAnswers", "FhirMap", "FieldType",
           "Issue", "Leaf", "LeavesOf", "NumberOf", "Reader", "Shower", "bad", "convert",
           "fhir_boolean", "fhir_codings", "fhir_option", "fhir_quantity", "fhir_scalar",
           "label_of", "no_leaves", "ok", "read_nothing", "read_one", "scalar_leaves",
           "scalar_number", "show_datetime", "show_value"]


def _text_of(default_limit: int) -> Checker:
    def check(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
        return _text(spec, value, default_limit)
    return check


def _text(spec: FieldSpec, value: Any, default_limit: int) -> tuple[Any, list[Issue]]:
    if not isinstance(value, str):
        return bad("forms.not_text")
    value = value.strip()
    limit = int(spec.options.get("max_length", default_limit))
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


def _as_code(value: Any) -> Any:
    """A choice code written as a number (``2`` for ``"2"``) is the code's text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _single(spec: FieldSpec, value: Any) -> tuple[Any, list[Issue]]:
    value = _as_code(value)
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
    value = _as_code(value)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return bad("forms.choices_list")
    value = [_as_code(item) for item in value]
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
    value = _as_code(value)
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
    # UCUM codes as FHIR Questionnaires name them (questionnaire-unit / unitOption)
    "mm[Hg]": ("pressure", 1.0), "kPa": ("pressure", 7.500615758),
    "[lb_av]": ("mass", 0.45359237), "[in_i]": ("length", 2.54), "Cel": ("temperature", 1.0),
    "/min": ("rate", 1.0), "{beats}/min": ("rate", 1.0), "{breaths}/min": ("rate", 1.0),
    "{counts}/min": ("rate", 1.0), "mm": ("length", 0.1), "%": ("fraction", 1.0),
    "kg/m2": ("body mass index", 1.0),
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


def _score_of(spec: FieldSpec, code: Any) -> float | None:
    choice = spec.choice(code)
    return choice.score if choice is not None else None


def _code_of(value: Any) -> Any:
    return value["code"] if isinstance(value, dict) else value


# -- per-type behaviour: choices --------------------------------------------------------------

def _read_single(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    code = _one(form, name)
    choice = spec.choice(code)
    if choice is not None and choice.other:
        return {"code": code, "other": _one(form, name + "__other") or ""}
    return code or None


def _read_multiple(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    codes = [c for c in _many(form, name) if c]
    other = _one(form, name + "__other")

    def is_other(code: Any) -> bool:
        choice = spec.choice(code)
        return choice is not None and choice.other

    if other and any(is_other(c) for c in codes):
        return [{"code": c, "other": other} if is_other(c) else c for c in codes]
    return codes or None


def _choice_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    text = value.get("other") if isinstance(value, dict) else None
    code = _code_of(value)
    return [(None, _score_of(spec, code), text, code)]


def _choice_number(spec: FieldSpec, value: Any) -> float | None:
    return _score_of(spec, _code_of(value))


def _codes_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    codes = value["codes"] if isinstance(value, dict) else value
    return [(None, _score_of(spec, c), None, c) for c in codes]


def _codes_number(spec: FieldSpec, value: Any) -> float | None:
    codes = value["codes"] if isinstance(value, dict) else value
    return sum(s for s in (_score_of(spec, c) for c in codes) if s is not None)


def _read_ranking(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    ranks = {c.code: _one(form, f"{name}.{c.code}") for c in spec.choices}
    given = {k: v for k, v in ranks.items() if v}
    if not given:
        return None
    try:
        return [k for k, _ in sorted(given.items(), key=lambda kv: int(kv[1]))]
    except ValueError:
        return list(given)


def _ranking_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    return [(str(i), _score_of(spec, c), None, c) for i, c in enumerate(value, 1)]


def _read_matrix(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    rows = {row.code: _one(form, f"{name}.{row.code}") for row in spec.rows}
    return {k: v for k, v in rows.items() if v} or None


def _matrix_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    if not isinstance(value, dict):
        return _choice_leaves(spec, value)
    return [(row, _score_of(spec, code), None, code) for row, code in value.items()]


def _matrix_number(spec: FieldSpec, value: Any) -> float | None:
    if not isinstance(value, dict):
        return _choice_number(spec, value)
    scores = [_score_of(spec, c) for c in value.values()]
    return sum(s for s in scores if s is not None) if scores else None


def _show_matrix(spec: FieldSpec, value: Any, locale: str) -> str:
    if not isinstance(value, dict):
        return show_value(spec, value, locale)
    rows = {r.code: pick(dict(r.label), locale) for r in spec.rows}
    return "; ".join(f"{rows.get(k, k)}: {label_of(spec, v, locale)}" for k, v in value.items())


def _matrix_fhir_item(spec: FieldSpec, locale: str) -> dict[str, Any]:
    return {"item": [{"linkId": f"{spec.key}.{row.code}", "type": "choice",
                      "text": pick(dict(row.label), locale),
                      "answerOption": [fhir_option(c, locale) for c in spec.choices]}
                     for row in spec.rows]}


def _matrix_fhir_response(spec: FieldSpec, value: Any) -> dict[str, Any]:
    return {"item": [{"linkId": f"{spec.key}.{row}", "answer": [{"valueCoding": {"code": code}}]}
                     for row, code in value.items()]}


def _yes_no_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    code = _code_of(value)
    return [(None, 1.0 if code == "yes" else 0.0, None, code)]


def _yes_no_number(spec: FieldSpec, value: Any) -> float | None:
    return 1.0 if value == "yes" else 0.0


def _show_yes_no(spec: FieldSpec, value: Any, locale: str) -> str:
    return t("common.yes" if value == "yes" else "common.no", locale)


def _repeat_fhir_item(spec: FieldSpec, locale: str) -> dict[str, Any]:
    from careloop.forms.fhir import fhir_item

    return {"item": [i for i in (fhir_item(f, locale) for f in spec.fields) if i]}


def _repeat_fhir_response(spec: FieldSpec, value: Any) -> dict[str, Any]:
    from careloop.forms.fhir import response_item

    return {"item": [response_item(sub, row[sub.key])
                     for row in value for sub in spec.fields if sub.key in row]}


# -- per-type behaviour: structured values -----------------------------------------------------

def _read_bp(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    parts = {p: _one(form, f"{name}.{p}") for p in ("systolic", "diastolic")}
    return parts if any(parts.values()) else None


def _bp_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    return [(part, float(value[part]), None, None) for part in ("systolic", "diastolic")]


def _bp_fhir_item(spec: FieldSpec, locale: str) -> dict[str, Any]:
    return {"item": [{"linkId": f"{spec.key}.systolic", "type": "integer", "text": "systolic",
                      "code": [{"system": LOINC, "code": "8480-6"}]},
                     {"linkId": f"{spec.key}.diastolic", "type": "integer",
                      "text": "diastolic", "code": [{"system": LOINC, "code": "8462-4"}]}]}


def _bp_fhir_response(spec: FieldSpec, value: Any) -> dict[str, Any]:
    return {"item": [{"linkId": f"{spec.key}.{part}", "answer": [{"valueInteger": value[part]}]}
                     for part in ("systolic", "diastolic")]}


def _read_measurement(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    value = _one(form, f"{name}.value")
    return {"value": value, "unit": _one(form, f"{name}.unit")} if value else None


def _measurement_leaves(spec: FieldSpec, value: Any) -> list[Leaf]:
    return [(value["unit"], float(value["canonical"]), None, None)]


def _measurement_number(spec: FieldSpec, value: Any) -> float | None:
    return float(value["canonical"])


def _read_consent(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    return True if _one(form, name) else None


def _read_repeat(spec: FieldSpec, form: Mapping[str, Any], name: str) -> Any:
    from careloop.engine.registry import loaded_registry

    types = loaded_registry().catalogue("field_type")
    indices = sorted({int(m.group(1)) for k in form
                      if (m := re.match(rf"^{re.escape(name)}\[(\d+)\]\.", k))})
    rows = []
    for index in indices:
        row = {sub.key: types[sub.type].read(sub, form, f"{name}[{index}].")
               for sub in spec.fields}
        row = {k: v for k, v in row.items() if v is not None}
        if row:
            rows.append(row)
    return rows or None


def _t(zh: str, en: str) -> dict[str, str]:
    return {"zh-CN": zh, "en": en}


RANGE = {"min": NUM, "max": NUM}
TEXT_OPTS = {"max_length": {"type": "integer", "minimum": 1, "maximum": 20000},
             "pattern": {"type": "string"}, "placeholder": TEXT}
CHOICE_OPTS = {"display": {"enum": ["radio", "dropdown", "buttons"]}}

CHOICE = FhirMap("choice", fhir_codings)
STRING = FhirMap("string")
NUMERIC = {"inputmode": "numeric", "step": "any"}

BUILTIN_FIELD_TYPES: tuple[FieldType, ...] = (
    FieldType("short_text", _t("单行文本", "Short text"), _text_of(200), TEXT_OPTS, widget="text",
              valid_examples=("张三",), invalid_examples=(12, "x" * 201), fhir=STRING,
              repeatable=True),
    FieldType("long_text", _t("多行文本", "Long text"), _text_of(5000), TEXT_OPTS,
              widget="textarea",
              valid_examples=("出院后用药说明不清楚",), invalid_examples=(["a"],),
              fhir=FhirMap("text"), template="fields/textarea.html",
              repeatable=True),
    FieldType("integer", _t("整数", "Integer"), _integer, dict(RANGE, unit=TEXT), widget="number",
              valid_examples=(42, "7"), invalid_examples=("4.5", "abc"),
              fhir=FhirMap("integer"), attrs=NUMERIC,
              repeatable=True),
    FieldType("decimal", _t("小数", "Decimal"), _decimal,
              dict(RANGE, step={"type": "number", "exclusiveMinimum": 0}, unit=TEXT),
              widget="number", valid_examples=(36.5,), invalid_examples=("x", True),
              fhir=FhirMap("decimal"), attrs={"inputmode": "decimal", "step": "any"},
              repeatable=True),
    FieldType("email", _t("电子邮箱", "E-mail"), _email, widget="email",
              valid_examples=("a@example.cn",), invalid_examples=("not-an-email",), fhir=STRING,
              repeatable=True),
    FieldType("mobile", _t("手机号码", "Mobile phone (mainland China)"), _mobile, widget="tel",
              valid_examples=("13800138000", "+86 138-0013-8000"),
              invalid_examples=("12800138000", "1380013800"), fhir=STRING,
              attrs={"autocomplete": "tel"}, mask=mask_phone),
    FieldType("resident_id", _t("居民身份证号", "Resident ID number"), _resident_id,
              widget="text", valid_examples=("11010519491231002X",),
              invalid_examples=("110105194912310021",), fhir=STRING, mask=mask_id_number),
    FieldType("date", _t("日期", "Date"), _parser(date.fromisoformat, "forms.date"),
              {"min": {"type": "string"}, "max": {"type": "string"}}, widget="date",
              valid_examples=("2026-03-01",), invalid_examples=("2026-02-30",),
              fhir=FhirMap("date"),
              repeatable=True),
    FieldType("time", _t("时间", "Time"), _parser(_parse_time, "forms.time"), widget="time",
              valid_examples=("08:30",), invalid_examples=("25:00",), fhir=FhirMap("time"),
              repeatable=True),
    FieldType("datetime", _t("日期时间", "Date and time"),
              _parser(_parse_datetime, "forms.datetime"), widget="datetime-local",
              valid_examples=("2026-03-01T08:30",), invalid_examples=("yesterday",),
              fhir=FhirMap("dateTime"), shower=show_datetime,
              repeatable=True),
    FieldType("single_choice", _t("单选", "Single choice"), _single, CHOICE_OPTS,
              uses_choices=True, widget="radio", valid_examples=("a",),
              invalid_examples=("zzz",), reader=_read_single, storer=_choice_leaves,
              scorer=_choice_number, fhir=CHOICE, template="fields/choice.html",
              frame="fieldset"),
    FieldType("multiple_choice", _t("多选", "Multiple choice"), _multiple,
              {"min_selected": {"type": "integer", "minimum": 0},
               "max_selected": {"type": "integer", "minimum": 1}},
              uses_choices=True, widget="checkbox", valid_examples=(["a", "b"],),
              invalid_examples=(["a", "none"], "zzz"), reader=_read_multiple,
              storer=_codes_leaves, scorer=_codes_number,
              fhir=FhirMap("choice", fhir_codings, repeats=True),
              template="fields/choice.html", frame="fieldset"),
    FieldType("yes_no", _t("是/否", "Yes / no"), _yes_no, widget="yes_no",
              valid_examples=("yes", False), invalid_examples=("maybe",),
              storer=_yes_no_leaves, scorer=_yes_no_number, shower=_show_yes_no,
              fhir=FhirMap("boolean", fhir_boolean), template="fields/yes_no.html",
              frame="fieldset"),
    FieldType("rating", _t("星级评分", "Rating (stars)"), _scale(1, 5),
              {"max": {"type": "integer", "minimum": 2, "maximum": 10}, "min_label": TEXT,
               "max_label": TEXT}, widget="rating",
              valid_examples=(5,), invalid_examples=(0, 6), fhir=FhirMap("integer"),
              template="fields/scale.html", frame="fieldset"),
    FieldType("nps", _t("净推荐值", "Net Promoter Score (0–10)"), _scale(0, 10),
              {"min_label": TEXT, "max_label": TEXT}, widget="nps",
              valid_examples=(0, 10), invalid_examples=(11, "x"), fhir=FhirMap("integer"),
              template="fields/scale.html", frame="fieldset"),
    FieldType("slider", _t("滑块/视觉模拟评分", "Slider / visual analogue scale"), _slider,
              dict(RANGE, step={"type": "number", "exclusiveMinimum": 0}, min_label=TEXT,
                   max_label=TEXT), widget="slider",
              valid_examples=(7,), invalid_examples=(11, -1), fhir=FhirMap("decimal"),
              template="fields/slider.html"),
    FieldType("likert_matrix", _t("量表矩阵", "Likert matrix"), _matrix,
              {"all_rows_required": {"type": "boolean"}}, uses_choices=True, uses_rows=True,
              widget="matrix", valid_examples=({"r1": "5"},),
              invalid_examples=({"nope": "5"}, {"r1": "9"}), reader=_read_matrix,
              storer=_matrix_leaves, scorer=_matrix_number, shower=_show_matrix,
              fhir=FhirMap("group", item=_matrix_fhir_item, response=_matrix_fhir_response),
              template="fields/matrix.html", frame="fieldset"),
    FieldType("ranking", _t("排序", "Ranking"), _ranking, {"rank_all": {"type": "boolean"}},
              uses_choices=True, widget="ranking", valid_examples=(["b", "a"],),
              invalid_examples=(["a", "a"],), reader=_read_ranking, storer=_ranking_leaves,
              scorer=_choice_number, fhir=CHOICE, template="fields/ranking.html",
              frame="fieldset"),
    FieldType("file", _t("文件/图片上传", "File / image upload"), _file,
              {"accept": {"type": "array", "items": {"type": "string"}},
               "max_size_kb": {"type": "integer", "minimum": 1, "maximum": 51200}},
              widget="file",
              valid_examples=({"sha256": "a" * 64, "content_type": "image/png", "size": 10},),
              invalid_examples=({"sha256": "a" * 64, "content_type": "text/html", "size": 10},),
              reader=None, fhir=FhirMap("attachment"), template="fields/file.html"),
    FieldType("signature", _t("签名", "Signature"), _signature, widget="signature",
              valid_examples=(PNG_PREFIX + base64.b64encode(b"\x89PNG\r\n\x1a\n0").decode(),),
              invalid_examples=("data:text/plain;base64,AAAA",), fhir=FhirMap("attachment"),
              template="fields/signature.html"),
    FieldType("display", _t("说明文字", "Display text (markdown)"), _display,
              {"markdown": TEXT}, answerable=False, widget="display", reader=read_nothing,
              always_shown=True,
              fhir=FhirMap("display"), template="fields/display.html", frame="bare"),
    FieldType("section", _t("分节标题", "Section heading"), _display,
              {"hidden": {"type": "boolean", "x-label": _t("不显示（其中只有计算项）",
                                                          "Not shown (holds calculations only)")}},
              answerable=False,
              widget="section", reader=read_nothing, fhir=FhirMap("display"), always_shown=True,
              template="fields/section.html", frame="bare"),
    FieldType("page_break", _t("分页", "Page break"), _display, answerable=False,
              widget="page_break", reader=read_nothing, fhir=NO_ITEM, breaks_page=True,
              template="fields/nothing.html", frame="bare"),
    FieldType("repeat_group", _t("重复组", "Repeat group"), _repeat,
              {"min_items": {"type": "integer", "minimum": 0},
               "max_items": {"type": "integer", "minimum": 1, "maximum": 50}},
              widget="repeat", valid_examples=([{"name": "阿司匹林"}],),
              invalid_examples=("x",), reader=_read_repeat, storer=no_leaves,
              fhir=FhirMap("group", item=_repeat_fhir_item, response=_repeat_fhir_response,
                           repeats=True), template="fields/repeat.html", frame="fieldset",
              group=True),
    FieldType("calculated", _t("计算字段", "Calculated field"), _hidden, widget="calculated",
              reader=read_nothing, fhir=FhirMap("decimal"), template="fields/calculated.html",
              computed=True),
    FieldType("hidden", _t("隐藏/预填字段", "Hidden / prefilled field"), _hidden,
              widget="hidden", valid_examples=("ward_3",), invalid_examples=({"a": 1},),
              fhir=STRING, template="fields/hidden.html", frame="unlabelled"),
    FieldType("consent", _t("知情同意", "Consent"), _consent, {"statement": TEXT},
              widget="consent", valid_examples=(True,), invalid_examples=(False,),
              reader=_read_consent, fhir=FhirMap("boolean", fhir_boolean),
              template="fields/consent.html", frame="fieldset"),
    FieldType("blood_pressure", _t("血压", "Blood pressure"), _blood_pressure, widget="bp",
              valid_examples=({"systolic": 128, "diastolic": 82},),
              invalid_examples=({"systolic": 80, "diastolic": 90}, {"systolic": 400,
                                                                   "diastolic": 80}),
              reader=_read_bp, storer=_bp_leaves,
              fhir=FhirMap("group", item=_bp_fhir_item, response=_bp_fhir_response),
              template="fields/bp.html", frame="fieldset"),
    FieldType("measurement", _t("测量值（单位换算）", "Measurement with unit conversion"),
              _measurement,
              dict(RANGE, unit={"enum": sorted(UNITS)},
                   units={"type": "array", "items": {"enum": sorted(UNITS)}}),
              widget="measurement", valid_examples=({"value": 126, "unit": "mg/dL"},),
              invalid_examples=({"value": 7, "unit": "furlong"},), reader=_read_measurement,
              storer=_measurement_leaves, scorer=_measurement_number,
              fhir=FhirMap("quantity", fhir_quantity), template="fields/measurement.html",
              frame="fieldset"),
)

FIELD_TYPES: dict[str, FieldType] = {ft.name: ft for ft in BUILTIN_FIELD_TYPES}
