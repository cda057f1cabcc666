"""Server-rendered pages: one Jinja environment, every string through ``careloop.engine.i18n``.

Templates get ``_`` (translate in the request's locale), ``pick`` (definition labels),
``label(kind, code)`` (any code as words, :mod:`careloop.web.display`; in lists the filter
``code | label(kind)``, the same words for less), the filters ``local`` /
``when`` (hospital time as text / as a ``<time>`` element) and ``num`` (rounded numbers),
``me`` (the principal or None), ``csrf_token``, ``nav`` (items the user may open) and
``request_id``. A route that read the departments already passes ``display=Display(locale,
departments=…)``. The navigation is the ``web_nav`` catalogue, so engines add their pages to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup

from careloop.engine.clock import hospital_tz, to_local
from careloop.engine.i18n import pick, t
from careloop.engine.plugins import derived, split_location, template_dirs
from careloop.engine.registry import loaded_registry
from careloop.web.deps import csrf_token_of, current, locale_of, request_id
from careloop.web.display import (
    Display,
    as_instant,
    local_time,
    number,
    time_tag,
    trace_sentences,
)


@dataclass(frozen=True, slots=True)
class NavItem:
    """A link in the console's navigation; shown when the user holds ``permission``."""

    label_key: str
    href: str
    permission: str | None
    order: int
    section: str = "work"  # work | admin


def _local(value: datetime | str | None, style: str = "datetime") -> str:
    """The ``local`` filter: :func:`careloop.web.display.local_time` (a style name, or an
    strftime format for older templates)."""
    if "%" not in style:
        return local_time(value, style)
    instant = as_instant(value)
    return to_local(instant).strftime(style) if instant is not None else ""


@pass_context
def _label(context: Context, code: Any, kind: str, **details: Any) -> str:
    """The ``label`` filter, ``{{ task.priority | label("priority") }}``: the page's
    ``label(kind, code)`` (its :class:`Display`), for lists. Jinja calls a filter directly, a
    global through ``Context.call`` (its arguments inspected on every call): a list of 60 rows
    calls it ~400 times."""
    display = context.get("display")
    if display is None:
        display = Display(context.get("locale"))
    words: str = display.label(kind, code, **details)
    return words


_ISLAND_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                   0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_island(value: Any) -> Markup:
    """``value`` as JSON for a ``<script type="application/json">`` island: ``<``, ``>`` and
    ``&`` are written as ``\\u003c``… so no text a person typed (``<!--``, ``<script``,
    ``</script``) can end or confuse the element; ``JSON.parse`` reads the same value. The one
    way a template writes a JSON island: ``{{ payload | json_island }}``."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return Markup(text.translate(_ISLAND_ESCAPES))


_DICT_NAMES = frozenset(dir(dict))


class PageEnvironment(Environment):
    """Jinja's environment with ``row.key`` on a plain ``dict`` read as the item at once.

    Jinja tries the attribute first and the item after the ``AttributeError``; the pages' rows
    are dicts (a list of 60 tasks reads ~1,000 keys), and the failed attribute look-up was the
    render's largest cost. A key that is also a ``dict`` method's name (``items``, ``get``…)
    still gives the method, as before; the result is the same for every dict."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_NAMES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


@cache
def environment() -> Environment:
    # The web app's templates first, then each plugin's (the ``template_dirs`` hook).
    loaders = [PackageLoader(*split_location(location)) for location in template_dirs()]
    # Templates ship inside the packages: compiled once per process, never checked again on
    # each page (``auto_reload``); CARELOOP_TEMPLATE_RELOAD=1 checks them (editing templates).
    reload = os.environ.get("CARELOOP_TEMPLATE_RELOAD", "") not in ("", "0")
    env = PageEnvironment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(["html"]),
                          trim_blocks=True, lstrip_blocks=True, auto_reload=reload)
    env.filters["local"] = _local
    env.filters["when"] = time_tag
    env.filters["num"] = number
    env.filters["json_island"] = json_island
    env.filters["label"] = _label
    env.globals["pick"] = pick
    env.globals["local_time"] = local_time
    env.globals["number"] = number
    env.globals["trace_sentences"] = trace_sentences
    return env


derived(environment.cache_clear)


def nav_items(request: Request) -> list[NavItem]:
    cur = current(request)
    if cur is None or cur.mfa_pending:
        return []
    items = [item for _, item in loaded_registry().catalogue("web_nav").items()
             if item.permission is None or cur.principal.can(item.permission)]
    return sorted(items, key=lambda i: (i.section != "work", i.order))


def render(request: Request, template: str, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    locale = locale_of(request)
    cur = current(request)

    def translate(key: str, **params: object) -> str:
        return t(key, locale, **params)

    display = context.pop("display", None) or Display(locale)
    html = environment().get_template(template).render(
        _=translate, locale=locale, label=display.label, display=display,
        time_zone=hospital_tz().key, me=cur.principal if cur and not cur.mfa_pending else None,
        csrf_token=csrf_token_of(request), nav=nav_items(request),
        request_id=request_id(request), path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status_code)
    login_csrf = getattr(request.state, "login_csrf", None)
    if cur is None and login_csrf:
        response.set_cookie("careloop_login_csrf", login_csrf, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
    return response


@dataclass(frozen=True, slots=True)
class PatientPanel:
    """A section of the patient 360 page, registered in ``registry.catalogue("patient_panel")``.

    ``render(session, patient_id, principal, locale)`` returns HTML it has escaped itself (use
    ``markupsafe.escape``); the page has already checked the patient is in the user's scope.
    """

    title: dict[str, str]
    order: int
    render: Any


@dataclass(frozen=True, slots=True)
class TaskPanel:
    """A section of the task page, registered in ``registry.catalogue("task_panel")``.

    ``render(session, task, principal, locale, csrf_token)`` returns HTML it has escaped itself,
    or None when the section does not apply to this task; the page has already checked the
    task (and its patient) are in the user's scope.
    """

    title: dict[str, str]
    order: int
    render: Any
