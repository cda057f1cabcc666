"""What a person reads for a dimension value: department and ward names, staff display names,
category titles from the definitions (the complaint form's choices, the feedback dictionaries),
form titles, channels — never a code, a user id or ``null``.

Labels are looked up *after* the aggregate query, for the few distinct values a tile shows. A
labelled row keeps the raw value under ``<dimension>__key`` so a click can filter or drill by it::

    {"department": "cardiology", "nps": 40}
    -> {"department": "心内科", "department__key": "cardiology", "nps": 40}

Kept small and named plainly (``dimension_labels``, ``scope_label``) so it can be merged with the
console's display helpers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.domain import Department, User
from careloop.engine.i18n import pick, t
from careloop.engine.registry import loaded_registry
from careloop.reports.query import ResultTable
from careloop.reports.spec import DatasetSpec

KEY_SUFFIX = "__key"
# Dimensions whose values are codes a person must not read; the rest (dates, age bands) read
# as they are.
LABELLED = ("department", "ward", "doctor", "nursing_group", "category", "form", "question",
            "channel", "encounter_type", "task_kind", "status", "touchpoint", "article",
            "outcome")


def key_column(dimension: str) -> str:
    return dimension + KEY_SUFFIX


def _departments(session: Session, ids: Collection[str], locale: str) -> dict[str, str]:
    rows = session.execute(select(Department.id, Department.name)
                           .where(Department.id.in_(sorted(ids)))).all()
    return {i: pick(name, locale) or i for i, name in rows}


def _people(session: Session, ids: Collection[str], locale: str) -> dict[str, str]:
    numbers = sorted({int(float(i)) for i in ids if _is_number(i)})
    rows = session.execute(select(User.id, User.display_name)
                           .where(User.id.in_(numbers))).all()
    names = {str(i): name for i, name in rows}
    return {i: names.get(str(int(float(i))), t("reports.label.unknown-person", locale))
            for i in ids if _is_number(i)}


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _bodies(session: Session, kind: str, keys: Iterable[str] | None = None) -> list[Any]:
    if keys is None:
        return [row.body for row in store.list_current(session, kind)]
    found = [store.current(session, kind, key) for key in keys]
    return [row.body for row in found if row is not None]


def _forms_of(session: Session, dataset: DatasetSpec) -> list[Any]:
    return _bodies(session, "form", dataset.forms or None)


def _categories(session: Session, dataset: DatasetSpec, locale: str) -> dict[str, str]:
    """Titles of the feedback dictionaries' categories, then the forms' ``category`` choices
    (the complaint form's: 服务态度, 医疗质量 …) — the forms' own words win."""
    out: dict[str, str] = {}
    for body in _bodies(session, "dictionary"):
        for category in body.get("categories", ()):
            out[category["key"]] = pick(category.get("title"), locale)
    for body in _forms_of(session, dataset):
        for field in body.get("fields", ()):
            if field.get("key") == "category":
                for choice in field.get("choices", ()):
                    out[str(choice["code"])] = pick(choice.get("label"), locale)
    return out


def _questions(session: Session, dataset: DatasetSpec, locale: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for body in _forms_of(session, dataset):
        for field in body.get("fields", ()):
            label = pick(field.get("label"), locale) or field["key"]
            out.setdefault(field["key"], label)
            for row in field.get("rows", ()):  # a matrix's rows: {code, label}
                code = row.get("code", row.get("key")) if isinstance(row, dict) else None
                if code is not None:
                    out.setdefault(f"{field['key']}.{code}",
                                   pick(row.get("label"), locale) or str(code))
    return out


def _forms(session: Session, keys: Collection[str], locale: str) -> dict[str, str]:
    return _titles(session, "form", keys, locale)


def _titles(session: Session, kind: str, keys: Collection[str],
            locale: str) -> dict[str, str]:
    """The definitions' titles (a form's, a touchpoint's: 门诊药房)."""
    out = {}
    for key in keys:
        row = store.current(session, kind, key)
        if row is not None:
            out[key] = pick(row.title, locale) or key
    return out


def _words(prefix: str, values: Collection[str], locale: str) -> dict[str, str]:
    out = {}
    for value in values:
        text = t(f"{prefix}.{value}", locale)
        out[value] = value if text == f"{prefix}.{value}" else text
    return out


def dimension_labels(session: Session, dataset: DatasetSpec, dimension: str,
                     values: Collection[str], locale: str) -> dict[str, str]:
    """``{value: label}`` for the distinct (non-empty) values of one dimension."""
    if not values:
        return {}
    if dimension in ("department", "ward"):
        return _departments(session, values, locale)
    if dimension in ("doctor", "nursing_group"):
        return _people(session, values, locale)
    if dimension == "category":
        return _categories(session, dataset, locale)
    if dimension == "question":
        return _questions(session, dataset, locale)
    if dimension == "form":
        return _forms(session, values, locale)
    if dimension == "touchpoint":
        return _titles(session, "touchpoint", values, locale)
    if dimension == "article":
        return _titles(session, "education", values, locale)
    return _words(f"reports.value.{dimension}", values, locale)


def missing_label(dimension: str, locale: str) -> str:
    """What a group without a value reads as (未指定科室, 未分类 …), never ``null``."""
    text = t(f"reports.missing.{dimension}", locale)
    return t("reports.missing.any", locale) if text == f"reports.missing.{dimension}" else text


def labelled(session: Session, dataset: DatasetSpec, result: ResultTable,
             locale: str) -> ResultTable:
    """``result`` with every coded dimension value replaced by its label (raw value kept in
    ``<dimension>__key``; ``""`` for a group without a value)."""
    dims = [c for c in result.columns if c in LABELLED and c not in
            {m.key for m in dataset.measures}]
    if not dims or not result.rows:
        return result
    maps = {}
    for dim in dims:
        values = {str(_key(r[dim])) for r in result.rows if r[dim] is not None}
        maps[dim] = dimension_labels(session, dataset, dim, values, locale)
    rows = []
    for row in result.rows:
        new = dict(row)
        for dim in dims:
            raw = row[dim]
            key = "" if raw is None else str(_key(raw))
            new[key_column(dim)] = key
            new[dim] = missing_label(dim, locale) if raw is None else maps[dim].get(key, key)
        rows.append(new)
    columns = [*result.columns, *(key_column(d) for d in dims)]
    return ResultTable(columns=columns, rows=rows)


def _key(value: Any) -> Any:
    # user ids come back as 17 or 17.0 depending on the database; one key for both
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def column_titles(dataset: DatasetSpec, locale: str) -> dict[str, str]:
    """Axis and header titles: a dimension's registered title, a measure's dataset key turned
    into its measure type's title (``complaint_rate`` → 投诉率)."""
    registry = loaded_registry()
    dims = registry.catalogue("report_dimension")
    measures = registry.catalogue("report_measure")
    out: dict[str, str] = {}
    for name in dataset.dimensions:
        info = dims.get(name)
        out[name] = pick(info.title, locale) if info is not None else name
    for m in dataset.measures:
        text = t(f"reports.measure.{m.key}", locale)
        if text != f"reports.measure.{m.key}":
            out[m.key] = text
            continue
        info = measures.get(m.type)
        out[m.key] = pick(info.title, locale) if info is not None else m.key
    out.setdefault("word", t("reports.column.word", locale))
    out.setdefault("count", t("reports.column.count", locale))
    return out


def scope_label(session: Session, scope: Collection[str] | None, locale: str) -> str | None:
    """The viewer's departments as words (心内科; a ward nurse: 心内科1病区); ``None`` when
    hospital-wide. Wards under a department in scope are not repeated."""
    if scope is None:
        return None
    rows = session.execute(select(Department.id, Department.name, Department.parent_id)
                           .where(Department.id.in_(sorted(scope)))
                           .order_by(Department.id)).all()
    top = [pick(name, locale) or i for i, name, parent in rows if parent not in scope]
    separator = "、" if locale == "zh-CN" else ", "
    return separator.join(top) or t("reports.scope.none", locale)


HOSPITAL_WORDS: Mapping[str, tuple[str, ...]] = {"zh-CN": ("全院",), "en": ("Hospital-wide",
                                                                          "Hospital")}


def scoped_title(title: str, scope_words: str | None, locale: str) -> str:
    """A title that says 全院 / Hospital names the viewer's scope instead (心内科NPS)."""
    if scope_words is None:
        return title
    for word in HOSPITAL_WORDS.get(locale, ()):
        if title.startswith(word):
            rest = title[len(word):]
            sep = " " if rest and rest[0].isascii() and rest[0].isalnum() else ""
            return f"{scope_words}{sep}{rest}"
    return title


def filter_words(session: Session, equals: Iterable[tuple[str, str]], locale: str) -> list[str]:
    """Clicked cross-filters as a person reads them: ``类别：收费``."""
    registry = loaded_registry().catalogue("report_dimension")
    anywhere = DatasetSpec(key="", title={}, source="submissions", dimensions=(), measures=())
    out = []
    for dimension, value in equals:
        info = registry.get(dimension)
        name = pick(info.title, locale) if info is not None else dimension
        label = dimension_labels(session, anywhere, dimension, {value}, locale).get(value, value)
        out.append(f"{name}：{label}" if locale == "zh-CN" else f"{name}: {label}")
    return out
