"""What the builder shows instead of codes: a stored form's fields with their labels, types and
choices (the rule editor's condition sentences), a classification dictionary's categories (a
comment "mentions 用药指导"), and the rule actions by their titles.

    >>> body = {"fields": [{"key": "overall", "type": "rating", "label": {"zh-CN": "总体"}},
    ...                    {"key": "p2", "type": "page_break"}]}
    >>> [(f["key"], f["answer"]) for f in form_fields(body)]
    [('overall', 'number')]
"""

from __future__ import annotations

import copy
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


def action_types(departments: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every rule action type (``registry.catalogue("action")``): ``name``, ``title``, and what
    the rule editor generates the action's panel from: ``options`` (option name → its JSON
    Schema, annotated by :func:`panel_schema`) and ``required``. ``departments`` (id → name) are
    offered for every ``department`` option."""
    out = []
    for name, spec in sorted(loaded_registry().catalogue("action").items()):
        schema = spec.schema if isinstance(spec.schema, dict) else {}
        props = {k: v for k, v in (schema.get("properties") or {}).items() if k != "do"}
        options = {k: panel_schema(k, v, departments or {}) for k, v in props.items()}
        for option, kind in spec.references:
            if isinstance(options.get(option), dict):
                options[option]["x-reference"] = kind
        out.append({"name": name, "title": dict(spec.title), "options": options,
                    "required": [r for r in schema.get("required") or [] if r != "do"]})
    return out


def panel_schema(name: str, schema: Any, departments: dict[str, dict[str, str]]) -> Any:
    """An action option's schema marked for the rule editor's panel (a copy): a ``{zh-CN, en}``
    text ``x-def: text``; a due time (``hours`` or ``working_days``) ``x-def: due``; ``role``
    and ``department`` options become enums of the registered roles and the stored departments,
    every enum with its words (``x-enum-labels``), so the panel offers 护士长 and 药剂科, never
    ``head_nurse``."""
    from careloop.engine.schema import fill_registry_enums
    from careloop.web.builder_labels import label_enums

    node = copy.deepcopy(schema)
    if not isinstance(node, dict):
        return node
    kinds = [alt.get("type") for alt in node.get("oneOf") or [] if isinstance(alt, dict)]
    found = node.get("properties")
    props: dict[str, Any] = found if isinstance(found, dict) else {}
    if kinds == ["string", "object"]:
        node["x-def"] = "text"
    elif "hours" in props and "working_days" in props:
        node["x-def"] = "due"
    elif props:
        node["properties"] = {k: panel_schema(k, v, departments) for k, v in props.items()}
    if name == "role" and node.get("type") == "string":
        roles = loaded_registry().catalogue("role")
        titles = {r: dict(info.title) for r, info in roles.items()
                  if not getattr(info, "administrative", False)}
        node["enum"] = sorted(titles)
        node["x-enum-labels"] = {r: titles[r] for r in node["enum"]}
    elif name == "department" and node.get("type") == "string":
        node["enum"] = sorted(departments)
        node["x-enum-labels"] = {d: dict(departments[d]) for d in node["enum"]}
    fill_registry_enums(node, loaded_registry())
    return label_enums(node, name)


def _text(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return {"zh-CN": str(value)} if value else {}
