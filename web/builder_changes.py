"""What a draft changes, in words: the builder's semantic diff.

The publish dialog compares the two definitions as **structures**, not as re-formatted text: a
list of keyed items (fields, choices, rules, steps, scores, bands, tiles…) is matched by ``key``
(or ``code``), a ``{"zh-CN": …, "en": …}`` text is one value, and each difference is one
change, named by the labels of what it is in::

    >>> old = {"kind": "form", "key": "f", "fields": [
    ...     {"key": "overall", "type": "rating", "label": {"zh-CN": "总体", "en": "Overall"}}]}
    >>> new = {"kind": "form", "key": "f", "fields": [
    ...     {"key": "overall", "type": "rating", "label": {"zh-CN": "总体满意度", "en": "Overall"}},
    ...     {"key": "pain", "type": "rating", "label": {"zh-CN": "疼痛评分", "en": "Pain"}}]}
    >>> [c["text"] for c in changes(old, new, "zh-CN")]
    ['字段「总体满意度」：标签 由「总体」改为「总体满意度」', '新增字段「疼痛评分」']

Each change is ``{"op", "path", "text"}``: ``op`` is ``added``, ``removed``, ``changed``,
``set``, ``unset`` or ``reordered``; ``path`` the JSONPath in the draft (``$.fields[0].label``),
or in the current version for a removal. A change of a condition also has ``where``,
``prop``, ``old`` and ``new`` (the two expressions, which the page shows as sentences). The
unified text diff stays available as the advanced view.
"""

from __future__ import annotations

import json
from typing import Any

from careloop.engine.i18n import LOCALES, catalogue, pick, t
from careloop.engine.registry import loaded_registry

IDENTITY = ("key", "code")
# properties holding a condition: a change to one also carries the two expressions, which the
# page shows as sentences
CONDITIONS = frozenset({"when", "visible_if", "required_if", "enabled_if", "if"})
MAX_VALUE = 80   # characters of a value shown in a change


def is_text(value: Any) -> bool:
    """A ``{"zh-CN": …, "en": …}`` text (compared and shown as one value)."""
    return (isinstance(value, dict) and bool(value)
            and all(k in LOCALES and isinstance(v, str) for k, v in value.items()))


def _identity(items: list[Any]) -> str | None:
    """The property that names every item of a list (``key`` or ``code``), if one does."""
    for name in IDENTITY:
        if items and all(isinstance(i, dict) and isinstance(i.get(name), str | int) for i in items):
            ids = [str(i[name]) for i in items]
            if len(set(ids)) == len(ids):
                return name
    return None


def _keyed(old: list[Any], new: list[Any]) -> bool:
    """Both lists are of items named by the same property (an empty one fits either)."""
    names = {_identity(items) for items in (old, new) if items}
    return len(names) == 1 and None not in names


class _Words:
    """Names for collections, properties, items and values in one locale."""

    def __init__(self, locale: str) -> None:
        self.locale = locale
        self.known = catalogue(locale)

    def word(self, group: str, name: str) -> str:
        """``builder.<group>.<name>`` in words (``word``: a property, ``items``: a list), else
        the builder's own property word, else the name."""
        for key in (f"builder.{group}.{name}", f"builder.prop.{name}"):
            if key in self.known:
                return t(key, self.locale)
        return name

    def item(self, collection: str, item: dict[str, Any], ident: str) -> str:
        """``字段「总体满意度」``: the collection's word and the item's label (else its key)."""
        label = item.get("label") if is_text(item.get("label")) else item.get("title")
        name = pick(label, self.locale) if is_text(label) else ""
        if not name and isinstance(item.get("do"), str):   # a rule action: its type's title
            spec = loaded_registry().catalogue("action").get(item["do"])
            name = pick(spec.title, self.locale) if spec is not None else item["do"]
        return t("builder.change.item", self.locale, what=self.word("items", collection),
                 name=name or str(item.get(ident, "")))

    def value(self, value: Any) -> str:
        if is_text(value):
            text = pick(value, self.locale)
        elif isinstance(value, bool):
            text = t("common.yes" if value else "common.no", self.locale)
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 1] + "…"


def changes(old: dict[str, Any] | None, new: dict[str, Any], locale: str) -> list[dict[str, Any]]:
    """The differences from ``old`` (the current version; ``None`` for a new definition) to
    ``new``, in order, each as ``{"op", "path", "text"}`` in ``locale``."""
    words = _Words(locale)
    out: list[dict[str, Any]] = []
    if old is None:
        title = new.get("title")
        name = pick(title, locale) if is_text(title) else str(new.get("key", ""))
        out.append({"op": "added", "path": "$",
                    "text": t("builder.change.new_definition", locale, name=name)})
        return out
    _walk(old, new, "$", [], words, out)
    return out


def _emit(out: list[dict[str, Any]], words: _Words, op: str, path: str, where: list[str], *,
          condition: bool = False, raw: tuple[Any, Any] = (None, None), **params: str) -> None:
    place = t("builder.change.where", words.locale, place=" › ".join(where)) if where else ""
    change: dict[str, Any] = {"op": op, "path": path, "text": t(
        f"builder.change.{op}", words.locale, where=place, **params)}
    if condition:   # the page re-words it with the condition's sentence (core/sentence.js)
        change.update(where=place, prop=params.get("prop", ""), old=raw[0], new=raw[1])
    out.append(change)


def _walk(old: Any, new: Any, path: str, where: list[str], words: _Words,
          out: list[dict[str, Any]]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict) and not (is_text(old) and is_text(new)):
        _walk_dict(old, new, path, where, words, out)
        return
    if isinstance(old, list) and isinstance(new, list) and _keyed(old, new):
        _walk_items(old, new, path, where, words, out)
        return
    if (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and all(isinstance(i, dict) for i in old + new)):
        collection = path.rsplit(".", 1)[-1].split("[")[0]
        for n, (a, b) in enumerate(zip(old, new, strict=True)):   # e.g. a rule's actions
            _walk(a, b, f"{path}[{n}]", [*where, words.item(collection, b, str(n + 1))],
                  words, out)
        return
    prop = path.rsplit(".", 1)[-1].split("[")[0]
    _emit(out, words, "changed", path, where, prop=words.word("word", prop),
          old=words.value(old), new=words.value(new),
          condition=prop in CONDITIONS and isinstance(old, str) and isinstance(new, str),
          raw=(old, new))


def _walk_dict(old: dict[str, Any], new: dict[str, Any], path: str, where: list[str],
               words: _Words, out: list[dict[str, Any]]) -> None:
    names = list(new) + [k for k in old if k not in new]
    for name in names:
        sub = f"{path}.{name}"
        prop = words.word("word", name)
        if name not in old:
            _emit(out, words, "set", sub, where, prop=prop, new=words.value(new[name]),
                  condition=name in CONDITIONS, raw=(None, new[name]))
        elif name not in new:
            _emit(out, words, "unset", sub, where, prop=prop, old=words.value(old[name]),
                  condition=name in CONDITIONS, raw=(old[name], None))
        else:
            _walk(old[name], new[name], sub, where, words, out)


def _walk_items(old: list[Any], new: list[Any], path: str, where: list[str], words: _Words,
                out: list[dict[str, Any]]) -> None:
    ident = _identity(new) or _identity(old) or "key"
    collection = path.rsplit(".", 1)[-1].split("[")[0]
    before = {str(i[ident]): (n, i) for n, i in enumerate(old)}
    after = {str(i[ident]): (n, i) for n, i in enumerate(new)}
    for name, (n, item) in after.items():
        here = [*where, words.item(collection, item, ident)]
        if name not in before:
            _emit(out, words, "added", f"{path}[{n}]", where, what=here[-1])
        else:
            _walk(before[name][1], item, f"{path}[{n}]", here, words, out)
    for name, (n, item) in before.items():
        if name not in after:
            _emit(out, words, "removed", f"{path}[{n}]", where,
                  what=words.item(collection, item, ident))
    kept_old = [k for k in before if k in after]
    kept_new = [k for k in after if k in before]
    if kept_old != kept_new:
        _emit(out, words, "reordered", path, where, what=words.word("items", collection))
