"""User-facing text in Simplified Chinese first, English second.

Each plugin names its catalogue folders (the ``translation_dirs`` hook, ``engine/hookspecs.py``);
a package keeps its messages in ``<package>/data/i18n/<locale>.json`` (flat
``{"key": "text"}``, ``{name}`` placeholders); parts of a package may keep theirs in a
sub-folder (``web/data/i18n/builder/<locale>.json``). Keys are namespaced by package
(``forms.required``, ``web.login``…).

    >>> t("common.yes", "zh-CN"), t("common.yes", "en")
    ('是', 'Yes')
    >>> t("common.count", "en", n=3)
    '3 items'
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from careloop.engine.plugins import derived

LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"


def normalise_locale(value: str | None) -> str:
    """Map ``zh``, ``zh_CN``, ``en-US``, an Accept-Language header… onto a supported locale."""
    if not value:
        return DEFAULT_LOCALE
    first = value.split(",")[0].split(";")[0].strip().replace("_", "-").lower()
    return "en" if first.startswith("en") else DEFAULT_LOCALE


@cache
def catalogue(locale: str) -> dict[str, str]:
    """All messages of one locale, merged over every plugin's catalogue folders, in load order."""
    from careloop.engine.plugins import split_location, translation_dirs

    merged: dict[str, str] = {}
    for location in translation_dirs():
        package, path = split_location(location)
        folder = resources.files(package).joinpath(*path.split("/"))
        for text in _locale_files(folder, locale):
            merged.update(json.loads(text))
    return merged


derived(catalogue.cache_clear)


def _locale_files(folder: Traversable, locale: str) -> list[str]:
    """``<locale>.json`` in the folder and in its sub-folders (one per part of a package)."""
    if not folder.is_dir():
        return []
    found = []
    own = folder.joinpath(f"{locale}.json")
    if own.is_file():
        found.append(own.read_text("utf-8"))
    for child in sorted(folder.iterdir(), key=lambda c: c.name):
        if child.is_dir() and child.joinpath(f"{locale}.json").is_file():
            found.append(child.joinpath(f"{locale}.json").read_text("utf-8"))
    return found


def t(key: str, locale: str | None = None, /, **params: object) -> str:
    """Translate ``key``; falls back to the other language, then to the key itself."""
    loc = normalise_locale(locale) if locale not in LOCALES else locale
    text = catalogue(loc or DEFAULT_LOCALE).get(key)
    if text is None:
        for other in LOCALES:
            text = catalogue(other).get(key)
            if text is not None:
                break
    if text is None:
        return key
    return text.format(**params) if params else text


def pick(texts: dict[str, str] | None, locale: str | None) -> str:
    """Choose from a definition's ``{"zh-CN": …, "en": …}`` label, with fallback.

    >>> pick({"zh-CN": "总体满意度", "en": "Overall"}, "en")
    'Overall'
    >>> pick({"zh-CN": "总体满意度"}, "en")
    '总体满意度'
    """
    if not texts:
        return ""
    loc = locale if locale in LOCALES else normalise_locale(locale)
    if loc in texts:
        return texts[loc]
    for other in LOCALES:
        if other in texts:
            return texts[other]
    return next(iter(texts.values()))


def missing_translations() -> dict[str, list[str]]:
    """Keys present in one locale but not the other (a test keeps this empty)."""
    zh, en = set(catalogue("zh-CN")), set(catalogue("en"))
    return {"zh-CN": sorted(en - zh), "en": sorted(zh - en)}
