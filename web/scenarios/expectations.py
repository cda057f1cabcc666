"""What a scenario can expect after a step; each check returns ``None`` or what it saw instead.

Who-sees-what checks (``inbox``, ``page``, ``dashboard``, ``submissions.seen_by``) go through the
web app as the signed-in person; the record of what happened (tasks, messages, runs, tags,
alerts) is read from the database the engines wrote, as the hospital's own audit would.

    expect:
      - tasks: {role: head_nurse, department: cardiology, priority: urgent, count: 1}
      → "expected 1 task (role head_nurse, department cardiology, priority urgent), saw 0
         (tasks: 出院第7天电话随访 [nurse/cardiology, open, normal])"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from careloop.engine.clock import now_utc, to_local
from careloop.engine.db import transaction
from careloop.engine.domain import PatientTag, Task, User
from careloop.web.scenarios.compiler import parse_instant
from careloop.web.scenarios.journey import UNDELIVERED, StepFailed, task_matches

if TYPE_CHECKING:
    from careloop.web.scenarios.journey import Journey

Check = Callable[["Journey", dict[str, Any]], "str | None"]
ANY_LINK = re.compile(r"(?:https?://[^\s/]+)?/[A-Za-z-]+/[^\s，。；]+")
FILTER_WORDS = ("of", "count", "seen_by", "not_seen_by", "as", "link", "where", "column", "value",
                "rows")


def _wanted(options: dict[str, Any]) -> str:
    shown = [f"{k} {v}" for k, v in options.items() if k not in FILTER_WORDS]
    return f" ({', '.join(shown)})" if shown else ""


def _count(noun: str, options: dict[str, Any], found: Sequence[Any], everything: str) -> str | None:
    """Compare what was found with ``count`` (exactly) or, without it, at least one."""
    wanted = options.get("count")
    if wanted is None and found:
        return None
    if wanted is not None and len(found) == wanted:
        return None
    expected = f"{wanted}" if wanted is not None else "at least 1"
    plural = noun if (wanted == 1) else noun + "s"
    return f"expected {expected} {plural}{_wanted(options)}, saw {len(found)} ({everything})"


def _usernames(journey: Journey) -> dict[int, str]:
    with transaction(journey.engine) as session:
        return {user_id: name for user_id, name in session.execute(
            select(User.id, User.username))}


def _describe_task(task: Task, users: dict[int, str], due: bool = False) -> str:
    who = "/".join(x for x in (task.assignee_role, task.department_id) if x)
    if task.assignee_user_id:
        who = (who + " " if who else "") + f"user {users.get(task.assignee_user_id, '?')}"
    when = (f", due {to_local(task.due_at):%Y-%m-%d %H:%M}" if due and task.due_at
            else ", no due time" if due else "")
    return f"{task.title} [{who or 'unassigned'}, {task.status}, {task.priority}{when}]"


def _same_instant(seen: datetime | None, wanted: str) -> bool:
    """Whether a stored time is the wanted instant, to the minute (hospital time when the
    instant has no offset)."""
    if seen is None:
        return False
    if seen.tzinfo is None:  # SQLite hands back naive UTC
        seen = seen.replace(tzinfo=UTC)
    return abs((seen - parse_instant(wanted)).total_seconds()) < 60


def _due_within(task: Task, after: datetime | None, before: datetime | None) -> bool:
    """``due_after`` (at or after) and ``due_before`` (before) bound the task's due time."""
    if after is None and before is None:
        return True
    if task.due_at is None:
        return False
    due = task.due_at if task.due_at.tzinfo else task.due_at.replace(tzinfo=UTC)
    return (after is None or due >= after) and (before is None or due < before)


def check_tasks(journey: Journey, options: dict[str, Any]) -> str | None:
    users = _usernames(journey)
    by_name = {v: k for k, v in users.items()}
    with transaction(journey.engine) as session:
        tasks = list(session.scalars(select(Task).order_by(Task.id)))
    due_after = parse_instant(options["due_after"]) if "due_after" in options else None
    due_before = parse_instant(options["due_before"]) if "due_before" in options else None
    bounded = due_after is not None or due_before is not None
    columns = {"kind": "kind", "patient": "patient_id", "role": "assignee_role",
               "department": "department_id", "priority": "priority", "status": "status",
               "outcome": "outcome", "title": "title"}
    found = [t for t in tasks
             if all(getattr(t, column) == options[name] for name, column in columns.items()
                    if name in options)
             and ("title_contains" not in options or options["title_contains"] in t.title)
             and ("user" not in options or t.assignee_user_id == by_name.get(options["user"]))
             and ("overdue" not in options or _overdue(t) == options["overdue"])
             and ("due" not in options or _same_instant(t.due_at, options["due"]))
             and _due_within(t, due_after, due_before)]
    everything = "tasks: " + ("; ".join(_describe_task(t, users, bounded or "due" in options)
                                        for t in tasks) or "none")
    return _count("task", options, found, everything)


def _overdue(task: Task) -> bool:
    return (task.status in ("open", "in_progress") and task.due_at is not None
            and task.due_at < now_utc())


def check_inbox(journey: Journey, options: dict[str, Any]) -> str | None:
    view = options.get("view", "mine")
    tasks = journey.inbox(options["of"], view)
    found = [t for t in tasks if task_matches(t, options)]
    username = journey.username(options["of"])
    shown = "; ".join(f"{t.get('title')} [{t.get('priority')}]" for t in tasks) or "empty"
    return _count("task", options, found, f"{username}'s {view} inbox: {shown}")


def check_messages(journey: Journey, options: dict[str, Any]) -> str | None:
    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import message_text

    with transaction(journey.engine) as session:
        messages = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        texts = {m.id: message_text(session, m)[1] for m in messages}
    columns = {"template": "template_key", "channel": "channel", "status": "status",
               "patient": "patient_id"}
    after = parse_instant(options["after"]) if "after" in options else None
    before = parse_instant(options["before"]) if "before" in options else None
    found = [m for m in messages if all(getattr(m, column) == options[name]
                                        for name, column in columns.items() if name in options)
             and ("delivered" not in options
                  or (m.status not in UNDELIVERED) == options["delivered"])
             and (after is None or (m.sent_at or m.created_at) >= after)
             and (before is None or (m.sent_at or m.created_at) < before)
             and all(text in texts[m.id] for text in options.get("contains", ()))]
    everything = "messages: " + ("; ".join(
        f"{m.template_key} {m.channel} {m.status}"
        + (f" {to_local(m.sent_at):%m-%d %H:%M}" if m.sent_at and (after or before) else "")
        + (f" “{texts[m.id][:120]}”" if "contains" in options else "")
        for m in messages) or "none")
    counted = _count("message", options, found, everything)
    if counted is not None:
        return counted
    link = options.get("link", "any")
    for message in found:
        links = ANY_LINK.findall(texts[message.id])
        kinds = {"absolute" if re.match(r"https?://", x) else "relative" for x in links}
        if link == "none" and links:
            return f"expected message {message.template_key} to carry no link, it has {kinds}"
        if link in ("absolute", "relative") and (not links or kinds != {link}):
            return (f"expected {link} links in message {message.template_key}, saw "
                    + (", ".join(sorted(kinds)) if links else "no link"))
    return None


def check_submissions(journey: Journey, options: dict[str, Any]) -> str | None:
    from careloop.forms.models import Submission

    with transaction(journey.engine) as session:
        rows = list(session.scalars(select(Submission).order_by(Submission.id)))
    columns = {"form": "form_key", "status": "status", "patient": "patient_id",
               "touchpoint": "touchpoint_key"}
    found = [s for s in rows if all(getattr(s, column) == options[name]
                                    for name, column in columns.items() if name in options)]
    everything = "submissions: " + ("; ".join(f"{s.form_key} {s.status}" for s in rows)
                                    or "none")
    counted = _count("submission", options, found, everything)
    if counted is not None or "seen_by" not in options:
        return counted
    client, username = journey.browser(options["seen_by"])
    for submission in found:
        answer = client.get(f"/api/v1/patients/{submission.patient_id}/submissions")
        ids = [s["id"] for s in answer.json()] if answer.status_code == 200 else []
        if submission.id not in ids:
            return (f"expected {username} to see submission {submission.form_key} of patient "
                    f"{submission.patient_id}, the patient's submissions answered "
                    f"{answer.status_code} listing {len(ids)}")
    return None


def check_patient(journey: Journey, options: dict[str, Any]) -> str | None:
    with transaction(journey.engine) as session:
        tags = set(session.scalars(select(PatientTag.tag).where(
            PatientTag.patient_id == options["id"])))
    missing = sorted(set(options.get("tags") or []) - tags)
    unwanted = sorted(set(options.get("not_tags") or []) & tags)
    if missing or unwanted:
        return (f"patient {options['id']}: "
                + (f"missing tags {missing}" if missing else "")
                + ("; " if missing and unwanted else "")
                + (f"unexpected tags {unwanted}" if unwanted else "")
                + f" (tags: {', '.join(sorted(tags)) or 'none'})")
    return None


def check_flow_runs(journey: Journey, options: dict[str, Any]) -> str | None:
    from careloop.flows.models import FlowRun

    with transaction(journey.engine) as session:
        runs = list(session.scalars(select(FlowRun).order_by(FlowRun.id)))
    columns = {"flow": "flow_key", "status": "status", "patient": "patient_id"}
    found = [r for r in runs if all(getattr(r, column) == options[name]
                                    for name, column in columns.items() if name in options)]
    everything = "runs: " + ("; ".join(f"{r.flow_key} {r.status}" for r in runs) or "none")
    return _count("flow run", options, found, everything)


def check_escalations(journey: Journey, options: dict[str, Any]) -> str | None:
    with transaction(journey.engine) as session:
        tasks = list(session.scalars(select(Task).order_by(Task.id)))
    level = options.get("level", 1)
    found = [t for t in tasks if int((t.escalation or {}).get("level") or 0) >= level
             and ("title_contains" not in options or options["title_contains"] in t.title)]
    everything = "tasks: " + ("; ".join(
        f"{t.title} level {(t.escalation or {}).get('level', 0)}" for t in tasks) or "none")
    return _count("escalated task", {**options, "level": level}, found, everything)


def check_alerts(journey: Journey, options: dict[str, Any]) -> str | None:
    from careloop.rules.models import RuleAlert

    with transaction(journey.engine) as session:
        alerts = list(session.scalars(select(RuleAlert).order_by(RuleAlert.id)))
    columns = {"level": "level", "status": "status", "patient": "patient_id",
               "department": "department_id", "rule": "rule_key",
               "acknowledged_by": "acknowledged_by"}
    found = [a for a in alerts if all(getattr(a, column) == options[name]
                                      for name, column in columns.items() if name in options)]
    everything = "alerts: " + ("; ".join(f"{a.level} {a.status} {a.rule_key}" for a in alerts)
                               or "none")
    counted = _count("alert", options, found, everything)
    if counted is not None:
        return counted
    for option, wanted in (("seen_by", True), ("not_seen_by", False)):
        if option not in options:
            continue
        listed, username = _alert_centre(journey, options[option])
        for alert in found:
            if (alert.id in listed) != wanted:
                return (f"expected {username} {'' if wanted else 'not '}to see the "
                        f"{alert.level} alert {alert.rule_key} of patient {alert.patient_id} in "
                        f"the alert centre; it lists {len(listed)} alert(s)")
    return None


def _alert_centre(journey: Journey, who: Any) -> tuple[set[int], str]:
    """The ids of the alerts (open and acknowledged) that person's alert centre lists."""
    client, username = journey.browser(who)
    answer = client.get("/api/v1/alerts?status=all")
    if answer.status_code == 403:
        return set(), username  # not allowed into the alert centre: sees none
    if answer.status_code != 200:
        raise StepFailed(f"{username}'s alert centre answered {answer.status_code}")
    return {int(a["id"]) for a in answer.json()}, username


def check_dashboard(journey: Journey, options: dict[str, Any]) -> str | None:
    client, username = journey.browser(options["as"])
    answer = client.get(f"/api/v1/reports/dashboards/{options['key']}")
    if answer.status_code != 200:
        return f"{username} opened dashboard {options['key']}: {answer.status_code}"
    tiles = {t["chart"]: t for t in answer.json()["tiles"]}
    if options["chart"] not in tiles:
        return f"dashboard {options['key']} has no tile {options['chart']} (tiles: {list(tiles)})"
    data = tiles[options["chart"]]["data"] or {"rows": []}
    # A tile's rows are labelled (心内科) and keep the raw value in ``<column>__key``
    # (cardiology): ``where`` matches either.
    rows = [r for r in data["rows"]
            if all(v in (r.get(k), r.get(f"{k}__key")) for k, v in
                   (options.get("where") or {}).items())]
    if "rows" in options and len(rows) != options["rows"]:
        return f"expected {options['rows']} row(s) in {options['chart']}, saw {len(rows)}: {rows}"
    if "value" in options:
        shown = [c for c in data.get("columns") or [] if not str(c).endswith("__key")]
        column = options.get("column") or (shown or [None])[-1]
        values = [r.get(column) for r in rows]
        if not any(_same(v, options["value"]) for v in values):
            seen = values if rows else (f"no rows matching {options.get('where')} "
                                        f"(rows: {data['rows']})")
            return (f"expected {column} = {options['value']} in {options['chart']} as "
                    f"{username} sees it, saw {seen}")
    return None


def _same(seen: Any, wanted: Any) -> bool:
    if isinstance(seen, (int, float)) and isinstance(wanted, (int, float)):
        return abs(float(seen) - float(wanted)) < 1e-6
    return bool(seen == wanted)


def check_page(journey: Journey, options: dict[str, Any]) -> str | None:
    client, username = journey.browser(options["as"])
    path = journey.path(options["path"])
    page = client.get(path)
    wanted = options.get("status", 200)
    if page.status_code != wanted:
        return f"{username} opened {path}: expected {wanted}, saw {page.status_code}"
    missing = [text for text in options.get("contains") or [] if text not in page.text]
    present = [text for text in options.get("not_contains") or [] if text in page.text]
    if missing or present:
        return (f"{path} as {username} sees it: "
                + (f"does not show {missing}" if missing else "")
                + ("; " if missing and present else "")
                + (f"shows {present}" if present else ""))
    return None


def check_pdf(journey: Journey, options: dict[str, Any]) -> str | None:
    """The newest message of ``template`` to that person links to a PDF they can open, whose
    text shows every ``contains`` and none of ``not_contains``."""
    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import message_text

    client, username = journey.browser(options["as"])
    with transaction(journey.engine) as session:
        user_id = session.scalars(select(User.id).where(User.username == username)).first()
        row = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == options["template"],
            OutboxMessage.user_id == user_id).order_by(OutboxMessage.id.desc())).first()
        body = message_text(session, row)[1] if row is not None else ""
    if row is None:
        return f"no message {options['template']} to {username}"
    found = ANY_LINK.findall(body)
    if not found:
        return f"message {options['template']} to {username} carries no link"
    path = re.sub(r"^https?://[^/]+", "", found[0])
    page = client.get(path)
    if page.status_code != 200 or not page.content.startswith(b"%PDF"):
        return f"{username} opened {path}: {page.status_code}, not a PDF"
    # PDF text comes back with spaces between CJK glyphs: compared without any whitespace
    text = "".join(pdf_text(page.content).split())
    missing = [x for x in options.get("contains") or [] if "".join(x.split()) not in text]
    present = [x for x in options.get("not_contains") or [] if "".join(x.split()) in text]
    if missing or present:
        return (f"the PDF {path} as {username} reads it: "
                + (f"does not show {missing}" if missing else "")
                + ("; " if missing and present else "") + (f"shows {present}" if present else "")
                + f" (text: {text[:600]})")
    return None


def pdf_text(content: bytes) -> str:
    """The text of a PDF, page after page, read with PDFium (pypdfium2: it reads the CJK text
    fpdf2 writes with the Noto CJK font as the characters they are)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(content)
    try:
        return "\n".join(page.get_textpage().get_text_range() for page in doc)
    finally:
        doc.close()


CHECKS: dict[str, Check] = {
    "tasks": check_tasks, "inbox": check_inbox, "messages": check_messages,
    "submissions": check_submissions, "patient": check_patient, "flow_runs": check_flow_runs,
    "escalations": check_escalations, "alerts": check_alerts, "dashboard": check_dashboard,
    "page": check_page, "pdf": check_pdf,
}

__all__ = ["CHECKS", "StepFailed"]
