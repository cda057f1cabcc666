"""Built-in actions of a rule's ``then``, each with a JSON Schema for its options.

Actions live in ``registry.catalogue("action")`` as :class:`ActionSpec`; an extension registers
more the same way. Every action writes through the caller's session, so a rule's effects and its
evaluation record commit together. Idempotency keys derive from (rule set, rule, event, action
index), so re-running the same event never repeats an effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jinja2 import ChainableUndefined
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.domain import Patient, PatientTag, Task
from careloop.engine.registry import Registry, loaded_registry
from careloop.engine.services import (
    FLOWS_START,
    NOTIFY_RESULTS,
    OUTBOX_ENQUEUE,
    SEND_EDUCATION,
    SET_SUBMISSION_STATUS,
    ServiceKey,
    find_service,
)
from careloop.engine.tasks import (
    PRIORITIES,
    RELATIONS,
    create_task,
    due_at,
    escalate_task,
    resolve_assignee,
)
from careloop.engine.templates import BoundedSandbox
from careloop.rules.spec import CONTEXT_NAMES, RuleRuntimeError, lookup


def _shown(value: Any) -> Any:
    """A whole number as people write it: scores are floats (a PHQ-9 total of 10 is ``10.0``),
    but a task title says ``总分 10``, not ``总分 10.0``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_ENV = BoundedSandbox(undefined=ChainableUndefined, autoescape=False, finalize=_shown)


@dataclass(slots=True)
class ActionContext:
    """Where an action runs: the event, the evaluation context and the session."""

    session: Session
    ruleset: str
    version: int
    rule: str
    index: int
    event_id: str
    event_type: str
    context: Mapping[str, Any]
    patient_id: str | None = None
    encounter_id: str | None = None
    submission_id: int | None = None
    task_id: int | None = None
    locale: str = "zh-CN"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"rule:{self.ruleset}/{self.rule}"

    @property
    def source_ref(self) -> str:
        return f"ruleset:{self.ruleset}@{self.version}/{self.rule}"

    def key(self, suffix: str = "") -> str:
        return f"rule:{self.ruleset}:{self.rule}:{self.event_id}:{self.index}{suffix}"

    def render(self, template: object) -> str:
        if isinstance(template, Mapping):
            template = template.get(self.locale) or next(iter(template.values()), "")
        return _ENV.render(str(template), self.context)


ActionRun = Callable[[ActionContext, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """A registered action: its options schema, what it references, and how it runs."""

    name: str
    title: dict[str, str]
    schema: dict[str, Any]
    run: ActionRun
    references: tuple[tuple[str, str], ...] = ()  # (option name, kind of definition)
    templates: tuple[str, ...] = ()  # option names holding a text template
    # True: the action only reads (a rule set's dry run runs it too, so that the actions after
    # it preview what they would really do). A result's ``bind`` mapping is added to the context
    # of the actions that follow it.
    pure: bool = False


FnT = TypeVar("FnT")


def service(key: ServiceKey[FnT]) -> FnT:
    """A registered service; absence is a clear runtime error, never a silent no-op."""
    found = find_service(loaded_registry(), key)
    if found is None:
        raise RuleRuntimeError(f"service '{key.name}' is not registered (is the {key.provider} "
                               "engine installed?)")
    return found


# --- option schemas -------------------------------------------------------------------------

_TEXT: dict[str, Any] = {"oneOf": [{"type": "string", "minLength": 1},
                                   {"type": "object", "additionalProperties": {"type": "string"}}]}
_ASSIGNEE: dict[str, Any] = {
    "type": "object",
    "oneOf": [{"required": ["role"]}, {"required": ["relation"]}, {"required": ["user"]}],
    "properties": {"role": {"type": "string"},
                   "relation": {"enum": [*RELATIONS, "owner"]},
                   "user": {"type": "string"}, "department": {"type": "string"}},
    "additionalProperties": False,
}
_DUE: dict[str, Any] = {
    "type": "object", "oneOf": [{"required": ["hours"]}, {"required": ["working_days"]}],
    "additionalProperties": False,
    "properties": {"hours": {"type": "number", "minimum": 0},
                   "working_days": {"type": "integer", "minimum": 0},
                   "calendar": {"type": "string"}},
}
_ESCALATION: dict[str, Any] = {
    "type": "array", "items": {
        "type": "object", "required": ["role"], "additionalProperties": False,
        "properties": {"role": {"type": "string"}, "department": {"type": "string"},
                       "due": _DUE}}}


_ON_COMPLETE: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "status": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
        "retry": {"type": "object", "additionalProperties": False, "required": ["outcomes"],
                  "properties": {"outcomes": {"type": "array", "minItems": 1,
                                              "items": {"type": "string"}},
                                 "after": _DUE,
                                 "attempts": {"type": "integer", "minimum": 2, "maximum": 10}}}},
}


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {"do": {"type": "string"}, **properties},
            "required": required, "additionalProperties": False}


# Working time (``due_at``) lives in careloop.engine.tasks: rules, flows and escalation share it.


# --- the actions ----------------------------------------------------------------------------

def _assignee(ctx: ActionContext, rule: Mapping[str, Any]) -> Any:
    if rule.get("relation") == "owner":
        # the owner of the place the event happened at (a touchpoint's ``owner``: a role in a
        # department), carried by the event the form engine recorded
        event = ctx.context.get("event")
        owner = event.get("owner") if isinstance(event, Mapping) else None
        if not isinstance(owner, Mapping) or not owner.get("role"):
            raise RuleRuntimeError("assignee {relation: owner} needs an event naming its owner "
                                   "(an answer at a touchpoint); this event has none")
        rule = {"role": owner["role"], **({"department": owner["department"]}
                                          if owner.get("department") else {})}
    return resolve_assignee(ctx.session, dict(rule), patient_id=ctx.patient_id,
                            encounter_id=ctx.encounter_id)


def run_create_task(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    assignee = _assignee(ctx, options["assignee"])
    chain = [dict(step) for step in options.get("escalation", [])]
    due = due_at(options.get("due"), session=ctx.session)
    task, created = create_task(
        ctx.session, title=ctx.render(options["title"])[:255], assignee=assignee, actor=ctx.actor,
        patient_id=ctx.patient_id, encounter_id=ctx.encounter_id,
        priority=options.get("priority", "normal"), due_at=due, kind=options.get("kind", "todo"),
        source_type="rule", source_ref=ctx.source_ref, idempotency_key=ctx.key(),
        form_key=options.get("form"),
        escalation={"chain": chain, "level": 0} if chain else {},
        details={"event_id": ctx.event_id, "submission_id": ctx.submission_id,
                 **({"on_complete": dict(options["on_complete"])}
                    if options.get("on_complete") else {})})
    return {"task_id": task.id, "created": created, "assignee_user_id": assignee.user_id,
            "assignee_role": assignee.role, "department_id": assignee.department_id,
            "priority": task.priority, "due_at": due.isoformat() if due else None}


def run_cc(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    rule = {"role": options["role"]}
    if "department" in options:
        rule["department"] = options["department"]
    if options.get("via", "task") == "notification":
        assignee = _assignee(ctx, rule)
        if assignee.user_id is None:
            raise RuleRuntimeError(f"cc: no single holder of role '{options['role']}' to notify")
        message_id = service(OUTBOX_ENQUEUE)(
            ctx.session, template_key=options["template"], channel=options.get("channel", "app"),
            user_id=assignee.user_id, values=_values(ctx, options), locale=ctx.locale,
            idempotency_key=ctx.key(), source_ref=ctx.source_ref)
        return {"message_id": message_id, "user_id": assignee.user_id}
    title = options.get("title") or {"zh-CN": "抄送：{{ event.form or event_type }}",
                                     "en": "Copy: {{ event.form or event_type }}"}
    return run_create_task(ctx, {"title": title, "assignee": rule, "kind": "cc",
                                 "priority": options.get("priority", "normal"),
                                 **({"due": options["due"]} if "due" in options else {})})


def _values(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    return {name: ctx.render(text) for name, text in (options.get("values") or {}).items()}


def run_tag(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    patient_id = _need_patient(ctx, "tag")
    existing = ctx.session.scalars(select(PatientTag).where(
        PatientTag.patient_id == patient_id, PatientTag.tag == options["tag"])).first()
    if existing is None:
        ctx.session.add(PatientTag(patient_id=patient_id, tag=options["tag"],
                                   source=ctx.source_ref, created_at=now_utc()))
        ctx.session.flush()
    return {"tag": options["tag"], "added": existing is None}


def run_untag(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    patient_id = _need_patient(ctx, "untag")
    existing = ctx.session.scalars(select(PatientTag).where(
        PatientTag.patient_id == patient_id, PatientTag.tag == options["tag"])).first()
    if existing is not None:
        ctx.session.delete(existing)
        ctx.session.flush()
    return {"tag": options["tag"], "removed": existing is not None}


def _need_patient(ctx: ActionContext, action: str) -> str:
    if ctx.patient_id is None:
        raise RuleRuntimeError(f"{action}: the event names no patient")
    return ctx.patient_id


def run_set_status(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    if ctx.submission_id is None:
        raise RuleRuntimeError("set_status: the event names no submission")
    service(SET_SUBMISSION_STATUS)(ctx.session, ctx.submission_id, options["status"],
                                     actor=ctx.actor)
    return {"submission_id": ctx.submission_id, "status": options["status"]}


def run_notify(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    to = options.get("to", "patient")
    patient_id = user_id = None
    if to == "patient":
        patient_id = _need_patient(ctx, "notify")
    else:
        assignee = _assignee(ctx, to)
        if assignee.user_id is None:
            raise RuleRuntimeError(f"notify: no single recipient for {dict(to)}")
        user_id = assignee.user_id
    message_id = service(OUTBOX_ENQUEUE)(
        ctx.session, template_key=options["template"], channel=options["channel"],
        patient_id=patient_id, user_id=user_id, values=_values(ctx, options), locale=None,
        urgent=bool(options.get("urgent", False)), idempotency_key=ctx.key(),
        source_ref=ctx.source_ref)
    return {"message_id": message_id, "channel": options["channel"]}


def run_notify_results(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    """On ``result.recorded``: send the patient a notice linking to that result."""
    if ctx.event_type != "result.recorded":
        raise RuleRuntimeError(f"notify_results: runs on result.recorded, not {ctx.event_type}")
    patient_id = _need_patient(ctx, "notify_results")
    message_id = service(NOTIFY_RESULTS)(
        ctx.session, patient_id, [ctx.event_id], ctx.actor, channel=options.get("channel"),
        idempotency_key=ctx.key())
    return {"message_id": message_id}


def run_send_education(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    """Send the patient the education items fitting the event's encounter and ``stage``."""
    patient_id = _need_patient(ctx, "send_education")
    extra = {k: options[k] for k in ("channel", "template", "limit") if k in options}
    message_ids = service(SEND_EDUCATION)(
        ctx.session, patient_id=patient_id, encounter_id=ctx.encounter_id,
        stage=options["stage"], articles=tuple(options.get("articles") or ()),
        idempotency_key=ctx.key(), source_ref=ctx.source_ref, **extra)
    return {"message_ids": message_ids}


# the options the send_education step type declares (flows/education_step.py), as data here:
# rules never import the flow engine
_EDUCATION: dict[str, Any] = {
    "stage": {"enum": ["pre_admission", "pre_op", "post_op", "inpatient", "discharge",
                       "discharge_day1", "discharge_day7", "discharge_day30", "outpatient",
                       "chronic"]},
    "articles": {"type": "array", "minItems": 1, "uniqueItems": True,
                 "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}},
    "limit": {"type": "integer", "minimum": 1, "maximum": 5},
    "channel": {"type": "string", "x-registry": "channel"},
    "template": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
}


def run_raise_alert(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    from careloop.rules.models import RuleAlert

    key = ctx.key()
    alert = ctx.session.scalars(select(RuleAlert).where(RuleAlert.idempotency_key == key)).first()
    if alert is None:
        encounter = ctx.context.get("encounter") or {}
        alert = RuleAlert(idempotency_key=key, ruleset_key=ctx.ruleset, rule_key=ctx.rule,
                          patient_id=ctx.patient_id, department_id=encounter.get("department"),
                          level=options.get("level", "warning"),
                          message=ctx.render(options["message"]), status="open",
                          created_at=now_utc())
        ctx.session.add(alert)
        ctx.session.flush()
        # Rule sets on ``alert.raised`` may turn an alert into a task (or a message).
        from careloop.engine import events

        events.record(ctx.session, "alert.raised", {
            "alert_id": alert.id, "level": alert.level, "message": alert.message,
            "patient_id": alert.patient_id, "encounter_id": ctx.encounter_id,
            "department_id": alert.department_id, "ruleset": ctx.ruleset, "rule": ctx.rule},
            event_id=f"alert.raised:{alert.id}")
    return {"alert_id": alert.id, "level": alert.level}


def run_start_flow(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    from careloop.engine import store

    flow = options.get("flow")
    if flow is None:  # ``flow_from``: a context path, e.g. a decision table's output
        flow = lookup(ctx.context, options["flow_from"])
        if not isinstance(flow, str) or store.current(ctx.session, "flow", flow) is None:
            raise RuleRuntimeError(f"start_flow: {options['flow_from']} names no flow ({flow!r})")
    paths = options.get("context") or {}
    extra = {name: lookup(ctx.context, path) for name, path in paths.items()}
    run_id = service(FLOWS_START)(ctx.session, flow_key=flow,
                                    patient_id=ctx.patient_id, encounter_id=ctx.encounter_id,
                                    context=extra, idempotency_key=ctx.key())
    return {"flow": flow, "run_id": run_id}


def run_decide(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate a decision table on the rule's context; its outputs are bound (as ``decision``
    or the ``as`` name) for the actions that follow."""
    from careloop.rules.runtime import decide

    outputs = decide(ctx.session, options["table"], ctx.context)
    name = options.get("as", "decision")
    return {"table": options["table"], "outputs": outputs, "bind": {name: outputs}}


def run_set_attribute(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    patient = ctx.session.get(Patient, _need_patient(ctx, "set_attribute"))
    if patient is None:
        raise RuleRuntimeError(f"set_attribute: no patient '{ctx.patient_id}'")
    value = (lookup(ctx.context, options["value_from"]) if "value_from" in options
             else options.get("value"))
    patient.attributes = {**(patient.attributes or {}), options["name"]: value}
    patient.updated_at = now_utc()
    ctx.session.flush()
    return {"name": options["name"], "value": value}


def run_classify(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    from careloop.rules.runtime import classify_and_store

    text = lookup(ctx.context, f"answers.{options['field']}")
    matches = classify_and_store(ctx.session, options["dictionary"], text,
                                 field_key=options["field"], patient_id=ctx.patient_id,
                                 submission_id=ctx.submission_id, event_id=ctx.event_id)
    return {"categories": [m.category for m in matches]}


def run_escalate(ctx: ActionContext, options: Mapping[str, Any]) -> dict[str, Any]:
    task = ctx.session.get(Task, ctx.task_id) if ctx.task_id is not None else None
    if task is None:
        raise RuleRuntimeError("escalate: the event names no task")
    step = escalate_task(ctx.session, task, actor=ctx.actor, due=options.get("due"),
                         priority=options.get("priority"), event_id=ctx.event_id)
    level = int((task.escalation or {}).get("level", 0))
    if step is None:
        return {"task_id": task.id, "escalated": False, "level": level}
    return {"task_id": task.id, "escalated": True, "level": level, "role": task.assignee_role}


BUILTIN_ACTIONS = (
    ActionSpec("create_task", {"zh-CN": "创建待办", "en": "Create a task"}, _schema({
        "title": _TEXT, "assignee": _ASSIGNEE, "priority": {"enum": list(PRIORITIES)},
        "due": _DUE, "escalation": _ESCALATION, "kind": {"type": "string"},
        "form": {"type": "string"}, "on_complete": _ON_COMPLETE}, ["do", "title", "assignee"]),
        run_create_task,
        templates=("title",)),
    ActionSpec("cc", {"zh-CN": "抄送", "en": "Copy to a role"}, _schema({
        "role": {"type": "string"}, "department": {"type": "string"},
        "via": {"enum": ["task", "notification"]}, "title": _TEXT, "template": {"type": "string"},
        "channel": {"type": "string"}, "values": {"type": "object"},
        "priority": {"enum": list(PRIORITIES)}, "due": _DUE}, ["do", "role"]), run_cc,
        references=(("template", "template"),), templates=("title",)),
    ActionSpec("tag", {"zh-CN": "给患者打标签", "en": "Tag the patient"},
               _schema({"tag": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}},
                       ["do", "tag"]), run_tag),
    ActionSpec("untag", {"zh-CN": "移除患者标签", "en": "Remove a patient tag"},
               _schema({"tag": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}},
                       ["do", "tag"]), run_untag),
    ActionSpec("set_status", {"zh-CN": "设置问卷状态", "en": "Set the submission status"},
               _schema({"status": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"}},
                       ["do", "status"]), run_set_status),
    ActionSpec("notify", {"zh-CN": "发送消息", "en": "Send a message"}, _schema({
        "template": {"type": "string"}, "channel": {"type": "string", "x-registry": "channel"},
        "to": {"oneOf": [{"const": "patient"}, _ASSIGNEE]}, "values": {"type": "object"},
        "urgent": {"type": "boolean"}}, ["do", "template", "channel"]), run_notify,
        references=(("template", "template"),)),
    ActionSpec("notify_results", {"zh-CN": "推送检验结果给患者",
                                  "en": "Send the lab result to the patient"}, _schema({
        "channel": {"type": "string", "x-registry": "channel"}}, ["do"]), run_notify_results),
    ActionSpec("send_education", {"zh-CN": "推送健康宣教", "en": "Send health education"},
               _schema(_EDUCATION, ["do", "stage"]), run_send_education,
               references=(("template", "template"),)),
    ActionSpec("raise_alert", {"zh-CN": "发出预警", "en": "Raise an alert"}, _schema({
        "level": {"enum": ["info", "warning", "critical"]}, "message": _TEXT},
        ["do", "message"]), run_raise_alert, templates=("message",)),
    ActionSpec("start_flow", {"zh-CN": "启动流程", "en": "Start a flow"}, {
        **_schema({"flow": {"type": "string"}, "flow_from": {"type": "string"},
                   "context": {"type": "object", "additionalProperties": {"type": "string"}}},
                  ["do"]),
        "oneOf": [{"required": ["flow"]}, {"required": ["flow_from"]}]},
        run_start_flow, references=(("flow", "flow"),)),
    ActionSpec("decide", {"zh-CN": "查决策表", "en": "Look up a decision table"}, _schema({
        "table": {"type": "string"},
        "as": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$",
               "not": {"enum": sorted(CONTEXT_NAMES)}}}, ["do", "table"]), run_decide,
        references=(("table", "decision_table"),), pure=True),
    ActionSpec("set_attribute", {"zh-CN": "设置患者属性", "en": "Set a patient attribute"},
               _schema({"name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
                        "value": {}, "value_from": {"type": "string"}}, ["do", "name"]),
               run_set_attribute),
    ActionSpec("classify", {"zh-CN": "文本分类", "en": "Classify free text"}, _schema({
        "dictionary": {"type": "string"}, "field": {"type": "string"}},
        ["do", "dictionary", "field"]), run_classify,
        references=(("dictionary", "dictionary"),)),
    ActionSpec("escalate", {"zh-CN": "逐级上报", "en": "Escalate the task"}, _schema({
        "priority": {"enum": list(PRIORITIES)}, "due": _DUE}, ["do"]), run_escalate),
)


def register(registry: Registry) -> None:
    actions = registry.catalogue("action")
    for spec in BUILTIN_ACTIONS:
        actions.register(spec.name, spec)
