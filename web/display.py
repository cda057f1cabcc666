"""What a person reads: every code as a label, every instant in hospital time, numbers rounded.

One display layer for the staff console's templates, its exports and the API's ``*_display``
fields:

- :func:`label` ``(kind, code, locale)`` resolves a code (a department, role, permission, task
  or answer status, tag, complaint category, channel, band, score, form, flow, rule set, rule,
  history or audit action, gender, outcome, user, app bundle, rule action…) from the
  definitions — their titles and labels, in the page's language —, from the title a registered
  type gives itself (a role, a channel type, an ``ActionSpec``), or from the message catalogues
  (``label.<kind>.<code>``).
  A :class:`Display` does the same for one rendered page and remembers what it looked up.
- :func:`local_time` ``(dt, style)`` is the one way an instant is written: the hospital's time
  zone (``CARELOOP_TIMEZONE``, default Asia/Shanghai), one format per style.
- :func:`number` rounds a score to its declared precision, a percentage to one decimal, a count
  to an integer.
- :func:`trace_sentences` writes a rule evaluation as sentences ("规则'不满意'命中：总体满意度 2 < 3
  → 为心内科护士长创建紧急待办").
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import TIMEZONE_ENV, hospital_tz, to_local
from careloop.engine.i18n import catalogue, normalise_locale, pick, t
from careloop.engine.registry import loaded_registry
from careloop.forms.fields import show_value

STYLES = {"datetime": "%Y-%m-%d %H:%M", "date": "%Y-%m-%d", "time": "%H:%M",
          "seconds": "%Y-%m-%d %H:%M:%S", "short": "%m-%d %H:%M"}


def as_instant(value: datetime | str | None) -> datetime | None:
    """An aware datetime from a datetime or an ISO text (a UTC ``Z`` accepted); else ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if value.tzinfo is None or value.utcoffset() is None:
        return None  # an instant without a zone would be a guess
    return value


def local_time(value: datetime | str | None, style: str = "datetime") -> str:
    """``value`` in the hospital's time zone, written in ``style`` (datetime | date | time |
    seconds | short | iso); ``""`` for no value.

    >>> from datetime import UTC
    >>> local_time(datetime(2026, 12, 4, 1, 31, tzinfo=UTC))
    '2026-12-04 09:31'
    >>> local_time("2026-12-04T01:31:00+00:00", "iso")
    '2026-12-04T09:31:00+08:00'
    """
    instant = as_instant(value)
    if instant is None:
        return ""
    local = to_local(instant)
    if style == "iso":
        return local.isoformat()
    return local.strftime(STYLES.get(style, STYLES["datetime"]))


def local_writer(style: str = "datetime") -> Callable[[datetime | None], str]:
    """:func:`local_time` for many values of one list: the hospital's time zone and the format
    resolved once (``written(value)`` is ``local_time(value, style)``)."""
    zone, fmt = hospital_tz(), STYLES.get(style, STYLES["datetime"])

    def written(value: datetime | None) -> str:
        if value is None:
            return ""
        if value.tzinfo is None or value.utcoffset() is None:
            return ""  # an instant without a zone would be a guess
        return value.astimezone(zone).strftime(fmt)
    return written


def time_tag(value: datetime | str | None, style: str = "datetime") -> Markup:
    """``<time datetime="…+08:00">2026-12-04 09:31</time>``: hospital time, machine-readable.

    The same instant is written the same way on every page (a list's due dates, page after
    page), so the tag is remembered per value, style and time zone (the last 4096)."""
    if value is None or value == "":
        return Markup("")
    return _time_tag(value, style, os.environ.get(TIMEZONE_ENV, ""))


@lru_cache(maxsize=4096)
def _time_tag(value: datetime | str, style: str, _zone_setting: str) -> Markup:
    instant = as_instant(value)
    if instant is None:
        return Markup("")
    local = to_local(instant)
    text = local.isoformat() if style == "iso" else local.strftime(
        STYLES.get(style, STYLES["datetime"]))
    # digits, dashes, colons and a space: nothing to escape
    return Markup(f'<time datetime="{local.isoformat()}">{text}</time>')


def number(value: Any, kind: str = "score", precision: int | None = None) -> str:
    """A number as a person reads it.

    >>> number(1.6666666666666667), number(1.0), number(87.25, "percent"), number(3.0, "count")
    ('1.7', '1', '87.3%', '3')
    >>> number(2.456, precision=2)
    '2.46'
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if kind == "count":
        return str(round(value))
    if kind == "percent":
        return f"{value:.1f}%"
    if precision is None:
        precision = 0 if float(value).is_integer() else 1
    return f"{value:.{precision}f}"


def _catalogued(kind: str, code: str, locale: str) -> str | None:
    for key in (f"web.label.{kind}.{code}", *_LEGACY.get(kind, ())):
        text = catalogue(locale).get(key.format(code=code)) or catalogue(
            "en" if locale != "en" else "zh-CN").get(key.format(code=code))
        if text is not None:
            return text
    return None


# The console's older message keys, read before a code is shown as it is.
_LEGACY: dict[str, tuple[str, ...]] = {
    "task_status": ("web.status.{code}",), "priority": ("web.priority.{code}",),
    "outcome": ("web.outcome.{code}",), "gender": ("web.gender.{code}",),
    "permission": ("web.perm.{code}",), "sla": ("web.sla.{code}",),
    "channel": ("web.channel.{code}",), "encounter_type": ("web.encounter.{code}",),
    "complaint_status": ("web.complaint.status.{code}",),
    "message_status": ("web.outbox.status.{code}",),
    "task_kind": ("reports.value.task_kind.{code}",),  # the dashboards' words for the same kinds
}


class Display:
    """Labels for one page (one locale); looks definitions up once per page.

    ``session`` is used when given; otherwise each first lookup opens a short read transaction.
    """

    def __init__(self, locale: str | None, session: Session | None = None, *,
                 departments: Mapping[str, Any] | None = None) -> None:
        self.locale = normalise_locale(locale) if locale not in ("zh-CN", "en") else locale
        self._session = session
        self._memo: dict[tuple[str, str, str], str] = {}
        self._specs: dict[tuple[str, str, int | None], Any] = {}
        # every department's name by id, when the page has read them already (none read again)
        self.departments = departments

    # -- reading the database ---------------------------------------------------------------
    def _read(self, fn: Callable[[Session], Any]) -> Any:
        if self._session is not None:
            return fn(self._session)
        from careloop.engine.db import transaction

        with transaction() as session:
            return fn(session)

    def spec(self, kind: str, key: str, version: int | None = None) -> Any:
        """The compiled definition (that version, else the current one), or ``None``."""
        memo = (kind, key, version)
        if memo not in self._specs:
            def load(session: Session) -> Any:
                from careloop.engine import store

                try:
                    row = (store.get_version(session, kind, key, version) if version
                           else store.current(session, kind, key)
                           or store.latest(session, kind, key))
                    return store.compile_row(row) if row is not None else None
                except Exception:
                    return None
            self._specs[memo] = self._read(load)
        return self._specs[memo]

    def _title(self, kind: str, key: str) -> str | None:
        def load(session: Session) -> dict[str, Any] | None:
            from careloop.engine import store

            row = store.current(session, kind, key) or store.latest(session, kind, key)
            return row.title if row is not None else None
        title = self._read(load)
        return pick(title, self.locale) if title else None

    # -- labels -----------------------------------------------------------------------------
    def label(self, kind: str, code: Any, **context: Any) -> str:
        """The words for ``code`` of ``kind``; ``""`` for no code. See the module doc."""
        if code is None or code == "":
            return ""
        text = code if type(code) is str else str(code)
        memo = (kind, text, repr(sorted(context.items())) if context else "")
        found = self._memo.get(memo)
        if found is None:
            found = self._memo[memo] = self._resolve(kind, text, context) or _fallback(text)
        return found

    def _resolve(self, kind: str, code: str, context: Mapping[str, Any]) -> str | None:
        resolver = _RESOLVERS.get(kind)
        found = resolver(self, code, context) if resolver is not None else None
        return found or _catalogued(kind, code, self.locale)

    def score(self, form: str, key: str, value: Any, version: int | None = None) -> str:
        """A score's value at the precision its form declares."""
        spec = self.spec("form", form, version)
        declared = next((s for s in getattr(spec, "scores", ()) if s.key == key), None)
        precision = getattr(declared, "precision", None)
        if precision is None and declared is not None and declared.method in ("sum", "count"):
            precision = 0
        return number(value, "score", precision)


def _fallback(code: str) -> str:
    """A code nothing names: its words, not its underscores (never an i18n key)."""
    return code.replace("_", " ")


def _department(d: Display, code: str, _: Mapping[str, Any]) -> str | None:
    from careloop.engine.domain import Department

    def load(session: Session) -> dict[str, Any] | None:
        row = session.get(Department, code)
        return row.name if row is not None else None
    name = d.departments.get(code) if d.departments is not None else d._read(load)
    return pick(name, d.locale) if name else None


def _registered(catalogue_name: str) -> Callable[[Display, str, Mapping[str, Any]], str | None]:
    """The ``title`` a registered type gives itself (a role, a channel type, a rule action's
    ``ActionSpec``): the type owns its words, as it owns its schema."""

    def resolve(d: Display, code: str, _: Mapping[str, Any]) -> str | None:
        found = loaded_registry().catalogue(catalogue_name)
        info = found.get(code) if code in found else None
        title = getattr(info, "title", None)
        return pick(title, d.locale) if isinstance(title, dict) and title else None
    return resolve


def _app(d: Display, code: str, _: Mapping[str, Any]) -> str | None:
    """An imported app bundle's name (``bundles.name``)."""
    from careloop.engine.models import BundleRow

    def load(session: Session) -> str | None:
        row = session.get(BundleRow, code)
        return pick(row.name, d.locale) if row is not None and row.name else None
    found: str | None = d._read(load)
    return found


def _definition(kind: str) -> Callable[[Display, str, Mapping[str, Any]], str | None]:
    def resolve(d: Display, code: str, _: Mapping[str, Any]) -> str | None:
        return d._title(kind, code)
    return resolve


def _user(d: Display, code: str, _: Mapping[str, Any]) -> str | None:
    from careloop.engine.domain import User

    def load(session: Session) -> str | None:
        row = (session.get(User, int(code)) if code.isdigit() and len(code) < 10
               else session.scalars(select(User).where(User.username == code)).first())
        return row.display_name if row is not None else None
    found: str | None = d._read(load)
    return found


_ACTOR = re.compile(r"^(rule|flow|ruleset):([A-Za-z0-9_\-]+)(?:/([A-Za-z0-9_\-]+))?$")


def _actor(d: Display, code: str, context: Mapping[str, Any]) -> str | None:
    """Who did something: a rule ("规则「满意度回访分流 · 不满意」"), the flows, the system, or a
    user by name."""
    found = _ACTOR.match(code)
    if found is not None:
        kind, key, rule = found.groups()
        if kind in ("rule", "ruleset"):
            name = d._title("ruleset", key) or key
            if rule:
                name = f"{name} · {d.label('rule', f'{key}/{rule}')}"
            return t("web.label.actor.rule", d.locale, name=name)
        return t("web.label.actor.flow", d.locale, name=d._title("flow", key) or key)
    if code.startswith("careloop "):  # a command an administrator ran ("careloop up")
        return t("web.label.actor.cli", d.locale, command=code)
    return _catalogued("actor", code, d.locale) or _user(d, code, context)


def _rule(d: Display, code: str, _: Mapping[str, Any]) -> str | None:
    ruleset, _sep, rule = code.partition("/")
    spec = d.spec("ruleset", ruleset)
    for item in getattr(spec, "rules", ()) or ():
        if getattr(item, "key", None) == rule:
            title = getattr(item, "title", None)
            return pick(title, d.locale) if title else None
    return None


def _form_part(d: Display, code: str, context: Mapping[str, Any]) -> Any:
    form = context.get("form")
    spec = d.spec("form", str(form), context.get("version")) if form else None
    return spec


def _score(d: Display, code: str, context: Mapping[str, Any]) -> str | None:
    spec = _form_part(d, code, context)
    found = next((s for s in getattr(spec, "scores", ()) if s.key == code), None)
    return pick(found.label, d.locale) if found is not None and found.label else None


def _band(d: Display, code: str, context: Mapping[str, Any]) -> str | None:
    spec = _form_part(d, code, context)
    for score in getattr(spec, "scores", ()):
        if context.get("score") not in (None, score.key):
            continue
        for band in score.bands:
            if band.code == code:
                return pick(band.label, d.locale)
    return None


def _field(d: Display, code: str, context: Mapping[str, Any]) -> str | None:
    spec = _form_part(d, code, context)
    found = spec.field(code) if spec is not None else None
    return pick(found.label, d.locale) if found is not None and found.label else None


def _choice(d: Display, code: str, context: Mapping[str, Any]) -> str | None:
    """An answer's code as the choice's label: ``context`` names the form and the field."""
    spec = _form_part(d, code, context)
    found = spec.field(str(context.get("field"))) if spec is not None else None
    choice = found.choice(code) if found is not None else None
    return pick(choice.label, d.locale) if choice is not None else None


def _category(d: Display, code: str, context: Mapping[str, Any]) -> str | None:
    """A feedback category: its title in the text-classification dictionaries (or, with
    ``form``/``field`` in ``context``, the complaint form's choice)."""
    if context.get("form") and context.get("field"):
        return _choice(d, code, context)

    def load(session: Session) -> list[str]:
        from careloop.engine import store

        return [r.key for r in store.list_current(session, kind="dictionary")]
    for key in d._read(load):
        spec = d.spec("dictionary", key)
        for category in getattr(spec, "categories", ()) or ():
            if getattr(category, "key", None) == code and getattr(category, "title", None):
                return pick(category.title, d.locale)
    return None


_RESOLVERS: dict[str, Callable[[Display, str, Mapping[str, Any]], str | None]] = {
    "department": _department, "ward": _department, "role": _registered("role"),
    "channel": _registered("channel"), "rule_action": _registered("action"), "app": _app,
    "definition_kind": _registered("kind"),
    "form": _definition("form"), "flow": _definition("flow"),
    "ruleset": _definition("ruleset"), "template": _definition("template"),
    "touchpoint": _definition("touchpoint"), "education": _definition("education"),
    "user": _user, "actor": _actor, "rule": _rule, "score": _score, "band": _band,
    "field": _field, "choice": _choice, "category": _category,
}


def label(kind: str, code: Any, locale: str | None, **context: Any) -> str:
    """The words for one code (see :class:`Display`); for a page, use its ``label`` global."""
    return Display(locale).label(kind, code, **context)


def answer_text(d: Display, form: str, version: int | None, key: str, value: Any) -> str:
    """A submitted answer in words: choices as their labels, yes/no, a blood pressure."""
    spec = d.spec("form", form, version)
    found = spec.field(key) if spec is not None else None
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, bool):
        return t("common.yes" if value else "common.no", d.locale)
    if isinstance(value, list):
        return "、".join(answer_text(d, form, version, key, v) for v in value)
    if isinstance(value, dict):
        if "systolic" in value:
            return f"{number(value.get('systolic'))}/{number(value.get('diastolic'))} mmHg"
        if "value" in value:
            return f"{number(value.get('value'))} {value.get('unit') or ''}".strip()
        return ", ".join(f"{d.label('field', k, form=f'{form}', version=version) or k}: "
                         f"{answer_text(d, form, version, f'{key}.{k}', v)}"
                         for k, v in value.items())
    if found is not None:
        choice = found.choice(value)
        if choice is not None:
            return pick(choice.label, d.locale)
        ftype = loaded_registry().catalogue("field_type").get(found.type)
        if ftype is not None and ftype.shower is not show_value:
            return str(ftype.display(found, value, d.locale))  # the type's own words (yes / no…)
        if found.type == "datetime":
            return local_time(value if isinstance(value, str) and as_instant(value)
                              else None) or str(value)
    if isinstance(value, int | float):
        return number(value)
    return str(value)


def answers_view(d: Display, form: str, version: int | None,
                 answers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(question, answer)`` pairs in the form's order, labelled by that form version."""
    spec = d.spec("form", form, version)
    keys = [f.key for f in getattr(spec, "fields", ()) if f.key in answers] if spec else []
    keys += [k for k in answers if k not in keys and not k.startswith("_")]
    out = []
    for key in keys:
        text = answer_text(d, form, version, key, answers[key])
        if text:
            out.append((d.label("field", key, form=form, version=version), text))
    return out


def trace_sentences(d: Display, trace: Mapping[str, Any]) -> list[str]:
    """A rule evaluation in words: one sentence per rule that matched, what it saw and did.

    "规则「不满意」命中：总体满意度 2 < 3 → 为心内科护士长创建紧急待办"
    """
    ruleset = str(trace.get("ruleset") or "")
    if trace.get("error"):
        return [t("web.label.trace.failed", d.locale, ruleset=d.label("ruleset", ruleset))]
    actions_by_rule: dict[str, list[str]] = {}
    for action in trace.get("actions") or []:
        if isinstance(action, Mapping):
            actions_by_rule.setdefault(str(action.get("rule")), []).append(
                action_sentence(d, action))
    spec = d.spec("ruleset", ruleset, trace.get("version"))
    whens = {r.key: r.when.source for r in getattr(spec, "rules", ()) or ()}
    forms = tuple(getattr(spec, "forms", ()) or ())
    answered = _submission_form(d, trace.get("submission_id"))
    if answered:  # the questions as the patient read them
        forms = (answered, *(f for f in forms if f != answered))
    sentences = []
    for matched in trace.get("matched") or []:
        if not isinstance(matched, Mapping):
            continue
        rule = str(matched.get("rule"))
        values = dict(matched.get("values") or {})
        seen = _comparison(d, forms, whens.get(rule, ""), values) or "，".join(
            f"{_name(d, forms, k)} {_value(d, forms, k, v)}" for k, v in values.items())
        did = "；".join(actions_by_rule.get(rule, [])) or t("web.label.trace.nothing", d.locale)
        sentences.append(t("web.label.trace.matched", d.locale,
                           rule=d.label("rule", f"{ruleset}/{rule}"),
                           seen=seen or "—", did=did))
    if not sentences:
        sentences.append(t("web.label.trace.none", d.locale, ruleset=d.label("ruleset", ruleset)))
    return sentences


def _submission_form(d: Display, submission_id: Any) -> str | None:
    if not isinstance(submission_id, int):
        return None

    def load(session: Session) -> str | None:
        from careloop.forms.models import Submission

        found = session.get(Submission, submission_id)
        return found.form_key if found is not None else None
    form: str | None = d._read(load)
    return form


_SIMPLE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*(-?[0-9.]+|'[^']*')\s*$")
_OPS = {"==": "=", "!=": "≠", "<=": "≤", ">=": "≥", "<": "<", ">": ">"}


def _comparison(d: Display, forms: tuple[str, ...], when: str,
                values: Mapping[str, Any]) -> str | None:
    """``answers.overall < 3`` seen with 2 → "总体满意度 2 < 3" (simple comparisons only)."""
    found = _SIMPLE.match(when)
    if found is None or found.group(1) not in values:
        return None
    name, op, literal = found.groups()
    shown = (_value(d, forms, name, literal.strip("'")) if literal.startswith("'")
             else literal)
    return (f"{_name(d, forms, name)} {_value(d, forms, name, values[name])} "
            f"{_OPS[op]} {shown}")


def _name(d: Display, forms: tuple[str, ...], name: str) -> str:
    """``answers.overall`` → the field's label in the rule set's forms ("总体满意度")."""
    key = name.split(".", 1)[1] if name.startswith("answers.") else name
    for form in forms:
        found = d._resolve("field", key, {"form": form})
        if found:
            return found
    return _catalogued("name", name, d.locale) or _fallback(key.rsplit(".", 1)[-1])


def _value(d: Display, forms: tuple[str, ...], name: str, value: Any) -> str:
    key = name.split(".", 1)[1] if name.startswith("answers.") else name
    if isinstance(value, str):
        for form in forms:
            spec = d.spec("form", form)
            if spec is not None and spec.field(key) is not None:
                return answer_text(d, form, None, key, value)
    if isinstance(value, list):
        return "、".join(_value(d, forms, name, v) for v in value) or "—"
    if name.startswith("classification.") and isinstance(value, str):
        return d.label("category", value)
    if name == "patient.tags" and isinstance(value, str):
        return d.label("tag", value)
    return number(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else ("—" if value is None else str(value))


def action_sentence(d: Display, action: Mapping[str, Any]) -> str:
    """One action of a trace in words ("为心内科护士长创建紧急待办", "标签：用药指导反馈")."""
    do = str(action.get("do") or "")
    result = action.get("result")
    info = result if isinstance(result, Mapping) else {}
    params = {"tag": d.label("tag", info.get("tag")),
              "status": d.label("status", info.get("status")),
              "role": d.label("role", info.get("assignee_role") or info.get("role")),
              "department": d.label("department", info.get("department_id")
                                    or info.get("department")),
              "priority": d.label("priority", info.get("priority")),
              "title": str(info.get("title") or "")}
    key = f"web.label.do.{do}"
    if key in catalogue(d.locale):
        return t(key, d.locale, **params)
    return d.label("rule_action", do)
