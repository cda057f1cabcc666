"""Start from a template or a copy, and search across apps, for the builder home.

**Copy**: any current definition (the postpartum form) becomes the user's *draft* of a new
definition in an app they may edit (gynaecology), under a new key proposed from the new title,
with everything else copied; the original is untouched and nothing is published.

    >>> propose_key({"zh-CN": "妇科术后随访", "en": "Gynaecology post-op follow-up"},
    ...             "postpartum_42d", {"gynaecology_post_op_follow_up"})
    'gynaecology_post_op_follow_up_2'
    >>> propose_key({"zh-CN": "妇科术后随访"}, "postpartum_42d", set())
    'postpartum_42d_copy'

**New**: the home page's "new definition" asks for a title, not a key; the key is proposed
the same way (else from the kind: ``form``, ``form_2``…) and shown only under "高级"::

    >>> propose_key({"zh-CN": "出院随访"}, "form", {"form", "form_2"}, fallback="form")
    'form_3'

**Search**: the current definitions whose title, kind or app name — or the label of one of
their fields, choices, rules, steps, scores, tiles… — contains every word typed, in the page's
language; a hit inside a definition says where ("字段「疼痛评分」").
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.i18n import catalogue, pick, t
from careloop.engine.models import BundleRow
from careloop.engine.registry import loaded_registry
from careloop.web.builder import BuilderError, blank, folder_of, save_draft, to_yaml
from careloop.web.builder_models import BuilderDraft
from careloop.web.permissions import Principal

KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_HITS = 50


def propose_key(title: dict[str, str], source_key: str, taken: set[str], *,
                fallback: str | None = None) -> str:
    """A key from the English title (``gynaecology_post_op``), else ``fallback`` (by default
    ``<source>_copy``); a number is added until it is not ``taken``."""
    words = re.findall(r"[a-z0-9]+", str(title.get("en") or "").lower())
    base = "_".join(words)[:56].strip("_")
    if not base or not base[0].isalpha():
        base = fallback[:58] if fallback else f"{source_key[:58]}_copy"
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def taken_keys(session: Session, kind: str) -> set[str]:
    """Every key of ``kind`` in use: stored (in any app, retired too) or drafted by anyone."""
    keys = {row.key for row in store.list_current(session, kind=kind)}
    keys |= set(session.scalars(select(BuilderDraft.key).where(BuilderDraft.kind == kind)))
    return keys


def copy_definition(session: Session, editor: Principal, *, kind: str, key: str, app_id: str,
                    title: dict[str, str], new_key: str | None) -> dict[str, Any]:
    """Save a copy of the current ``kind/key`` as ``editor``'s draft of ``new_key`` (proposed
    from ``title`` when not given) in ``app_id``; the original is not changed."""
    folder_of(kind)
    source = store.current(session, kind, key)
    if source is None:
        raise BuilderError("builder.copy.not_found", 404)
    title = _title(title)
    taken = taken_keys(session, kind)
    target = _free_key(session, kind, new_key or propose_key(title, key, taken), taken)
    body = copy.deepcopy(dict(source.body))
    body["key"], body["title"] = target, title
    save_draft(session, editor.user_id, app_id, kind, target, to_yaml(body), editor)
    return {"kind": kind, "key": target, "app": app_id, "title": title,
            "url": f"/builder/edit/{kind}/{target}?app={app_id}"}


def _title(title: dict[str, str]) -> dict[str, str]:
    """The title typed (zh-CN and/or en, each standing in for the other), else an error."""
    title = {k: v.strip() for k, v in title.items() if isinstance(v, str) and v.strip()}
    if not title:
        raise BuilderError("builder.copy.no_title", 422)
    title.setdefault("zh-CN", title.get("en", ""))
    title.setdefault("en", title["zh-CN"])
    return title


def _free_key(session: Session, kind: str, key: str, taken: set[str]) -> str:
    """``key`` when it is well-formed and nobody uses it, else an error."""
    if not KEY.match(key):
        raise BuilderError("builder.copy.bad_key", 422)
    if key in taken or store.latest(session, kind, key) is not None:
        raise BuilderError("builder.copy.taken", 409, name=key)
    return key


def proposed_new_key(session: Session, kind: str, title: dict[str, str]) -> str:
    """The key proposed for a new ``kind`` titled ``title`` (see the module)."""
    folder_of(kind)
    return propose_key(title, kind, taken_keys(session, kind), fallback=kind)


def new_definition(session: Session, editor: Principal, *, kind: str, app_id: str,
                   title: dict[str, str], key: str | None) -> dict[str, Any]:
    """Save a blank ``kind`` titled ``title`` as ``editor``'s draft in ``app_id``, under
    ``key`` (proposed from the title when not given); nothing is published."""
    folder_of(kind)
    title = _title(title)
    target = _free_key(session, kind, key or proposed_new_key(session, kind, title),
                       taken_keys(session, kind))
    body = blank(kind, target)
    body["title"] = title
    save_draft(session, editor.user_id, app_id, kind, target, to_yaml(body), editor)
    return {"kind": kind, "key": target, "app": app_id, "title": title,
            "url": f"/builder/edit/{kind}/{target}?app={app_id}"}


def draft_title(text: str) -> dict[str, str] | None:
    """The title of a draft's text (a copy not yet published is titled by it), else ``None``."""
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    title = body.get("title") if isinstance(body, dict) else None
    return {str(k): str(v) for k, v in title.items()} if isinstance(title, dict) else None


def _labels(body: Any, where: str = "") -> list[tuple[str, dict[str, str]]]:
    """``(collection, label)`` for every labelled or titled item inside a definition body."""
    out: list[tuple[str, dict[str, str]]] = []
    if isinstance(body, dict):
        for name in ("label", "title", "task_title"):
            value = body.get(name)
            texts = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            if where and texts and isinstance(value, dict):
                out.append((where, value))
                break
        for name, value in body.items():
            if isinstance(value, list):
                for item in value:
                    out += _labels(item, name)
            elif isinstance(value, dict) and name not in ("label", "title", "task_title"):
                out += _labels(value, where)
    return out


def _matches(words: list[str], text: str) -> bool:
    low = text.lower()
    return all(w in low for w in words)


def search(session: Session, query: str, locale: str) -> list[dict[str, Any]]:
    """The current definitions matching every word of ``query`` (see the module)."""
    words = [w for w in query.lower().split() if w]
    if not words:
        return []
    apps = {row.id: pick(row.name, locale) for row in session.scalars(select(BundleRow))}
    kinds = loaded_registry().catalogue("kind")
    known = catalogue(locale)
    hits: list[dict[str, Any]] = []
    for row in sorted(store.list_current(session), key=lambda r: (r.app_id or "", r.kind, r.key)):
        if row.app_id is None:
            continue   # packaged definitions nobody edits here
        spec = kinds.get(row.kind)
        kind_title = pick(spec.title, locale) if spec is not None else row.kind
        title = pick(row.title or {}, locale) if row.title else ""
        head = f"{title} {kind_title} {apps.get(row.app_id, '')}"
        found: list[str] = []
        if not _matches(words, head):
            for collection, label in _labels(dict(row.body)):
                text = pick(label, locale)
                if _matches(words, f"{head} {text}"):
                    what_key = f"builder.items.{collection}"
                    what = t(what_key, locale) if what_key in known else ""
                    words_found = t("builder.found_in", locale, what=what, label=text).strip()
                    found.append(words_found[:1].upper() + words_found[1:])
                if len(found) >= 3:
                    break
            if not found:
                continue
        hits.append({"kind": row.kind, "key": row.key, "app": row.app_id,
                     "app_name": apps.get(row.app_id, ""), "title": title or kind_title,
                     "kind_title": kind_title, "found": found,
                     "url": f"/builder/edit/{row.kind}/{row.key}?app={row.app_id}"})
        if len(hits) >= MAX_HITS:
            break
    return hits
