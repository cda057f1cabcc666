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

import contextvars
import functools
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import CareloopError, did_you_mean
from careloop.engine.limits import LIMITS, LimitExceeded

_STEPS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("template_steps",
                                                                           default=None)
_PERCENT_WIDTH = re.compile(r"%[#0\- +]*(\d*)(?:\.(\d+))?")
_DIGITS = re.compile(r"\d+")
# Compiled template texts kept by BoundedSandbox.compiled (the distinct texts of the installed
# templates: bodies, subjects, provider strings, in each locale).
_COMPILED_KEEP = 2048


def _too_large(message: str, limit: str = "template_items") -> LimitExceeded:
    return LimitExceeded("template.too-large", message, limit=limit,
                         hint="message templates are for short texts: keep loops, repetition "
                              "and field widths small")


def _charge(steps: int = 1) -> None:
    """Count loop iterations and calls of the rendering under way (see :meth:`render`)."""
    budget = _STEPS.get()
    if budget is None:
        return
    budget[0] += steps
    if budget[0] > LIMITS.template_steps:
        raise _too_large(f"the template did more than {LIMITS.template_steps:,} loop iterations "
                         "and calls", "template_steps")


def _check_int(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) \
            and abs(value) > LIMITS.template_output:
        raise _too_large(f"the number {value} is too large for a template argument "
                         f"(at most {LIMITS.template_output:,})", "template_output")


def _check_widths(text: str, *, percent: bool) -> None:
    """Refuse ``'%999999999d'`` and ``'{:>999999999}'`` (a field width builds that much text)."""
    widths: list[str] = []
    if percent:
        for match in _PERCENT_WIDTH.finditer(text):
            widths.extend(g for g in match.groups() if g)
    else:
        try:
            for _, _, spec, _ in string.Formatter().parse(text):
                widths.extend(_DIGITS.findall(spec or ""))
        except ValueError:
            return  # the format call itself reports the bad format
    for width in widths:
        if len(width) > 12 or int(width) > LIMITS.template_output:
            raise _too_large(f"a field width of {width} in '{text[:40]}' is too large "
                             f"(at most {LIMITS.template_output:,})", "template_output")


def _bounded_range(*args: int) -> Iterator[int]:
    for arg in args:
        _check_int(arg)
    numbers = range(*args)
    if len(numbers) > LIMITS.template_items:
        raise _too_large(f"range() of {len(numbers):,} numbers (at most "
                         f"{LIMITS.template_items:,})")
    for number in numbers:
        _charge()
        yield number


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def apply(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _check_int(value)
        if name == "format" and args:
            for value in args:
                if isinstance(value, str):
                    _check_widths(value, percent=True)
                    break
        _charge()
        return func(*args, **kwargs)

    return apply


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with bounds on what a template can make the server do.

    ``**``, ``*``, ``+`` and ``%`` are checked before they run (no ``7**9999999``, no
    ``'a' * 10**9``, no ``'%999999999d'``); ``range`` gives at most ``LIMITS.template_items``
    numbers; loop iterations and calls (macros too) of one :meth:`render` count against
    ``LIMITS.template_steps``; the output stops at ``LIMITS.template_output`` characters.
    ``namespace`` and ``lipsum`` are not offered (a namespace would let a loop double a text).
    Every refusal is a :class:`~careloop.engine.limits.LimitExceeded` (``template.too-large``).
    """

    intercepted_binops = frozenset({"**", "*", "+", "%", "//"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("namespace", None)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self._compiled: dict[str, Template] = {}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _charge()
        numbers = (int, float)
        if operator == "**" and isinstance(left, numbers) and isinstance(right, numbers):
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0 \
                    and right * (abs(left).bit_length() - 1) > LIMITS.expr_integer.bit_length():
                raise _too_large(f"'**' result larger than {LIMITS.expr_integer:.0e}",
                                 "expr_integer")
        elif operator == "*":
            seq, n = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if isinstance(seq, str | list | tuple) and isinstance(n, int):
                limit = "template_output" if isinstance(seq, str) else "template_items"
                cap: int = getattr(LIMITS, limit)
                if n * len(seq) > cap:
                    raise _too_large(f"'*' would build {n * len(seq):,} items (at most {cap:,})",
                                     limit)
            elif isinstance(left, int) and isinstance(right, int) \
                    and left.bit_length() + right.bit_length() > 256:
                raise _too_large("'*' result too large", "expr_integer")
        elif operator == "+" and isinstance(left, str | list | tuple) \
                and isinstance(right, str | list | tuple) \
                and len(left) + len(right) > LIMITS.template_output:
            raise _too_large(f"'+' would build more than {LIMITS.template_output:,} items",
                             "template_output")
        elif operator == "%" and isinstance(left, str):
            _check_widths(left, percent=True)
            for value in right if isinstance(right, tuple) else (right,):
                _check_int(value)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        _charge(10 if isinstance(__obj, Macro) else 1)  # a macro call costs ~10 loop turns
        for value in (*args, *kwargs.values()):
            _check_int(value)
        wrapped = getattr(__obj, "__wrapped__", None)
        owner = getattr(wrapped, "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", "") in ("format", "format_map"):
            _check_widths(owner, percent=False)
        return super().call(__context, __obj, *args, **kwargs)

    def compiled(self, source: str) -> Template:
        """``source`` compiled once: kept in a bounded cache (a stored template's text renders
        every message of its kind; compiling is pure, a compiled template renders re-entrantly).
        """
        found = self._compiled.get(source)
        if found is None:
            found = self.from_string(source)
            if len(self._compiled) >= _COMPILED_KEEP:
                self._compiled.clear()  # rare: templates are few; start over, stay bounded
            self._compiled[source] = found
        return found

    def render(self, source: str, values: Mapping[str, Any]) -> str:
        """``source`` rendered with ``values`` within the bounds (raises ``LimitExceeded``)."""
        token = _STEPS.set([0])
        try:
            out: list[str] = []
            size = 0
            for chunk in self.compiled(source).generate(dict(values)):
                size += len(chunk)
                if size > LIMITS.template_output:
                    raise _too_large(f"the template wrote more than {LIMITS.template_output:,} "
                                     "characters", "template_output")
                out.append(chunk)
            return "".join(out)
        finally:
            _STEPS.reset(token)


_ENV = BoundedSandbox(undefined=StrictUndefined, autoescape=False)

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
    # channel type name → its entry (strings are templates rendered like the body)
    providers: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}))

    def render_providers(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every provider entry with its strings rendered (lists and objects kept)."""
        try:
            return {name: _render_tree(entry, values) for name, entry in self.providers.items()}
        except LimitExceeded:
            raise
        except Exception as exc:  # jinja2 raises many types; the caller needs one
            raise TemplateRenderError(f"template {self.key}: {exc}") from exc

    def render(self, locale: str, values: Mapping[str, Any]) -> tuple[str | None, str]:
        """Render (subject, body) in ``locale``, falling back to the other language."""
        missing = sorted(self.variables - set(values))
        if missing:
            raise TemplateRenderError(f"template {self.key}: missing values for {missing}")
        body = _pick(self.body, locale)
        subject = _pick(self.subject, locale) if self.subject else None
        try:
            rendered = _ENV.render(body, values)
            rendered_subject = _ENV.render(subject, values) if subject is not None else None
        except LimitExceeded:
            raise
        except Exception as exc:  # jinja2 raises many types; the caller needs one
            raise TemplateRenderError(f"template {self.key}: {exc}") from exc
        return rendered_subject, rendered


def _render_tree(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _ENV.render(value, values) if "{" in value else value
    if isinstance(value, Mapping):
        return {str(k): _render_tree(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render_tree(v, values) for v in value]
    return value


Where = tuple[str | int, ...]


def _strings(value: Any, path: Where) -> Iterator[tuple[Where, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _check_syntax(definition: Definition, ctx: CompileContext, text: str,
                  path: tuple[str | int, ...], declared: set[str]) -> None:
    doc = definition.doc
    try:
        parsed = _ENV.parse(text)
    except TemplateSyntaxError as exc:
        ctx.add(doc.problem("template.syntax", f"template syntax error: {exc.message}", path))
        return
    for name in sorted(meta.find_undeclared_variables(parsed) - declared):
        ctx.add(doc.problem("template.undeclared-variable",
                            f"'{name}' is used but not listed in 'variables'", path,
                            hint=did_you_mean(name, declared) or "add it to 'variables'"))


def _check_providers(definition: Definition, ctx: CompileContext, declared: set[str]) -> None:
    """Each provider entry: a registered channel type that takes templates, its own schema
    (the channel type checks it), and template strings using only the declared variables."""
    from careloop.engine.registry import loaded_registry

    doc = definition.doc
    adapters = loaded_registry().catalogue("channel_adapter")
    for name, entry in (definition.body.get("providers") or {}).items():
        path: tuple[str | int, ...] = ("providers", name)
        adapter = adapters.get(name)
        check = getattr(adapter, "check_template", None)
        if adapter is None or check is None:
            known = [n for n in adapters.names()
                     if getattr(adapters.get(n), "template_schema", None) is not None]
            ctx.add(doc.problem("template.unknown-provider",
                                f"no channel type '{name}' takes provider templates", path,
                                hint=did_you_mean(name, known) or (
                                    f"channel types with templates: {', '.join(known)}"
                                    if known else "no channel type with templates is installed")))
            continue
        for problem in check(entry, path):
            ctx.add(doc.problem(problem.code, problem.message, problem.path))
        for at, text in _strings(entry, path):
            _check_syntax(definition, ctx, text, at, declared)


def _pick(texts: Mapping[str, str], locale: str) -> str:
    if locale in texts:
        return texts[locale]
    for other in LOCALES:
        if other in texts:
            return texts[other]
    return next(iter(texts.values()))


def _check_text(definition: Definition, ctx: CompileContext, field: str,
                declared: set[str]) -> None:
    for locale, text in (definition.body.get(field) or {}).items():
        _check_syntax(definition, ctx, text, (field, locale), declared)


def compile_template(definition: Definition, ctx: CompileContext) -> TemplateSpec | None:
    """Check a template's bodies and build its spec."""
    body = definition.body
    declared = set(body.get("variables", []))
    _check_text(definition, ctx, "body", declared)
    _check_text(definition, ctx, "subject", declared)
    _check_providers(definition, ctx, declared)
    return TemplateSpec(
        key=definition.key,
        channels=tuple(body.get("channels", ())),
        variables=frozenset(declared),
        subject=MappingProxyType(dict(body.get("subject") or {})),
        body=MappingProxyType(dict(body["body"])),
        providers=MappingProxyType({str(k): MappingProxyType(dict(v)) for k, v in
                                    (body.get("providers") or {}).items()
                                    if isinstance(v, Mapping)}),
    )
