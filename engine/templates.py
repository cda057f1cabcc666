"""Message templates: the ``template`` kind, rendered with Jinja2 in a sandbox.

    kind: template
    key: discharge_care_day3
    title: {zh-CN: 出院第3天关怀, en: Day-3 care message}
    channels: [sms, wechat]
    variables: [patient_name, form_link]
    body:
      zh-CN: "{{ patient_name }}您好，出院已3天，请填写随访问卷：{{ form_link }}"
      en: "Dear {{ patient_name }}, please fill in your follow-up form: {{ form_link }}"

A body may use only its declared ``variables``; the sandbox refuses attribute tricks at render time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import CareloopError, did_you_mean

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

LOCALES = ("zh-CN", "en")


class TemplateRenderError(CareloopError):
    """Raised when a stored template cannot be rendered with the given values."""


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """A compiled message template."""

    key: str
    channels: tuple[str, ...]
    variables: frozenset[str]
    subject: Mapping[str, str]
    body: Mapping[str, str]

    def render(self, locale: str, values: Mapping[str, Any]) -> tuple[str | None, str]:
        """Render (subject, body) in ``locale``, falling back to the other language."""
        missing = sorted(self.variables - set(values))
        if missing:
            raise TemplateRenderError(f"template {self.key}: missing values for {missing}")
        body = _pick(self.body, locale)
        subject = _pick(self.subject, locale) if self.subject else None
        try:
            rendered = _ENV.from_string(body).render(dict(values))
            rendered_subject = (_ENV.from_string(subject).render(dict(values))
                                if subject is not None else None)
        except Exception as exc:  # jinja2 raises many types; the caller needs one
            raise TemplateRenderError(f"template {self.key}: {exc}") from exc
        return rendered_subject, rendered


def _pick(texts: Mapping[str, str], locale: str) -> str:
    if locale in texts:
        return texts[locale]
    for other in LOCALES:
        if other in texts:
            return texts[other]
    return next(iter(texts.values()))


def _check_text(definition: Definition, ctx: CompileContext, field: str,
                declared: set[str]) -> None:
    doc = definition.doc
    for locale, text in (definition.body.get(field) or {}).items():
        path = (field, locale)
        try:
            parsed = _ENV.parse(text)
        except TemplateSyntaxError as exc:
            ctx.add(doc.problem("template.syntax", f"template syntax error: {exc.message}", path))
            continue
        for name in sorted(meta.find_undeclared_variables(parsed) - declared):
            ctx.add(doc.problem("template.undeclared-variable",
                                f"'{name}' is used but not listed in 'variables'", path,
                                hint=did_you_mean(name, declared) or "add it to 'variables'"))


def compile_template(definition: Definition, ctx: CompileContext) -> TemplateSpec | None:
    """Check a template's bodies and build its spec."""
    body = definition.body
    declared = set(body.get("variables", []))
    _check_text(definition, ctx, "body", declared)
    _check_text(definition, ctx, "subject", declared)
    return TemplateSpec(
        key=definition.key,
        channels=tuple(body.get("channels", ())),
        variables=frozenset(declared),
        subject=MappingProxyType(dict(body.get("subject") or {})),
        body=MappingProxyType(dict(body["body"])),
    )
