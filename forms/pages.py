"""Patient pages: render a form page (Jinja2, server-side), read a posted page back into answers,
and run the page flow (next / back / save / submit) on the server, so everything works without
JavaScript. The small script only asks the server which fields are visible.

    flow = PageFlow(spec, draft={"answers": {...}, "page": 0})
    flow.post(form_data, action="next")  ──▶ PageResult(page=1, errors=[], done=False)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    PackageLoader,
    TemplateNotFound,
    select_autoescape,
)
from markupsafe import Markup, escape

from careloop.engine.db import home
from careloop.engine.hospital import hospital_name, hospital_phone
from careloop.engine.i18n import pick, t
from careloop.engine.privacy import mask_identifier, mask_in_text
from careloop.engine.registry import loaded_registry
from careloop.forms.compiler import PIPE
from careloop.forms.fields import FieldType
from careloop.forms.logic import Evaluation, evaluate
from careloop.forms.spec import FieldSpec, FormSpec

MAX_UPLOAD = 50 * 1024 * 1024
# Magic numbers of the content types uploads may claim (content-type is checked, not trusted).
MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff",
         "application/pdf": b"%PDF-"}


def field_type(name: str) -> FieldType:
    """The registered type of a field (the page's templates ask it for frame and template)."""
    found: FieldType = loaded_registry().catalogue("field_type")[name]
    return found


class FieldTypeLoader(BaseLoader):
    """``field-type:<name>`` → the template file a registered type names by path (a plugin's
    template next to its module)."""

    PREFIX = "field-type:"

    def get_source(self, environment: Environment,
                   template: str) -> tuple[str, str | None, Any]:
        if not template.startswith(self.PREFIX):
            raise TemplateNotFound(template)
        try:
            ftype = field_type(template.removeprefix(self.PREFIX))
        except KeyError:
            raise TemplateNotFound(template) from None
        path = Path(ftype.template)
        if not path.is_file():
            raise TemplateNotFound(template)
        mtime = path.stat().st_mtime
        return path.read_text("utf-8"), str(path), lambda: path.stat().st_mtime == mtime


@cache
def environment() -> Environment:
    env = Environment(loader=ChoiceLoader([PackageLoader("careloop.forms", "templates"),
                                           FieldTypeLoader()]),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.globals["t"] = t
    env.globals["field_type"] = field_type
    env.globals["pick"] = lambda texts, locale: pick(dict(texts) if texts else None, locale)
    env.filters["markdown"] = render_markdown
    return env


def render_markdown(text: str) -> Markup:
    """Markdown for display text, sanitised: raw HTML is escaped, links limited to http(s)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).disable("image")
    html = md.render(text)
    html = re.sub(r'href="(?!https?://)[^"]*"', 'href="#"', html)
    return Markup(html)


def pages_of(spec: FormSpec) -> list[list[FieldSpec]]:
    pages: list[list[FieldSpec]] = [[] for _ in range(spec.pages)]
    for item in spec.fields:
        if not field_type(item.type).breaks_page:
            pages[item.page].append(item)
    return pages


def pipe(text: str, answers: Mapping[str, Any], spec: FormSpec, locale: str) -> str:
    """``{{ joint }}`` in a label → the (choice label of the) earlier answer."""
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        value = answers.get(key)
        target = spec.field(key)
        if value is None or target is None:
            return "…"
        choice = target.choice(value) if isinstance(value, str) else None
        return pick(dict(choice.label), locale) if choice is not None else str(value)
    return PIPE.sub(replace, text)


def read_field(item: FieldSpec, form: Mapping[str, Any], prefix: str = "") -> Any:
    """The answer a posted HTML form gives for one field (``None`` when left empty): the
    field's type reads it (:meth:`FieldType.read`)."""
    return field_type(item.type).read(item, form, prefix)


def read_page(spec: FormSpec, page: int, form: Mapping[str, Any]) -> dict[str, Any]:
    """Answers posted for one page (fields of other pages are not touched; a type that is not
    read from the post, an upload, keeps its answer, and so does a read-only field: the page
    cannot change what it was given)."""
    out: dict[str, Any] = {}
    for item in pages_of(spec)[page]:
        ftype = field_type(item.type)
        if ftype.reader is not None and not item.read_only:
            out[item.key] = ftype.read(item, form)
    return out


def store_upload(item: FieldSpec, filename: str, content_type: str, data: bytes) -> Any:
    """Store an uploaded file outside the database (``var/uploads/<sha256>``); the answer holds
    a reference. The claimed content type must match the file's magic number."""
    magic = MAGIC.get(content_type)
    if magic is None or not data.startswith(magic) or len(data) > MAX_UPLOAD:
        return {"sha256": "0" * 64, "content_type": "invalid", "size": len(data),
                "name": filename}
    digest = hashlib.sha256(data).hexdigest()
    folder = home() / "var" / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / digest
    if not target.exists():
        target.write_bytes(data)
    return {"sha256": digest, "content_type": content_type, "size": len(data),
            "name": Path(filename).name[:200]}


@dataclass(slots=True)
class PageResult:
    page: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    saved: bool = False
    evaluation: Evaluation | None = None


def visible_pages(spec: FormSpec, evaluation: Evaluation) -> list[int]:
    """Pages with at least one visible field (an empty page is skipped)."""
    visible = set(evaluation.visible)
    out = [n for n, items in enumerate(pages_of(spec))
           if any(i.key in visible or field_type(i.type).always_shown for i in items)]
    return out or [0]


def step(spec: FormSpec, draft: dict[str, Any], page: int, posted: Mapping[str, Any],
         action: str, locale: str, context: Mapping[str, Any]) -> PageResult:
    """Merge a posted page into the draft and move: next / back / save / submit."""
    answers = dict(draft.get("answers") or {})
    for key, value in posted.items():
        if value is None:
            answers.pop(key, None)
        else:
            answers[key] = value
    draft["answers"] = answers
    check = evaluate(spec, answers, locale=locale, context=context, pages=[page])
    pages = visible_pages(spec, check)
    if action == "back":
        earlier = [p for p in pages if p < page]
        draft["page"] = earlier[-1] if earlier else page
        return PageResult(page=draft["page"], evaluation=check)
    if action == "save":
        draft["page"] = page
        return PageResult(page=page, saved=True, evaluation=check)
    if check.errors:
        draft["page"] = page
        return PageResult(page=page, errors=check.errors, evaluation=check)
    later = [p for p in pages if p > page]
    if action == "next" and later:
        draft["page"] = later[0]
        return PageResult(page=later[0], evaluation=check)
    full = evaluate(spec, answers, locale=locale, context=context)
    if full.errors:
        first = min((_page_of(spec, e["path"]) for e in full.errors), default=page)
        draft["page"] = first
        return PageResult(page=first, errors=full.errors, evaluation=full)
    return PageResult(page=page, done=True, evaluation=full)


def _page_of(spec: FormSpec, path: str) -> int:
    key = re.split(r"[.\[]", path, maxsplit=1)[0]
    item = spec.field(key)
    return item.page if item is not None else 0


def render_page(spec: FormSpec, *, answers: Mapping[str, Any], page: int, locale: str,
                errors: list[dict[str, Any]], evaluation: Evaluation, action_url: str,
                large_text: bool, message: str | None = None, staff: bool = False,
                csrf: str | None = None, proxy_offered: bool = False,
                proxy: str | None = None, saving: bool = True) -> str:
    """One page of a form. ``proxy_offered``: the first page asks whether a family member is
    answering for the patient (``proxy`` the relation chosen so far); ``saving``: the page can
    be saved and resumed (not at an anonymous touchpoint)."""
    from careloop.forms.runtime import PROXY_RELATIONS

    pages = visible_pages(spec, evaluation)
    error_map: dict[str, str] = {}
    for error in errors:
        error_map.setdefault(error["path"], error["message"])
        error_map.setdefault(re.split(r"[.\[]", error["path"], maxsplit=1)[0], error["message"])
    env = environment()
    return env.get_template("page.html").render(
        spec=spec, fields=[evaluation.fields.get(f.key, f) for f in pages_of(spec)[page]],
        answers=answers, page=page,
        page_number=pages.index(page) + 1 if page in pages else 1, page_count=len(pages),
        is_last=not any(p > page for p in pages), is_first=not any(p < page for p in pages),
        locale=locale, errors=errors, error_map=error_map, visible=set(evaluation.visible),
        action_url=action_url, large_text=large_text, message=message, staff=staff, csrf=csrf,
        pipe=lambda text: pipe(text, answers, spec, locale), esc=escape,
        other_locale="en" if locale == "zh-CN" else "zh-CN",
        required_now=set(evaluation.required), type_css=type_stylesheets(spec),
        proxy_offered=proxy_offered and not staff, proxy=proxy, proxy_relations=PROXY_RELATIONS,
        saving=saving, **hospital_context(locale))


def computed_fields(spec: FormSpec, *, answers: Mapping[str, Any], page: int, locale: str,
                    evaluation: Evaluation) -> dict[str, str]:
    """The fields of ``page`` whose choices the answers compute (an imported SDC
    ``answerExpression``), drawn again with the choices ``evaluation`` gave: the page's script
    puts them in place after a change, as it shows and hides fields (without the script the
    next page drawn has them, and the server holds every answer to them)."""
    wanted = [evaluation.fields[f.key] for f in pages_of(spec)[page]
              if f.key in evaluation.fields]
    if not wanted:
        return {}
    template = environment().from_string(
        '{% from "fields.html" import render_field with context %}'
        "{{ render_field(f, answers, locale, {}, True, pipe) }}")
    return {f.key: template.render(f=f, answers=answers, locale=locale, staff=False,
                                   required_now=set(evaluation.required),
                                   pipe=lambda text: pipe(text, answers, spec, locale))
            for f in wanted}


def type_stylesheets(spec: FormSpec) -> list[str]:
    """The field types of the form that bring a stylesheet of their own (``FieldType.css``)."""
    names = {f.type for f in spec.fields} | {s.type for f in spec.fields for s in f.fields}
    return sorted(n for n in names if field_type(n).css is not None)


def hospital_context(locale: str) -> dict[str, Any]:
    """Who sent the page (every patient page names the hospital and a phone to call)."""
    name, phone = hospital_name(locale), hospital_phone()
    return {"hospital": name, "hospital_phone": phone,
            "contact": t("web.devices.contact_phone", locale, hospital=name, phone=phone)
            if phone else t("web.devices.contact_department", locale, hospital=name)}


def render_message(title: str, text: str, locale: str, large_text: bool = False, *,
                   next_step: bool = False) -> str:
    """A page with one message (thanks, a used or unknown link); ``next_step`` adds what to do
    now: call the hospital, who can send a new link."""
    return environment().get_template("message.html").render(
        title=title, text=text, locale=locale, large_text=large_text,
        next_step=t("web.devices.link_next_step", locale) if next_step else "",
        **hospital_context(locale))


def render_thanks(title: str, locale: str, large_text: bool = False) -> str:
    """The page a patient sees after submitting a form: :func:`render_message` with the thanks,
    rendered once per form title, locale, text size and the words around them (the hospital,
    its phone, the translations), not per submission. It holds nothing of the patient."""
    hospital = hospital_context(locale)
    phone = hospital["hospital_phone"]
    return _thanks(title, locale, bool(large_text), t("forms.page.thanks", locale),
                   hospital["hospital"], phone, hospital["contact"],
                   t("web.devices.call", locale, phone=phone) if phone else "")


@lru_cache(maxsize=256)
def _thanks(title: str, locale: str, large_text: bool, text: str, hospital: str, phone: str,
            contact: str, _call: str) -> str:
    return environment().get_template("message.html").render(
        title=title, text=text, locale=locale, large_text=large_text, next_step="",
        hospital=hospital, hospital_phone=phone, contact=contact)


def describe(spec: FormSpec, answers: Mapping[str, Any], locale: str, *,
             reveal: bool = False) -> list[dict[str, Any]]:
    """Stored answers with the labels of the form version they were given for (staff views,
    exports): ``[{"key", "label", "value", "display"}]``, with ``"masked": true`` added to an
    answer shown masked.

    What a patient typed that identifies a person — a field whose type has a ``mask``
    (``mobile``, ``resident_id``), a field marked ``identifier`` (whole answer, first character
    kept), or a phone or ID number found in a text answer — is masked (``masked: true``) unless
    ``reveal`` (the caller audits the reveal as ``patient.reveal``)."""
    out: list[dict[str, Any]] = []
    for item in spec.fields:
        if item.key not in answers:
            continue
        value = answers[item.key]
        display = _display(item, value, locale)
        masked = False
        type_mask = field_type(item.type).mask
        if (not reveal and item.identifier and display and value not in (None, "", [])
                and not (type_mask is not None and isinstance(value, str))):
            value = display = mask_identifier(display) or ""
            masked = True
        elif not reveal and isinstance(value, str):
            mask = field_type(item.type).mask
            if mask is not None and value:
                value = display = mask(value) or ""
                masked = True
            else:
                value, found = mask_in_text(value)
                display, shown = mask_in_text(display)
                masked = found or shown
        elif not reveal and display:
            display, masked = mask_in_text(display)
            if masked:  # a structured answer holding an identifier: only its masked words
                value = display
        entry = {"key": item.key, "label": pick(dict(item.label), locale), "value": value,
                 "display": display}
        if masked:
            entry["masked"] = True
        out.append(entry)
    return out


def _display(item: FieldSpec, value: Any, locale: str) -> str:
    return field_type(item.type).display(item, value, locale)
