"""The rule editor's "try it" (试一试) in words: a real recent submission the user may see (or
the form's own preview), run through a draft rule set, explained per rule.

    recent_submissions(session, me, forms)   the offered answers: form title, masked name,
                                             local time (scoped as the staff pages are)
    explain(session, spec, payload)          per rule: hit (its actions in words) or miss with
                                             the reason — the form filtered out ("本规则只看
                                             住院满意度问卷"), or the clause that failed with
                                             the value seen ("总体满意度 是 4，条件要 ≤ 2")

Nothing is stored: the caller rolls its transaction back (a dry run of the rule engine).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from careloop.engine.expressions import compile_expression
from careloop.engine.i18n import pick, t
from careloop.rules.spec import RuleSetSpec, RuleSpec, watched_paths
from careloop.web.display import Display, _name, _value, local_time
from careloop.web.permissions import (
    PATIENT_VIEW,
    Principal,
    hidden_encounters,
    hidden_stays,
    visible_patient_filter,
)
from careloop.web.stage_summary import mask_name

RECENT = 20  # submissions offered
_OPS = {ast.Lt: "<", ast.LtE: "≤", ast.Gt: ">", ast.GtE: "≥", ast.Eq: "=", ast.NotEq: "≠"}


# --- what may be tried: the user's recent, scoped submissions --------------------------------


def recent_submissions(session: Session, me: Principal, forms: list[str], locale: str,
                       limit: int = RECENT) -> list[dict[str, Any]]:
    """The newest submissions of ``forms`` the user may see — the patient in scope, no stay
    in a sensitive department that is not theirs, an anonymous answer's department in scope —
    each as ``id``, ``form``, ``text`` ("住院满意度问卷 · 张** · 2026-12-07 09:30")."""
    from careloop.engine.domain import Patient
    from careloop.forms.models import Submission

    if not forms or not me.can(PATIENT_VIEW):
        return []
    query = select(Submission).where(Submission.form_key.in_(forms))
    visible = visible_patient_filter(me)
    if visible is not None:
        query = query.where(or_(Submission.patient_id.in_(visible),
                                (Submission.patient_id.is_(None)
                                 & Submission.department_id.in_(me.scope or ()))))
    query = query.where(or_(Submission.encounter_id.is_(None),
                            Submission.encounter_id.not_in(hidden_encounters(me))))
    rows = session.scalars(query.order_by(Submission.submitted_at.desc(), Submission.id.desc())
                           .limit(limit)).all()
    names = {p.id: p.name for p in session.scalars(select(Patient).where(
        Patient.id.in_({r.patient_id for r in rows if r.patient_id})))}
    d = Display(locale, session)
    out = []
    for row in rows:
        who = mask_name(names.get(row.patient_id or "")) or t("builder.tryit.anonymous", locale)
        text = " · ".join((d.label("form", row.form_key), who, local_time(row.submitted_at)))
        out.append({"id": row.id, "form": row.form_key, "text": text})
    return out


def submission_payload(session: Session, me: Principal, submission_id: int) -> dict[str, Any]:
    """The ``form.submitted`` payload of a submission the user may see; ``LookupError`` when
    there is none or it is outside the user's scope (the same answer: nothing is revealed)."""
    from careloop.forms.models import Submission
    from careloop.forms.runtime import event_payload
    from careloop.web.routes_forms import submission_visible

    sub = session.get(Submission, submission_id)
    if sub is None or not submission_visible(session, me, sub):
        raise LookupError(submission_id)
    if sub.patient_id is not None and hidden_stays(session, me, sub.patient_id).hides(
            sub.encounter_id, sub.department_id):
        raise LookupError(submission_id)
    return event_payload(sub)


def preview_payload(session: Session, form: str, inputs: Mapping[str, Any],
                    locale: str) -> dict[str, Any]:
    """A ``form.submitted`` payload from the form preview's inputs (``name`` → values, as a
    page post), read and scored by the form engine as the patient's page would be."""
    from careloop.engine import store
    from careloop.forms.logic import evaluate
    from careloop.forms.pages import pages_of, read_page
    from careloop.forms.spec import FormSpec

    row = store.current(session, "form", form)
    if row is None:
        raise LookupError(form)
    spec = store.compile_row(row, FormSpec)
    posted = {str(k): v if isinstance(v, list) else [v] for k, v in inputs.items()}
    answers: dict[str, Any] = {}
    for page in range(len(pages_of(spec))):
        answers.update({k: v for k, v in read_page(spec, page, posted).items() if v is not None})
    done = evaluate(spec, answers, locale=locale, pages=())
    return {"form": form, "form_version": row.version, "answers": done.answers,
            "scores": done.scores, "bands": done.bands, "channel": "web"}


def posted_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """A hand-written test event's payload (a bare payload is a ``form.submitted`` one); the
    ids of stored rows are dropped: a posted event never reads a patient's data."""
    from careloop.rules.runtime import _check_payload

    payload = event.get("payload", event) if "type" in event or "payload" in event else event
    _check_payload(payload)
    return {k: v for k, v in dict(payload).items()
            if k not in ("patient_id", "encounter_id", "task_id", "submission_id")}


# --- the explanation ----------------------------------------------------------------------------


def explain(session: Session, spec: RuleSetSpec, payload: Mapping[str, Any], locale: str,
            event_type: str = "form.submitted") -> dict[str, Any]:
    """Each rule of the draft, in evaluation order: ``key``, ``title``, ``hit``, ``text`` (the
    sentence), ``actions`` (a hit's actions in words); and the dry run's ``matched`` and
    ``actions`` (the advanced view)."""
    from careloop.rules.runtime import build_context, evaluate

    d = Display(locale, session)
    form = str(payload.get("form") or "")
    forms = (form, *(f for f in spec.forms if f != form)) if form else spec.forms
    outcome = evaluate(session, spec, 0, event_id="builder-try", event_type=event_type,
                       payload=payload, dry_run=True)
    context, _ = build_context(session, event_type, payload)
    if outcome.applies and spec.classify is not None:
        from careloop.rules.runtime import _classify

        _classify(session, spec, context, {"patient_id": None, "submission_id": None},
                  "builder-try", store_it=False)
    matched = {m["rule"] for m in outcome.matched}
    did: dict[str, list[str]] = {}
    for rule in spec.rules:
        if rule.key in matched:
            did[rule.key] = [action_words(d, call.do, call.options, a)
                             for call, a in zip(rule.then, [x for x in outcome.actions
                                                            if x["rule"] == rule.key],
                                                strict=False)]
    miss_all = None
    if event_type not in spec.on:
        miss_all = t("builder.tryit.miss_event", locale, events="、".join(
            d.label("event", e) for e in sorted(spec.on)))
    elif not outcome.applies:
        if spec.forms and form not in spec.forms:
            miss_all = t("builder.tryit.miss_form", locale, forms="、".join(
                d.label("form", f) for f in spec.forms))
        else:
            reason = clause_words(d, forms, spec.filter.tree.body, context) \
                if spec.filter is not None else ""
            miss_all = t("builder.tryit.miss_filter", locale, reason=reason)
    first_hit = None
    rules = []
    for rule in spec.rules:
        title = (pick(dict(rule.title), locale) if rule.title
                 else t("builder.tryit.untitled", locale))
        if miss_all is not None:
            hit, text = False, miss_all
        elif rule.key in matched:
            hit = True
            text = t("builder.tryit.hit", locale, actions="；".join(did[rule.key])
                     or t("web.label.trace.nothing", locale))
            first_hit = first_hit or title
        elif _holds(rule, context):
            hit, text = False, t("builder.tryit.miss_first", locale, rule=first_hit or "—")
        else:
            hit, text = False, t("builder.tryit.miss_clause", locale,
                                 reason=clause_words(d, forms, rule.when.tree.body, context))
        rules.append({"key": rule.key, "title": title, "hit": hit, "text": text,
                      "actions": did.get(rule.key, [])})
    return {"rules": rules, "applies": outcome.applies, "matched": outcome.matched,
            "actions": outcome.actions}


def _holds(rule: RuleSpec, context: Mapping[str, Any]) -> bool:
    try:
        return bool(rule.test(context))
    except Exception:  # an error in a condition: it did not hold
        return False


def _value_of(node: ast.AST, context: Mapping[str, Any]) -> Any:
    try:
        return compile_expression(ast.unparse(node)).evaluate(context)
    except Exception:
        return None


def _path(node: ast.AST) -> str | None:
    """``answers.overall`` (or a one-argument call around it: ``number(answers.q9)``)."""
    if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
        return _path(node.args[0])
    parts: list[str] = []
    while isinstance(node, ast.Attribute | ast.Subscript):
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
        elif isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str | int):
            parts.append(str(node.slice.value))
        else:
            return None
        node = node.value
    if isinstance(node, ast.Name) and parts:
        return ".".join([node.id, *reversed(parts)])
    return None


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return False, None


def clause_words(d: Display, forms: tuple[str, ...], node: ast.AST,
                 context: Mapping[str, Any]) -> str:
    """Why a condition did not hold, in words: the clause that failed and the value seen."""
    loc = d.locale
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        for part in node.values:
            if not _value_of(part, context):
                return clause_words(d, forms, part, context)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
        return t("builder.tryit.none_of", loc).join(clause_words(d, forms, p, context)
                                            for p in node.values)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, op, right = node.left, node.ops[0], node.comparators[0]
        if isinstance(op, ast.In | ast.NotIn):
            path, (is_lit, lit) = _path(right), _literal(left)
            if path is not None and is_lit:
                key = "in" if isinstance(op, ast.In) else "not_in"
                return t(f"builder.tryit.clause_{key}", loc, name=_name(d, forms, path),
                         actual=_shown(d, forms, path, context),
                         wanted=_value(d, forms, path, lit))
            path, (is_lit, lit) = _path(left), _literal(right)
            if path is not None and is_lit and isinstance(lit, list | tuple):
                return t("builder.tryit.clause_one_of", loc, name=_name(d, forms, path),
                         actual=_shown(d, forms, path, context),
                         wanted="、".join(_value(d, forms, path, v) for v in lit))
        path, (is_lit, lit) = _path(left), _literal(right)
        if path is not None and is_lit and type(op) in _OPS:
            return t("builder.tryit.clause", loc, name=_name(d, forms, path),
                     actual=_shown(d, forms, path, context), op=_OPS[type(op)],
                     wanted=_value(d, forms, path, lit))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == "contains" and len(node.args) == 2:
        path, (is_lit, lit) = _path(node.args[0]), _literal(node.args[1])
        if path is not None and is_lit:
            return t("builder.tryit.clause_mentions", loc, name=_name(d, forms, path),
                     actual=_shown(d, forms, path, context), wanted=str(lit))
    # any other shape: what the clause read, with the values seen
    paths = watched_paths(compile_expression(ast.unparse(node)))
    seen_values = "，".join(t("builder.tryit.seen", loc, name=_name(d, forms, p),
                             actual=_shown(d, forms, p, context)) for p in paths)
    return t("builder.tryit.clause_other", loc, seen=seen_values or "—")


def _shown(d: Display, forms: tuple[str, ...], path: str, context: Mapping[str, Any]) -> str:
    from careloop.rules.spec import lookup

    value = lookup(context, path)
    if value is None or value == "" or value == []:
        return t("builder.tryit.unanswered", d.locale)
    return _value(d, forms, path, value)


# --- actions in words ---------------------------------------------------------------------------


def due_words(due: Any, locale: str) -> str:
    """``{hours: 4}`` → "4 小时内"; ``{working_days: 2}`` → "2 个工作日内"."""
    if not isinstance(due, Mapping):
        return ""
    if due.get("hours") is not None:
        return t("builder.tryit.due_hours", locale, n=_n(due["hours"]))
    if due.get("working_days") is not None:
        return t("builder.tryit.due_working_days", locale, n=_n(due["working_days"]))
    return ""


def _n(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def action_words(d: Display, do: str, options: Mapping[str, Any],
                 done: Mapping[str, Any] | None = None) -> str:
    """One action of a hit in words: "护士长 紧急待办「不满意回访：总体满意度 2 分」，4 小时内"."""
    from careloop.engine.registry import loaded_registry

    loc = d.locale
    would = (done or {}).get("would") or {}
    if do in ("create_task", "cc"):
        assignee = options.get("assignee") if do == "create_task" else options
        assignee = assignee if isinstance(assignee, Mapping) else {}
        who = " ".join(x for x in (
            d.label("department", assignee.get("department")),
            d.label("role", assignee.get("role")),
            d.label("relation", assignee.get("relation")) if assignee.get("relation") else "",
        ) if x) or t("builder.tryit.someone", loc)
        priority = options.get("priority") or ("normal" if do == "create_task" else "")
        title = would.get("title") if isinstance(would.get("title"), str) else ""
        text = t("builder.tryit.task" if do == "create_task" else "builder.tryit.cc", loc, who=who,
                 priority=d.label("priority_adj", priority) if priority else "",
                 title=title).replace("「」", "").strip()
        due = due_words(options.get("due"), loc)
        return f"{text}，{due}" if due else text
    if do in ("tag", "untag"):
        return t(f"web.label.do.{do}", loc, tag=d.label("tag", options.get("tag")))
    if do == "set_status":
        return t("web.label.do.set_status", loc, status=d.label("status", options.get("status")))
    if do == "start_flow" and options.get("flow"):
        return t("builder.tryit.start_flow", loc, flow=d.label("flow", options.get("flow")))
    if do == "notify" and options.get("template"):
        return t("builder.tryit.notify", loc, template=d.label("template", options.get("template")),
                 channel=d.label("channel", options.get("channel")))
    spec = loaded_registry().catalogue("action").get(do)
    return pick(spec.title, loc) if spec is not None else d.label("action", do)
