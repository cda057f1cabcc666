"""Built-in step types, each a :class:`~careloop.flows.step_types.StepType` that owns its
options schema, edges, pausing, retry policy, timers and resume events; each registers in
``registry.catalogue("step_type")`` exactly as a plugin's does.

``run(x: Exec) -> Outcome`` (see :mod:`.runtime`); pausing steps return ``("wait", None)`` after
arranging what resumes them (a timer row, ``waiting_for`` an event, or approval tasks).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from careloop.engine import txcache
from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.errors import NotFound
from careloop.engine.expression_runtime import to_json_value
from careloop.engine.hospital import hospital_name
from careloop.engine.i18n import pick
from careloop.engine.links import absolute, base_url
from careloop.engine.registry import loaded_registry
from careloop.engine.services import CREATE_REQUEST, ServiceKey, find_service
from careloop.engine.tasks import create_task, resolve_assignee
from careloop.flows import documents, webhooks
from careloop.flows.calendar import get_calendar
from careloop.flows.health.booking_links import link_for
from careloop.flows.outbox import consented, enqueue_row
from careloop.flows.runtime import (
    Exec,
    Outcome,
    StepError,
    after,
    enter,
    source_ref,
    start,
)
from careloop.flows.spec import parse_duration
from careloop.flows.step_types import (
    NEXT,
    ON_TIMEOUT,
    RETRY_OPTION,
    Delay,
    Edge,
    Labels,
    Options,
    Resume,
    RetryPolicy,
    StepType,
    Text,
)

if TYPE_CHECKING:
    from careloop.engine.check import CompileContext, Definition

# Option schemas shared by several built-in types (``$ref``s point into the flow schema's $defs).
_TEMPLATE: dict[str, Any] = {"$ref": "#/$defs/key"}
_CHANNELS: dict[str, Any] = {"type": "array", "minItems": 1, "items": {
    "type": "string", "x-registry": "channel", "x-error-code": "flow.unknown-channel"}}
_VALUES: dict[str, Any] = {"type": "object", "additionalProperties": {"$ref": "#/$defs/expression"}}
_DURATION: dict[str, Any] = {"$ref": "#/$defs/duration"}
_TASK_TITLE: dict[str, Any] = {"$ref": "#/$defs/text"}
_TASK_KIND: dict[str, Any] = {"type": "string", "pattern": "^[a-z_]{1,32}$"}
_ASSIGNEE: dict[str, Any] = {"$ref": "#/$defs/assignee"}
_ESCALATE_TO: dict[str, Any] = {"type": "array", "items": {"$ref": "#/$defs/assignee"}}
_ON_REJECT = Edge("on_reject", {"zh-CN": "驳回", "en": "reject"})

# How long a discharge-summary / medication-guidance link opens its page.
DOCUMENT_LINK_VALIDITY = timedelta(days=30)


FnT = TypeVar("FnT")


def _service(key: ServiceKey[FnT]) -> FnT:
    found = find_service(loaded_registry(), key)
    if found is None:
        raise StepError(f"service '{key.name}' is not registered")
    return found


def _standard_values(x: Exec) -> dict[str, Any]:
    """Values every message template may use, plus the step's own ``values``."""
    patient = x.session.get(Patient, x.run.patient_id) if x.run.patient_id else None
    encounter = x.session.get(Encounter, x.run.encounter_id) if x.run.encounter_id else None
    locale = patient.locale if patient is not None else "zh-CN"
    # the encounter's department; a run without one (an appointment, a surgery) uses the
    # department its starting event names
    department_id = (encounter.department_id if encounter is not None
                     else (x.run.context.get("_event") or {}).get("department_id"))
    department = (x.session.get(Department, str(department_id))
                  if department_id else None)
    values: dict[str, Any] = {
        "patient_name": patient.name if patient is not None else "",
        "department_name": pick(department.name, locale) if department is not None else "",
        "hospital_name": hospital_name(locale),
        "base_url": base_url(),
        # the department's booking link (一键预约), "" when it has none (flows/health)
        "booking_link": link_for(x.session, str(department_id) if department_id else None,
                                 patient),
    }
    own = x.step.get("values", {}) or {}
    if own:  # the expression names only when the step has values of its own to compute
        names = x.names()
        for name in own:
            values[name] = _readable(x.evaluate(f"values.{name}", names))
    return values


def _readable(value: Any) -> Any:
    """A date-time value (an event's ``scheduled_at``) as patients read it: hospital-local
    ``YYYY-MM-DD HH:MM``, never an ISO instant with its offset."""
    moment = value
    if isinstance(value, str) and len(value) > 10 and value[4:5] == "-" and "T" in value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(moment, datetime):
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=hospital_tz())
    return moment.astimezone(hospital_tz()).strftime("%Y-%m-%d %H:%M")


def _channel(x: Exec, default: str = "sms") -> str:
    """The first channel in ``channels`` the patient has not withdrawn consent for."""
    patient = x.session.get(Patient, x.run.patient_id) if x.run.patient_id else None
    channels = list(x.step.get("channels") or [default])
    for channel in channels:
        if consented(patient, channel):
            return str(channel)
    return str(channels[0])  # the outbox records it as suppressed: visible, not silently dropped


def _send(x: Exec, template: str, values: dict[str, Any], suffix: str = "",
          link_expires_at: datetime | None = None) -> int | txcache.Later:
    """The message's id, or a :class:`~careloop.engine.txcache.Later` for it (a history row's
    detail, read when the history is written): the message is written with the next flush."""
    valid_for = x.step.get("valid_for")
    row = enqueue_row(x.session, template_key=template, channel=_channel(x),
                      patient_id=x.run.patient_id, values=values,
                      urgent=bool(x.step.get("urgent", False)),
                      idempotency_key=x.key + suffix,
                      source_ref=source_ref(x.run, x.step.key),
                      valid_for=parse_duration(valid_for) if valid_for else None,
                      link_expires_at=link_expires_at, new_key=x.fresh and not suffix)
    return row if isinstance(row, int) else txcache.Later(row)


def _document_links(x: Exec, values: dict[str, Any]) -> datetime | None:
    """``links: {summary_link: discharge_summary}``: a token link per variable, or ``""`` when
    the HIS sent nothing to show (the template leaves the link out). Returns the earliest
    expiry of the links made."""
    earliest: datetime | None = None
    for name, kind in (x.step.get("links") or {}).items():
        expires = now_utc() + DOCUMENT_LINK_VALIDITY
        link = documents.create_link(x.session, kind=kind, encounter_id=x.run.encounter_id,
                                     patient_id=x.run.patient_id, expires_at=expires,
                                     source_ref=source_ref(x.run, x.step.key))
        values[name] = absolute(link["url"]) if link is not None else ""
        if link is not None:
            earliest = expires if earliest is None else min(earliest, expires)
    return earliest


class SendMessage(StepType):
    """Render a template for the patient and write it to the outbox."""

    name = "send_message"
    lazy_row = True
    icon = "✉"
    title: ClassVar[Text] = {"zh-CN": "发送消息", "en": "Send a message"}
    options: ClassVar[Options] = {"template": _TEMPLATE, "channels": _CHANNELS, "values": _VALUES,
               "links": {"type": "object",
                         "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,63}$"},
                         "additionalProperties": {"enum": ["discharge_summary",
                                                           "medication_guidance"]}},
               "urgent": {"type": "boolean"}, "valid_for": _DURATION}
    required = ("template",)
    expressions = ("values.*",)
    references = (("template", "template"),)
    retry = RetryPolicy(attempts=3, backoff="5m")

    def run(self, x: Exec) -> Outcome:
        values = _standard_values(x)
        link_expires = _document_links(x, values)
        message_id = _send(x, x.step.get("template"), values, link_expires_at=link_expires)
        x.history("message", {"message_id": message_id})
        return ("next", x.step.next)


# What to do when the step's message does not reach the patient (a dead letter, expired,
# suppressed): a phone follow-up task, for instance (flows/undelivered.py).
_ON_UNDELIVERED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "create_task": {
            "type": "object",
            "properties": {
                "task_title": {"$ref": "#/$defs/text"},
                "task_kind": {"type": "string", "pattern": "^[a-z_]{1,32}$"},
                "assignee": {"$ref": "#/$defs/assignee"},
                "priority": {"enum": ["urgent", "high", "normal", "low"]},
                "due": {"$ref": "#/$defs/duration"},
                "escalate_to": {"type": "array", "items": {"$ref": "#/$defs/assignee"}},
            },
            "required": ["task_title", "assignee"],
            "additionalProperties": False,
        },
    },
    "required": ["create_task"],
    "additionalProperties": False,
}


class SendForm(StepType):
    """Create a form request (service ``forms.create_request``), send its link, then wait for
    ``form.submitted``; optional reminder after ``remind_after``; on expiry go to
    ``on_timeout`` (default: the next step)."""

    name = "send_form"
    lazy_row = True
    icon = "📋"
    title: ClassVar[Text] = {"zh-CN": "发送问卷", "en": "Send a form"}
    options: ClassVar[Options] = {
               "form": {"$ref": "#/$defs/key"}, "template": _TEMPLATE, "channels": _CHANNELS,
               "values": _VALUES, "urgent": {"type": "boolean"}, "expires_after": _DURATION,
               "valid_for": _DURATION, "remind_after": _DURATION,
               "reminder_template": _TEMPLATE, "on_timeout": {"type": "string"},
               "on_undelivered": _ON_UNDELIVERED}
    required = ("form", "template")
    expressions = ("values.*",)
    references = (("template", "template"), ("reminder_template", "template"), ("form", "form"))
    edges = (NEXT, ON_TIMEOUT)
    pauses = True
    retry = RetryPolicy(attempts=3, backoff="5m")
    timers = ("reminder", "timeout")
    resumes = (Resume("form.submitted"),)

    def run(self, x: Exec) -> Outcome:
        expires = after(x.step.get("expires_after", "7d"))
        channel = _channel(x)
        if x.run.patient_id is None:  # a form goes to a patient; a run without one cannot send
            raise NotFound(f"step '{x.step.key}' sends a form, but the run has no patient")
        request = _service(CREATE_REQUEST)(
            x.session, form_key=x.step.get("form"), patient_id=x.run.patient_id,
            encounter_id=x.run.encounter_id, channel=channel, expires_at=expires,
            source_ref=source_ref(x.run, x.step.key))
        values = _standard_values(x)
        values["form_link"] = absolute(str(request["url"]))
        values.setdefault("expires_days", max(1, (expires - now_utc()).days))
        message_id = _send(x, x.step.get("template"), values, link_expires_at=expires)
        x.step_run.waiting_for = "form.submitted"
        x.step_run.status = "waiting"
        x.step_run.state = {"request_id": request["request_id"], "form": x.step.get("form"),
                            "link_expires_at": expires.isoformat(),
                            "values": {k: v for k, v in values.items()
                                       if k not in ("patient_name",)}}
        if x.step.get("remind_after"):
            x.timer("reminder", after(x.step.get("remind_after")))
        x.timer("timeout", expires)
        x.history("form_sent", {"message_id": message_id, "request_id": request["request_id"]})
        return ("wait", None)

    def on_timer(self, x: Exec, purpose: str) -> None:
        if purpose == "reminder":
            reminder(x)
        else:
            super().on_timer(x, purpose)

    def accepts(self, x: Exec, event: str, payload: Mapping[str, Any]) -> bool:
        """The answer to this step's own request (or, without a request id, to its form)."""
        state = x.step_run.state
        if state.get("request_id"):
            if payload.get("request_id") not in (None, state["request_id"]):
                return False
            if payload.get("request_id") is None and payload.get("form") != state.get("form"):
                return False
        return super().accepts(x, event, payload)

    def on_event(self, x: Exec, event: str,
                 payload: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        return x.step.next, {"_last_answers": {k: payload.get(k)
                                               for k in ("answers", "scores", "bands")}}


def until_time(x: Exec) -> datetime:
    """``until: {base: encounter.discharged_at, days: 7, at: "09:30", working_days: false}``."""
    until = x.step.get("until")
    base = x.evaluate("until.base")
    if isinstance(base, str):
        try:
            base = datetime.fromisoformat(base)
        except ValueError as exc:
            raise StepError(f"step {x.step.key}: until.base is not a date-time") from exc
    if not isinstance(base, datetime):
        raise StepError(f"step {x.step.key}: until.base gave {type(base).__name__}, "
                        "not a date-time")
    if base.tzinfo is None:
        base = base.replace(tzinfo=hospital_tz())
    days = int(until.get("days", 0))
    if until.get("working_days"):
        due = get_calendar(x.session, until.get("calendar")).add_working_days(base, days)
    else:
        due = base + timedelta(days=days)
    due += timedelta(hours=int(until.get("hours", 0)))
    if "at" in until:
        local = due.astimezone(hospital_tz())
        due = datetime.combine(local.date(), time.fromisoformat(until["at"]), hospital_tz())
    return due


class Wait(StepType):
    """Wait a ``duration``, ``until`` a computed time, or for an ``event`` (with ``timeout``):
    exactly one of the three modes."""

    name = "wait"
    lazy_row = True
    icon = "◷"
    defaults: ClassVar[Mapping[str, Any]] = {"duration": "1d"}
    delay = Delay(duration="duration", until="until", event="event")
    title: ClassVar[Text] = {"zh-CN": "等待", "en": "Wait"}
    options: ClassVar[Options] = {"duration": _DURATION, "until": {"$ref": "#/$defs/until"},
               "event": {"type": "string", "pattern": "^[a-z_]+\\.[a-z_]+$"},
               "match": {"$ref": "#/$defs/expression"}, "timeout": _DURATION,
               "on_timeout": {"type": "string"}}
    modes = ("duration", "until", "event")
    expressions = ("match", "until.base")
    references = (("until.calendar", "calendar"),)
    edges = (NEXT, ON_TIMEOUT)
    pauses = True
    timers = ("resume", "timeout")
    labels: ClassVar[Labels] = {
              "duration": {"help": {"zh-CN": "等待一段时间，例如 3d",
                                    "en": "wait a while, e.g. 3d"}},
              "until": {"help": {"zh-CN": "等到根据日期计算出的时刻",
                                 "en": "wait until a time computed from a date"}},
              "event": {"help": {"zh-CN": "等待某个事件，例如 reading.recorded",
                                 "en": "wait for an event, e.g. reading.recorded"}}}

    def run(self, x: Exec) -> Outcome:
        x.step_run.status = "waiting"
        if x.step.get("event"):
            x.step_run.waiting_for = x.step.get("event")
            if x.step.get("timeout"):
                x.timer("timeout", after(x.step.get("timeout")))
            return ("wait", None)
        due = (after(x.step.get("duration")) if x.step.get("duration") else until_time(x))
        x.step_run.waiting_for = "timer"
        x.timer("resume", due)
        x.history("waiting", {"until": due.isoformat()})
        return ("wait", None)

    def on_event(self, x: Exec, event: str,
                 payload: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The event a wait resumed on is the run's ``event``; an answer or a reading is kept
        as ``answers``/``reading`` for the steps after it."""
        update: dict[str, Any] = {}
        if event == SendForm.resumes[0].event:
            update["_last_answers"] = {k: payload.get(k) for k in ("answers", "scores", "bands")}
        if event == READING:
            update["_reading"] = dict(payload)
        return x.step.next, update


READING = "reading.recorded"  # a wait for it keeps the reading as ``reading``


class CreateTask(StepType):
    """A to-do through :mod:`careloop.engine.tasks` (the assignee rules rules use too)."""

    name = "create_task"
    lazy_row = True
    icon = "☑"
    title: ClassVar[Text] = {"zh-CN": "创建任务", "en": "Create a task"}
    options: ClassVar[Options] = {
               "task_title": _TASK_TITLE, "task_kind": _TASK_KIND, "assignee": _ASSIGNEE,
               "priority": {"enum": ["urgent", "high", "normal", "low"]}, "due": _DURATION,
               "escalate_to": _ESCALATE_TO, "on_complete": {"$ref": "#/$defs/on_complete"}}
    required = ("task_title", "assignee")
    retry = RetryPolicy(attempts=3, backoff="5m")

    def run(self, x: Exec) -> Outcome:
        assignee = resolve_assignee(x.session, dict(x.step.get("assignee")),
                                    patient_id=x.run.patient_id,
                                    encounter_id=x.run.encounter_id)
        title = x.step.get("task_title")
        task, _ = create_task(
            x.session, title=pick(title, "zh-CN")[:255], assignee=assignee, actor="flows",
            patient_id=x.run.patient_id, encounter_id=x.run.encounter_id,
            priority=x.step.get("priority", "normal"),
            due_at=after(x.step.get("due")) if x.step.get("due") else None,
            kind=x.step.get("task_kind", "todo"), source_type="flow",
            source_ref=source_ref(x.run, x.step.key), idempotency_key=x.key, new_key=x.fresh,
            flush=False,  # written with the batch's next flush: one INSERT for its tasks
            escalation={"chain": list(x.step.get("escalate_to") or []), "level": 0},
            details={"title": dict(title), "flow": x.spec.key, "run_id": x.run.id,
                     **({"on_complete": dict(x.step.get("on_complete"))}
                        if x.step.get("on_complete") else {})})
        x.history("task", {"task_id": task.id if task.id is not None
                           else txcache.Later(task)})
        return ("next", x.step.next)


class Approval(StepType):
    """Approval tasks for ``approvers`` (kind ``task_kind``, default ``approval``);
    :func:`careloop.flows.approvals.decide` resumes (approve → ``next``, reject → ``on_reject``
    or the step the decider names)."""

    name = "approval"
    icon = "✍"
    title: ClassVar[Text] = {"zh-CN": "审批", "en": "Approval"}
    options: ClassVar[Options] = {"task_title": _TASK_TITLE, "task_kind": _TASK_KIND,
               "approvers": {"type": "array", "minItems": 1, "items": _ASSIGNEE},
               "mode": {"enum": ["single", "all", "any", "n_of_m"]},
               "required": {"type": "integer", "minimum": 1}, "due": _DURATION,
               "escalate_to": _ESCALATE_TO, "on_reject": {"type": "string"}}
    required = ("approvers",)
    edges = (NEXT, _ON_REJECT)
    pauses = True

    def run(self, x: Exec) -> Outcome:
        from careloop.flows.approvals import open_approval

        open_approval(x)
        return ("wait", None)

    def check(self, definition: Definition, ctx: CompileContext, index: int,
              step: Mapping[str, Any]) -> None:
        keys = [s["key"] for s in definition.body["steps"]]
        if step.get("mode") == "n_of_m":
            count = len(step.get("approvers", []))
            required = step.get("required")
            if not isinstance(required, int) or required > count:
                ctx.add(definition.doc.problem(
                    "flow.bad-required",
                    f"step '{step['key']}': n_of_m needs 'required' between 1 and {count}",
                    ("steps", index, "mode")))
        if step.get("on_reject") in keys and keys.index(step["on_reject"]) >= index:
            ctx.add(definition.doc.problem(
                "flow.reject-not-earlier",
                f"'on_reject' must name an earlier step, not '{step['on_reject']}'",
                ("steps", index, "on_reject")))


class Decision(StepType):
    """``if``/``then``/``else``, or ``cases`` (first true ``when``) with a ``default``."""

    name = "decision"
    lazy_row = True
    icon = "◇"
    title: ClassVar[Text] = {"zh-CN": "条件分支", "en": "Decision"}
    options: ClassVar[Options] = {"if": {"$ref": "#/$defs/expression"}, "then": {"type": "string"},
               "else": {"type": "string"},
               "cases": {"type": "array", "minItems": 1, "items": {
                   "type": "object",
                   "properties": {"when": {"$ref": "#/$defs/expression"},
                                  "next": {"type": "string"}},
                   "required": ["when", "next"], "additionalProperties": False}},
               "default": {"type": "string"}}
    modes = ("if", "cases")
    expressions = ("if", "cases.*.when")
    edges = (Edge("then", {"zh-CN": "是", "en": "then"}, mode="if"),
             Edge("else", {"zh-CN": "否", "en": "else"}, mode="if", fallback=True),
             Edge("cases", {"zh-CN": "情形", "en": "case"}, item="next", mode="cases"),
             Edge("default", {"zh-CN": "其他", "en": "default"}, mode="cases", fallback=True))

    def run(self, x: Exec) -> Outcome:
        names = x.names()
        if x.step.get("if") is not None:
            chosen = x.step.get("then") if x.evaluate("if", names) else x.step.get("else",
                                                                                x.step.next)
            return ("next", chosen)
        for i, case in enumerate(x.step.get("cases")):
            if x.evaluate(f"cases.{i}.when", names):
                return ("next", case["next"])
        return ("next", x.step.get("default", x.step.next))

    def check(self, definition: Definition, ctx: CompileContext, index: int,
              step: Mapping[str, Any]) -> None:
        if "if" in step and "then" not in step:
            ctx.add(definition.doc.problem("flow.missing-field",
                                           f"step '{step['key']}': 'if' needs 'then'",
                                           ("steps", index, "if"), at_key=True))


class Parallel(StepType):
    """Start every branch; the step joins when all (or the first) reach ``next: join``."""

    name = "parallel"
    icon = "∥"
    title: ClassVar[Text] = {"zh-CN": "并行分支", "en": "Parallel branches"}
    options: ClassVar[Options] = {"branches": {"type": "array", "items": {"type": "string"}},
               "join": {"enum": ["all", "first"]}}
    required = ("branches",)
    edges = (Edge("branches", {"zh-CN": "分支", "en": "branch"}, many=True, fork=True),
             Edge("next", {"zh-CN": "汇合后", "en": "join"}, fallback=True))

    def run(self, x: Exec) -> Outcome:
        branches = list(x.step.get("branches"))
        x.step_run.status, x.step_run.waiting_for = "waiting", "join"
        x.step_run.state = {"done": 0, "total": len(branches)}
        x.session.flush()
        for branch in branches:
            enter(x.session, x.run, x.spec, branch, x.step_run.id)
        return ("hold", None)

    def check(self, definition: Definition, ctx: CompileContext, index: int,
              step: Mapping[str, Any]) -> None:
        if "branches" in step and not step.get("branches"):
            ctx.add(definition.doc.problem("flow.join-without-branches",
                                           f"parallel step '{step['key']}' has no branches",
                                           ("steps", index, "branches")))


class SetValues(StepType):
    """Set run context values from expressions."""

    name = "set"
    lazy_row = True
    icon = "≔"
    title: ClassVar[Text] = {"zh-CN": "设置变量", "en": "Set values"}
    options: ClassVar[Options] = {"set": _VALUES}
    required = ("set",)
    expressions = ("set.*",)

    def run(self, x: Exec) -> Outcome:
        names = x.names()
        updates = {k: to_json_value(x.evaluate(f"set.{k}", names)) for k in x.step.get("set")}
        x.run.context = {**x.run.context, **updates}
        return ("next", x.step.next)


class CallWebhook(StepType):
    """HTTP to an allow-listed endpoint, through the webhook outbox: the call is queued in the
    step's transaction and sent by the sweep with a timeout (:mod:`.webhooks`), never inside
    the request that ran the step; failures are retried there with backoff."""

    name = "call_webhook"
    lazy_row = True
    icon = "⇄"
    title: ClassVar[Text] = {"zh-CN": "调用接口", "en": "Call a webhook"}
    options: ClassVar[Options] = {"url": {"type": "string", "pattern": "^https?://"},
               "method": {"enum": ["POST", "PUT", "GET"]}, "body": _VALUES,
               "retry": RETRY_OPTION}
    required = ("url",)
    expressions = ("body.*",)
    retry = RetryPolicy(attempts=5, backoff="1m")

    def run(self, x: Exec) -> Outcome:
        names = x.names()
        body = {k: to_json_value(x.evaluate(f"body.{k}", names))
                for k in (x.step.get("body") or {})}
        retry = x.step.get("retry") or {}
        call_id = webhooks.enqueue(
            x.session, idempotency_key=x.key, method=x.step.get("method", "POST"),
            url=str(x.step.get("url")), body=body, run_id=x.run.id, step_run_id=x.step_run_id,
            step_key=x.step.key, flow_key=x.spec.key,
            attempts=int(retry.get("attempts", webhooks.DEFAULT_ATTEMPTS)))
        x.history("webhook_queued", {"call_id": call_id})
        return ("next", x.step.next)


class StartSubflow(StepType):
    """Start another flow for the same patient/encounter (its own run; this one continues)."""

    name = "start_subflow"
    icon = "↪"
    title: ClassVar[Text] = {"zh-CN": "启动子流程", "en": "Start a subflow"}
    options: ClassVar[Options] = {"flow": {"$ref": "#/$defs/key"}}
    required = ("flow",)
    references = (("flow", "flow"),)
    retry = RetryPolicy(attempts=3, backoff="5m")

    def run(self, x: Exec) -> Outcome:
        child = start(x.session, flow_key=x.step.get("flow"), patient_id=x.run.patient_id,
                      encounter_id=x.run.encounter_id,
                      context={**x.run.context, "_parent_run": x.run.id},
                      idempotency_key=f"subflow:{x.key}")
        x.history("subflow", {"run_id": child})
        return ("next", x.step.next)


class End(StepType):
    """End the run."""

    name = "end"
    lazy_row = True
    icon = "■"
    title: ClassVar[Text] = {"zh-CN": "结束", "en": "End"}
    edges = ()

    def run(self, x: Exec) -> Outcome:
        return ("end", None)


STEP_TYPES: dict[str, StepType] = {t.name: t for t in (
    SendMessage(), SendForm(), Wait(), CreateTask(), Approval(), Decision(), Parallel(),
    SetValues(), CallWebhook(), StartSubflow(), End())}


def reminder(x: Exec) -> None:
    """Send the ``reminder_template`` (or the original template) of a waiting ``send_form``."""
    values = dict(x.step_run.state.get("values", {}))
    values.update({k: v for k, v in _standard_values(x).items() if k not in values})
    template = x.step.get("reminder_template", x.step.get("template"))
    expires = x.step_run.state.get("link_expires_at")
    _send(x, template, values, suffix=":reminder",
          link_expires_at=datetime.fromisoformat(expires) if expires else None)
