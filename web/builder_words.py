"""What the builder shows instead of codes: a stored form's fields with their labels, types and
choices (the rule editor's condition sentences), a classification dictionary's categories (a
comment "mentions 用药指导"), and the rule actions by their titles.

    >>> body = {"fields": [{"key": "overall", "type": "rating", "label": {"zh-CN": "总体"}},
    ...                    {"key": "p2", "type": "page_break"}]}
    >>> [(f["key"], f["answer"]) for f in form_fields(body)]
    [('overall', 'number')]
"""

from __future__ import annotations

from typing import Any

from careloop.engine.registry import loaded_registry


def form_fields(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields a condition can compare (nested group fields as ``group.child``): ``key``,
    ``label``, ``type``, ``type_title``, ``answer`` (``FieldType.answer_kind``) and ``choices``
    (``code``, ``label``)."""
    types = loaded_registry().catalogue("field_type")
    out: list[dict[str, Any]] = []

    def walk(items: Any, prefix: str) -> None:
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                continue
            ftype = types.get(str(item.get("type")))
            answer = ftype.answer_kind() if ftype is not None else None
            if answer:
                out.append({
                    "key": prefix + item["key"], "label": _text(item.get("label")),
                    "type": str(item.get("type")),
                    "type_title": dict(ftype.title) if ftype is not None else {},
                    "answer": answer,
                    "choices": [{"code": str(c.get("code")), "label": _text(c.get("label"))}
                                for c in item.get("choices") or [] if isinstance(c, dict)]})
            walk(item.get("fields"), prefix + item["key"] + ".")

    walk(body.get("fields"), "")
    return out


def dictionary_categories(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A classification dictionary's categories: ``key`` and ``title``."""
    return [{"key": str(c["key"]), "title": _text(c.get("title"))}
            for c in body.get("categories") or [] if isinstance(c, dict) and "key" in c]


def action_types() -> list[dict[str, Any]]:
    """Every rule action type (``registry.catalogue("action")``): ``name`` and ``title``."""
    return [{"name": name, "title": dict(spec.title)}
            for name, spec in sorted(loaded_registry().catalogue("action").items())]


def _text(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return {"zh-CN": str(value)} if value else {}
