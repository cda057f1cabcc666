"""The words for the codes a step panel offers: every ``enum`` in a step type's option schemas
gets ``x-enum-labels`` (value → ``{"zh-CN", "en"}``), so the flow designer lists 责任护士, 紧急,
微信, 护士长 — never ``responsible_nurse``, ``urgent``, ``wechat``, ``head_nurse``.

Where the words come from: an enum filled from a registry (``x-registry``: roles, channels…) by
:func:`careloop.web.display.label` of that kind (the registry entry's title, else the message
catalogue's ``web.label.<kind>.<code>``); any other enum by the option it belongs to
(``priority`` → ``web.label.priority.<code>``, ``relation``, ``mode``, ``join``…). A value
nothing names keeps its own text (``POST``).

    >>> schema = {"priority": {"enum": ["urgent"]}}
    >>> label_enums(schema)["priority"]["x-enum-labels"]["urgent"]["zh-CN"]
    '紧急'
"""

from __future__ import annotations

from typing import Any

from careloop.engine.i18n import catalogue
from careloop.engine.tasks import OUTCOMES

LOCALES = ("zh-CN", "en")
# options whose values are codes of a kind the display layer names under another word
KINDS = {"outcomes": "outcome", "channels": "channel", "relation": "relation"}
# lists of codes the schema leaves open but the engine knows (a phone call's outcomes): offered
# as ticks by their words
KNOWN = {"outcomes": OUTCOMES}


def _word(kind: str, code: str, locale: str) -> str:
    from careloop.web.display import label

    text = label(kind, code, locale)
    if text == code.replace("_", " ") and code not in catalogue(locale).values():
        return code   # nothing names it (``POST``): its own text
    return text


def enum_labels(kind: str, values: list[Any]) -> dict[str, dict[str, str]]:
    """``value → {"zh-CN", "en"}`` for the enum ``values`` of an option of ``kind``."""
    return {str(v): {loc: _word(kind, str(v), loc) for loc in LOCALES} for v in values}


def label_enums(node: Any, name: str = "") -> Any:
    """``node`` (an option schema or a mapping of them) with ``x-enum-labels`` added to every
    ``enum`` (in place; returned for convenience). ``name`` is the option being walked."""
    if isinstance(node, list):
        for item in node:
            label_enums(item, name)
    elif isinstance(node, dict):
        items = node.get("items")
        if name in KNOWN and isinstance(items, dict) and "enum" not in items:
            items["enum"] = list(KNOWN[name])
        values = node.get("enum")
        if isinstance(values, list) and "x-enum-labels" not in node:
            kind = str(node.get("x-registry") or KINDS.get(name, name))
            node["x-enum-labels"] = enum_labels(kind, values)
        for key, value in node.items():
            if key in ("properties",) and isinstance(value, dict):
                for prop, schema in value.items():
                    label_enums(schema, prop)
            elif key == "items":
                label_enums(value, name)
            elif isinstance(value, dict) and key not in ("x-enum-labels",) and "enum" not in key:
                label_enums(value, key if name == "" else name)
    return node


def trigger_words(used: list[str]) -> dict[str, Any]:
    """What the flow designer's trigger panel offers: ``events`` (every event the message
    catalogue names, ``web.label.event.<name>``, and those ``used`` by stored definitions:
    ``name`` and ``title``) and ``once`` (the trigger's ``once`` values by their words)."""
    from careloop.engine.schema import kind_schema

    prefix = "web.label.event."
    names = {k.removeprefix(prefix) for k in catalogue("zh-CN") if k.startswith(prefix)}
    names |= {n for n in used if n}
    events = [{"name": n, "title": enum_labels("event", [n])[n]} for n in sorted(names)]
    once = kind_schema("flow")["properties"]["trigger"]["properties"]["once"]["enum"]
    return {"events": events, "once": [{"name": v, "title": enum_labels("once", [v])[v]}
                                       for v in once]}
