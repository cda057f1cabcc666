"""Built-in step types. Each registers in ``registry.catalogue("step_type")`` like a plugin's.

A step type has ``run(x: Exec) -> Outcome`` (see :mod:`.runtime`); pausing steps return
``("wait", None)`` after arranging what resumes them (a timer row, ``waiting_for`` an event, or
approval tasks).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any, ClassVar

from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.expression_runtime import to_json_value
from careloop.engine.hospital import hospital_name
from careloop.engine.i18n import pick
from careloop.engine.links import absolute, base_url
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import create_task, resolve_assignee
from careloop.flows import documents, webhooks
from careloop.flows.calendar import get_calendar
from careloop.flows.outbox import consented, enqueue
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

# What a step type declares besides ``run`` (a plugin's step type declares the same):
#   title     {"zh-CN": …, "en": …}, the builder's palette and panel heading;
#   options   the step properties it uses (names in flows/schema/flow.json ``$defs.step``), in
#             the order the builder's property panel shows them;
#   required  the properties the compiler insists on (``flow.missing-field``); a tuple inside
#             means "one of these".
Required = tuple[str | tuple[str, ...], ...]

# How long a discharge-summary / medication-guidance link opens its page.
DOCUMENT_LINK_VALIDITY = timedelta(days=30)


def _service(name: str) -> Any:
    service = loaded_registry().catalogue("service").get(name)
    if service is None:
        raise StepError(f"service '{name}' is not registered")
    return service


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
    }
    names = x.names()
    for name in x.step.get("values", {}) or {}:
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
          link_expires_at: datetime | None = None) -> int:
    valid_for = x.step.get("valid_for")
    return int(enqueue(x.session, template_key=template, channel=_channel(x),
                       patient_id=x.run.patient_id, values=values,
                       urgent=bool(x.step.get("urgent", False)),
                       idempotency_key=x.key + suffix,
                       source_ref=source_ref(x.run, x.step.key),
                       valid_for=parse_duration(valid_for) if valid_for else None,
                       link_expires_at=link_expires_at))


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


class SendMessage:
    """Render a template for the patient and write it to the outbox."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "发送消息", "en": "Send a message"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "template", "channels", "values",
                                          "links", "urgent", "valid_for", "next")
    required: ClassVar[Required] = ("template",)

    def run(self, x: Exec) -> Outcome:
        values = _standard_values(x)
        link_expires = _document_links(x, values)
        message_id = _send(x, x.step.get("template"), values, link_expires_at=link_expires)
        x.history("message", {"message_id": message_id})
        return ("next", x.step.next)


class SendForm:
    """Create a form request (service ``forms.create_request``), send its link, then wait for
    ``form.submitted``; optional reminder after ``remind_after``; on expiry go to
    ``on_timeout`` (default: the next step)."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "发送问卷", "en": "Send a form"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "form", "template", "channels",
                                          "values", "urgent", "expires_after", "valid_for",
                                          "remind_after", "reminder_template", "on_timeout",
                                          "on_undelivered", "next")
    required: ClassVar[Required] = ("form", "template")

    def run(self, x: Exec) -> Outcome:
        expires = after(x.step.get("expires_after", "7d"))
        channel = _channel(x)
        request = _service("forms.create_request")(
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


class Wait:
    """Wait a ``duration``, ``until`` a computed time, or for an ``event`` (with ``timeout``)."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "等待", "en": "Wait"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "duration", "until", "event", "match",
                                          "timeout", "on_timeout", "next")
    required: ClassVar[Required] = (("duration", "until", "event"),)

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


class CreateTask:
    """A to-do through :mod:`careloop.engine.tasks` (the assignee rules rules use too)."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "创建任务", "en": "Create a task"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "task_title", "task_kind", "assignee",
                                          "priority", "due", "escalate_to", "on_complete",
                                          "next")
    required: ClassVar[Required] = ("task_title", "assignee")

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
            source_ref=source_ref(x.run, x.step.key), idempotency_key=x.key,
            escalation={"chain": list(x.step.get("escalate_to") or []), "level": 0},
            details={"title": dict(title), "flow": x.spec.key, "run_id": x.run.id,
                     **({"on_complete": dict(x.step.get("on_complete"))}
                        if x.step.get("on_complete") else {})})
        x.history("task", {"task_id": task.id})
        return ("next", x.step.next)


class Approval:
    """Approval tasks for ``approvers`` (kind ``task_kind``, default ``approval``);
    :func:`careloop.flows.approvals.decide` resumes (approve → ``next``, reject → ``on_reject``
    or the step the decider names)."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "审批", "en": "Approval"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "task_title", "task_kind",
                                          "approvers", "mode", "required", "due", "escalate_to",
                                          "on_reject", "next")
    required: ClassVar[Required] = ("approvers",)

    def run(self, x: Exec) -> Outcome:
        from careloop.flows.approvals import open_approval

        open_approval(x)
        return ("wait", None)


class Decision:
    """``if``/``then``/``else``, or ``cases`` (first true ``when``) with a ``default``."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "条件分支", "en": "Decision"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "if", "then", "else", "cases",
                                          "default")
    required: ClassVar[Required] = (("if", "cases"),)

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


class Parallel:
    """Start every branch; the step joins when all (or the first) reach ``next: join``."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "并行分支", "en": "Parallel branches"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "branches", "join", "next")
    required: ClassVar[Required] = ("branches",)

    def run(self, x: Exec) -> Outcome:
        branches = list(x.step.get("branches"))
        x.step_run.status, x.step_run.waiting_for = "waiting", "join"
        x.step_run.state = {"done": 0, "total": len(branches)}
        x.session.flush()
        for branch in branches:
            enter(x.session, x.run, x.spec, branch, x.step_run.id)
        return ("hold", None)


class SetValues:
    """Set run context values from expressions."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "设置变量", "en": "Set values"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "set", "next")
    required: ClassVar[Required] = ("set",)

    def run(self, x: Exec) -> Outcome:
        names = x.names()
        updates = {k: to_json_value(x.evaluate(f"set.{k}", names)) for k in x.step.get("set")}
        x.run.context = {**x.run.context, **updates}
        return ("next", x.step.next)


class CallWebhook:
    """HTTP to an allow-listed endpoint, through the webhook outbox: the call is queued in the
    step's transaction and sent by the sweep with a timeout (:mod:`.webhooks`), never inside
    the request that ran the step; failures are retried there with backoff."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "调用接口", "en": "Call a webhook"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "url", "method", "body", "retry",
                                          "next")
    required: ClassVar[Required] = ("url",)

    def run(self, x: Exec) -> Outcome:
        names = x.names()
        body = {k: to_json_value(x.evaluate(f"body.{k}", names))
                for k in (x.step.get("body") or {})}
        retry = x.step.get("retry") or {}
        call_id = webhooks.enqueue(
            x.session, idempotency_key=x.key, method=x.step.get("method", "POST"),
            url=str(x.step.get("url")), body=body, run_id=x.run.id, step_run_id=x.step_run.id,
            step_key=x.step.key, flow_key=x.spec.key,
            attempts=int(retry.get("attempts", webhooks.DEFAULT_ATTEMPTS)))
        x.history("webhook_queued", {"call_id": call_id})
        return ("next", x.step.next)


class StartSubflow:
    """Start another flow for the same patient/encounter (its own run; this one continues)."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "启动子流程", "en": "Start a subflow"}
    options: ClassVar[tuple[str, ...]] = ("title", "when", "flow", "next")
    required: ClassVar[Required] = ("flow",)

    def run(self, x: Exec) -> Outcome:
        child = start(x.session, flow_key=x.step.get("flow"), patient_id=x.run.patient_id,
                      encounter_id=x.run.encounter_id,
                      context={**x.run.context, "_parent_run": x.run.id},
                      idempotency_key=f"subflow:{x.key}")
        x.history("subflow", {"run_id": child})
        return ("next", x.step.next)


class End:
    """End the run."""

    title: ClassVar[dict[str, str]] = {"zh-CN": "结束", "en": "End"}
    options: ClassVar[tuple[str, ...]] = ("title", "when")
    required: ClassVar[Required] = ()

    def run(self, x: Exec) -> Outcome:
        return ("end", None)


STEP_TYPES: dict[str, Any] = {
    "send_message": SendMessage(), "send_form": SendForm(), "wait": Wait(),
    "create_task": CreateTask(), "approval": Approval(), "decision": Decision(),
    "parallel": Parallel(), "set": SetValues(), "call_webhook": CallWebhook(),
    "start_subflow": StartSubflow(), "end": End(),
}


def reminder(x: Exec) -> None:
    """Send the ``reminder_template`` (or the original template) of a waiting ``send_form``."""
    values = dict(x.step_run.state.get("values", {}))
    values.update({k: v for k, v in _standard_values(x).items() if k not in values})
    template = x.step.get("reminder_template", x.step.get("template"))
    expires = x.step_run.state.get("link_expires_at")
    _send(x, template, values, suffix=":reminder",
          link_expires_at=datetime.fromisoformat(expires) if expires else None)
