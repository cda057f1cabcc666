"""The steps of a scenario, done the way people do them, through the web app in-process.

A :class:`Journey` holds what persists between steps: the scenario's clock, the HIS's API key, the
staff set up and their signed-in browsers (one cookie jar each), and the patient page last opened.
Every step runs with the engine clock frozen at the journey's time.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.clock import frozen_now, hospital_tz, to_local
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.web.scenarios.compiler import parse_duration, parse_instant
from careloop.web.scenarios.spec import ExpectSpec, StepSpec

LINK = re.compile(r"(?:https?://[^\s/]+)?/f/[A-Za-z0-9_\-]+")
# Outbox states in which a message has not reached the patient (it cannot be opened from there).
EDUCATION_LINK = re.compile(r"(?:https?://[^\s/]+)?/e/[A-Za-z0-9_\-]+")
READ_MARK = re.compile(r'id="edu-end" data-read="(/e/[A-Za-z0-9_\-]+/read)"')
UNDELIVERED = ("pending", "sending", "failed", "cancelled", "suppressed", "expired")
MAX_TICKS = 5000  # a travel that needs more ticks than this is a runaway timer, not a journey


class StepFailed(Exception):
    """Raised when a step cannot be done as written (an event refused, no link, no such task…);
    the message says what was seen instead."""


class _FormReader(HTMLParser):
    """The patient page's form: its action, hidden inputs, input names and submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.names: set[str] = set()
        self.buttons: list[str] = []
        self.errors: list[str] = []
        self._in_form = False
        self._in_error = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form" and attr.get("id") == "careloop-form":
            self._in_form, self.action = True, attr.get("action")
        elif tag in ("input", "select", "textarea") and self._in_form and attr.get("name"):
            if attr.get("type") == "hidden" and attr["name"].startswith(("_", "csrf")):
                self.hidden[attr["name"]] = attr.get("value", "")
            else:
                self.names.add(attr["name"])
        elif tag == "button" and self._in_form and attr.get("name") == "_action":
            self.buttons.append(attr.get("value", ""))
        elif tag == "div" and "error-summary" in attr.get("class", ""):
            self._in_error += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "div" and self._in_error:
            self._in_error -= 1

    def handle_data(self, data: str) -> None:
        if self._in_error and data.strip():
            self.errors.append(data.strip())


def read_form(html: str) -> _FormReader:
    reader = _FormReader()
    reader.feed(html)
    return reader


def _as_posted(value: Any) -> list[str]:
    """A YAML answer as the strings a browser posts (``True`` → ``yes``)."""
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if isinstance(value, list):
        return [v for item in value for v in _as_posted(item)]
    return [str(value)]


def _fields_for(answers: dict[str, Any], names: set[str]) -> list[tuple[str, str]]:
    """Form fields for the answers whose inputs are on this page (``bp.systolic`` for parts)."""
    posted: list[tuple[str, str]] = []
    for key, value in answers.items():
        if isinstance(value, dict):
            posted += [(f"{key}.{part}", v) for part, sub in value.items()
                       for v in _as_posted(sub) if f"{key}.{part}" in names]
        elif key in names:
            posted += [(key, v) for v in _as_posted(value)]
    return posted


class Journey:
    """One scenario's run state and its steps (``run``) and checks (``check``)."""

    def __init__(self, engine: Engine, start: datetime) -> None:
        from careloop.flows.ingest import create_api_key
        from careloop.web.app import create_app

        self.engine, self.clock = engine, start
        self.app: FastAPI = create_app()
        self.users: dict[str, tuple[str, str | None]] = {}
        self.passwords: dict[str, str] = {}
        self.browsers: dict[str, TestClient] = {}
        self.csrf: dict[str, str] = {}
        self.patient = TestClient(self.app)  # the patient's phone browser: no cookies
        self.his = TestClient(self.app)
        self.page: tuple[str, str] | None = None  # (url path, html) of the open patient page
        self.opened_task: dict[str, Any] | None = None
        self.event_count = 0
        with frozen_now(start), transaction(engine) as session:
            self.api_key = create_api_key(session, "scenario-his")

    # --- running steps -------------------------------------------------------------------

    def run(self, step: StepSpec) -> str:
        """Do one step at the journey's clock; returns what was done, for the run's output."""
        if step.step_type.moves_clock:
            return step.run(self)
        with frozen_now(self.clock):
            done = step.run(self)
            # what the step's requests acknowledged (HIS events, a patient's answers) is
            # handled now, as the serving process's dispatcher would right after
            self.drain_events()
            return done

    def do_setup(self, options: dict[str, Any]) -> str:
        from careloop.web import admin

        with transaction(self.engine) as session:
            for dept in options.get("departments") or []:
                if session.get(Department, dept["id"]) is None:
                    admin.create_department(session, id=dept["id"], name_zh=dept["name"]["zh-CN"],
                                            name_en=dept["name"]["en"],
                                            parent_id=dept.get("parent"))
            for user in options.get("users") or []:
                password = _password_for(user["username"])
                try:
                    row = admin.create_user(session, username=user["username"],
                                            display_name=user.get("display_name")
                                            or user["username"], password=password)
                    admin.grant(session, row, user["role"], user.get("department"))
                except admin.AdminError as exc:
                    hint = (f" (department {user.get('department')!r} must exist: list it "
                            "under setup.departments)"
                            if exc.key == "web.admin.unknown_department" else "")
                    raise StepFailed(f"cannot set up user {user['username']}: {exc.key}"
                                     + hint) from exc
                self.passwords[user["username"]] = password
                self.users[user["username"]] = (user["role"], user.get("department"))
        return (f"{len(options.get('departments') or [])} department(s), "
                f"{len(options.get('users') or [])} user(s)")

    def do_his(self, events: list[dict[str, Any]]) -> str:
        accepted = []
        for event in events:
            self.event_count += 1
            body = {"event_id": event.get("event_id") or f"scenario-{self.event_count}",
                    "type": event["type"], "payload": event["payload"]}
            if event.get("occurred_at"):
                body["occurred_at"] = parse_instant(event["occurred_at"]).isoformat()
            answer = self.his.post("/api/v1/events", json=body,
                                   headers={"X-API-Key": self.api_key})
            wanted = event.get("status", 200)
            if answer.status_code != wanted:
                raise StepFailed(f"the events API answered {answer.status_code} to "
                                 f"{event['type']} (expected {wanted}): {answer.text[:500]}")
            accepted.append(f"{event['type']} → {answer.status_code}")
        return "; ".join(accepted)

    def drain_events(self) -> None:
        """Run the handlers of the events the API acknowledged, as the serving process's
        dispatcher would right after (the same code: :func:`careloop.engine.dispatcher.drain`)."""
        from careloop.engine.dispatcher import drain

        report = drain(self.engine)
        if report.failed:
            raise StepFailed(f"the handlers of {report.failed} event(s) failed (see "
                             "/admin/integration)")

    # --- time ----------------------------------------------------------------------------

    def travel(self, travel: Any) -> str:
        """Move the clock and tick at every instant something falls due on the way, as the
        scheduler's ticker would: timers, outbox retries, task due times, the daily event."""
        from careloop.engine.ticker import tick

        target = (self.clock + parse_duration(travel) if isinstance(travel, str)
                  else parse_instant(travel["to"]))
        if target < self.clock:
            raise StepFailed(f"travel to {to_local(target):%Y-%m-%d %H:%M} goes back in time "
                             f"(the scenario is at {to_local(self.clock):%Y-%m-%d %H:%M})")
        ticks, failed = 0, []
        last = self.clock
        while ticks < MAX_TICKS:
            due = self._next_due(last, target)
            if due is None:
                break
            ticks += 1
            with frozen_now(due):
                outcome = tick(self.engine)
            failed += [f"{name} {state}" for name, state in outcome.items() if state != "ok"]
            last = due
        if ticks >= MAX_TICKS:
            raise StepFailed(f"more than {MAX_TICKS} ticks before {target.isoformat()}: "
                             "something falls due again at every tick")
        self.clock = target
        if failed:
            raise StepFailed("a tick failed: " + ", ".join(dict.fromkeys(failed)))
        return f"to {to_local(target):%Y-%m-%d %H:%M} ({ticks} tick(s))"

    def _next_due(self, after: datetime, until: datetime) -> datetime | None:
        """The earliest instant in ``(after, until]`` at which a tick has work; ``until``
        itself is always ticked once."""
        from careloop.engine.domain import Task
        from careloop.engine.events import daily_at
        from careloop.flows.models import FlowTimer, OutboxMessage

        if after >= until:
            return None
        found = [until]
        with transaction(self.engine) as session:
            for column, where in ((FlowTimer.due_at, FlowTimer.status == "pending"),
                                  (OutboxMessage.next_attempt_at,
                                   OutboxMessage.status == "pending"),
                                  (Task.due_at, Task.status.in_(("open", "in_progress")))):
                first = session.scalar(select(column).where(where, column > after,
                                                            column <= until)
                                       .order_by(column).limit(1))
                if first is not None:
                    found.append(first)
        local = to_local(after)
        for days in range((until - after).days + 2):
            day = local.date() + timedelta(days=days)
            instant = datetime.combine(day, daily_at(), hospital_tz())
            if after < instant <= until:
                found.append(instant)
                break
        return min(found)

    # --- the patient -----------------------------------------------------------------------

    def do_patient_opens_link(self, options: dict[str, Any]) -> str:
        from careloop.flows.models import OutboxMessage
        from careloop.flows.outbox import message_text
        from careloop.forms.models import FormRequest
        from careloop.forms.requests import hash_token

        with transaction(self.engine) as session:
            query = select(OutboxMessage).where(
                OutboxMessage.patient_id == options["patient"]).order_by(OutboxMessage.id.desc())
            if options.get("template"):
                query = query.where(OutboxMessage.template_key == options["template"])
            seen = []
            for message in session.scalars(query):
                seen.append(f"{message.template_key} {message.status}")
                if message.status in UNDELIVERED:
                    continue  # the patient has not received it
                for link in LINK.findall(message_text(session, message)[1]):
                    token = link.rsplit("/", 1)[1]
                    request = session.scalars(select(FormRequest).where(
                        FormRequest.token_hash == hash_token(token))).first()
                    if options.get("form") and (request is None
                                                or request.form_key != options["form"]):
                        continue
                    return self._open(link, message.template_key)
        wanted = " ".join(f"{k}={v}" for k, v in options.items())
        raise StepFailed(f"no delivered message with a form link for {wanted}; messages to the "
                         "patient: "
                         + (", ".join(seen) or "none"))

    def _open(self, link: str, template: str) -> str:
        parts = urlsplit(link)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        page = self.patient.get(path)
        reader = read_form(page.text)
        if page.status_code != 200 or reader.action is None:
            raise StepFailed(f"the link {_masked(link)} from message {template} answered "
                             f"{page.status_code} without a form: {_text_of(page.text)[:300]}")
        self.page = (reader.action, page.text)
        kind = "absolute" if parts.scheme else "relative"
        return f"opened {kind} link {_masked(link)} from message {template}"

    def do_scan_touchpoint(self, options: dict[str, Any]) -> str:
        """The patient's phone opens the address the touchpoint's printed QR code holds."""
        from careloop.forms.touchpoints import url_for

        with transaction(self.engine) as session:
            link = url_for(session, options["touchpoint"])
        path = urlsplit(link).path
        page = self.patient.get(path)
        reader = read_form(page.text)
        if page.status_code != 200 or reader.action is None:
            raise StepFailed(f"the QR code of touchpoint {options['touchpoint']} answered "
                             f"{page.status_code} without a form: {_text_of(page.text)[:300]}")
        self.page = (reader.action, page.text)
        return f"scanned the QR code of {options['touchpoint']}"

    def do_patient_reads_education(self, options: dict[str, Any]) -> str:
        """Open the education link as delivered; ``to_end``: post what the page's script posts
        when its end comes into view (the address the page itself names)."""
        from careloop.flows.education_send import opened_article
        from careloop.flows.models import OutboxMessage
        from careloop.flows.outbox import message_text

        with transaction(self.engine) as session:
            query = select(OutboxMessage).where(
                OutboxMessage.patient_id == options["patient"]).order_by(OutboxMessage.id.desc())
            seen, found = [], None
            for message in session.scalars(query):
                seen.append(f"{message.template_key} {message.status}")
                if message.status in UNDELIVERED:
                    continue
                for link in EDUCATION_LINK.findall(message_text(session, message)[1]):
                    article = opened_article(session, link.rsplit("/", 1)[1])
                    if options.get("article") in (None, article):
                        found = found or (link, message.template_key)
        if found is None:
            wanted = " ".join(f"{k}={v}" for k, v in options.items())
            raise StepFailed(f"no delivered message with an education link for {wanted}; "
                             "messages to the patient: " + (", ".join(seen) or "none"))
        link, template = found
        page = self.patient.get(urlsplit(link).path)
        read = READ_MARK.search(page.text)
        if page.status_code != 200 or read is None:
            raise StepFailed(f"the link {_masked(link)} from message {template} answered "
                             f"{page.status_code}: {_text_of(page.text)[:300]}")
        done = f"opened {_masked(link)} from message {template}"
        if options.get("to_end"):
            mark = self.patient.post(read.group(1))
            if mark.status_code != 204:
                raise StepFailed(f"reading to the end answered {mark.status_code}")
            done += " and read it to the end"
        return done

    def do_answer(self, answers: dict[str, Any]) -> str:
        if self.page is None:
            raise StepFailed("no patient page is open (the link was not opened)")
        done = fill_form(self.patient, self.page[1], answers, "the patient page")
        self.page = None
        return done

    # --- staff ---------------------------------------------------------------------------

    def username(self, who: Any) -> str:
        if isinstance(who, str):
            if who not in self.users:
                raise StepFailed(f"no user '{who}' was set up")
            return who
        found = [u for u, (role, dept) in self.users.items() if role == who.get("role")
                 and (who.get("department") is None or dept == who.get("department"))]
        if len(found) != 1:
            raise StepFailed(f"{len(found)} set-up users match {who}; exactly one is needed")
        return found[0]

    def browser(self, who: Any) -> tuple[TestClient, str]:
        """The user's signed-in browser (signing in through /login when its session ended)."""
        username = self.username(who)
        client = self.browsers.setdefault(username, TestClient(self.app))
        me = client.get("/api/v1/me")
        if me.status_code != 200:
            page = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            answer = client.post("/login", data={
                "username": username, "password": self.passwords[username],
                "csrf_token": token.group(1) if token else "", "next": "/"},
                follow_redirects=False)
            if answer.status_code != 303:
                raise StepFailed(f"{username} could not sign in ({answer.status_code})")
            me = client.get("/api/v1/me")
            if me.status_code != 200:
                raise StepFailed(f"{username} signed in but /api/v1/me answered {me.status_code}")
        self.csrf[username] = me.json()["csrf_token"]
        return client, username

    def inbox(self, who: Any, view: str = "mine") -> list[dict[str, Any]]:
        client, username = self.browser(who)
        answer = client.get(f"/api/v1/tasks?view={view}")
        if answer.status_code != 200:
            raise StepFailed(f"{username}'s inbox answered {answer.status_code}")
        tasks: list[dict[str, Any]] = answer.json()
        return tasks

    def do_staff(self, options: dict[str, Any]) -> str:
        client, username = self.browser(options["as"])
        done = [f"{username} signed in"]
        self.opened_task = None
        if options.get("visit"):
            page = client.get(options["visit"])
            if page.status_code != 200:
                raise StepFailed(f"{username} opened {options['visit']}: {page.status_code}")
            done.append(f"opened {options['visit']}")
        if "task" in options:
            view = options.get("view", "mine")
            tasks = self.inbox(options["as"], view)
            matching = [t for t in tasks if task_matches(t, options["task"])]
            if not matching:
                raise StepFailed(f"no task matching {options['task']} in {username}'s "
                                 f"{view} inbox; it shows: {_titles(tasks)}")
            task = matching[0]
            page = client.get(f"/tasks/{task['id']}")
            opened = client.get(f"/api/v1/tasks/{task['id']}")
            if page.status_code != 200 or opened.status_code != 200:
                raise StepFailed(f"{username} cannot open task {task['id']} (page "
                                 f"{page.status_code}, API {opened.status_code})")
            self.opened_task = opened.json()
            done.append(f"opened task {task['id']} {task['title']}")
        if "fill" in options:
            path = self.path(options["fill"]["path"])
            page = client.get(path)
            if page.status_code != 200 or read_form(page.text).action is None:
                raise StepFailed(f"{username} opened {path}: {page.status_code} without a form")
            done.append(f"{path}: " + fill_form(client, page.text, options["fill"]["answers"],
                                                f"{path} for {username}"))
        if "post" in options:
            done.append(self._post(client, username, options["post"]))
        action = options.get("action")
        if action in ("complete", "approve", "reject") and self.opened_task is not None:
            done.append(self._act(client, username, self.opened_task["id"], options))
        return "; ".join(done)

    def path(self, template: str) -> str:
        """A path with ``{task}`` (the task the last staff step opened), ``{submission}``
        (the newest submission) and ``{alert}`` (the newest alert) filled in, as the person
        would follow the link on the page."""
        from careloop.forms.models import Submission
        from careloop.rules.models import RuleAlert

        values: dict[str, object] = {}
        if "{task}" in template:
            if self.opened_task is None:
                raise StepFailed(f"{template}: no task was opened by a staff step")
            values["task"] = self.opened_task["id"]
        if "{submission}" in template:
            with transaction(self.engine) as session:
                values["submission"] = session.scalar(
                    select(Submission.id).order_by(Submission.id.desc()).limit(1))
            if values["submission"] is None:
                raise StepFailed(f"{template}: there is no submission yet")
        if "{alert}" in template:
            with transaction(self.engine) as session:
                values["alert"] = session.scalar(
                    select(RuleAlert.id).order_by(RuleAlert.id.desc()).limit(1))
            if values["alert"] is None:
                raise StepFailed(f"{template}: no alert has been raised yet")
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError) as exc:
            raise StepFailed(f"{template}: only {{task}}, {{submission}} and {{alert}} can be "
                             f"filled in ({exc})") from exc

    def _post(self, client: TestClient, username: str, post: dict[str, Any]) -> str:
        path = self.path(post["path"])
        headers = {"X-CSRF-Token": self.csrf[username]}
        if "json" in post:  # the console's API, as the page's script calls it
            answer = client.post(path, json=post["json"], headers=headers,
                                 follow_redirects=False)
        else:
            fields = {k: _as_posted(v)[0] for k, v in (post.get("fields") or {}).items()}
            # files chosen in the form's file inputs: a multipart post, as the browser sends it
            files = {name: (f["name"], base64.b64decode(f["base64"]), f["type"])
                     for name, f in (post.get("files") or {}).items()} or None
            answer = client.post(path, data={**fields, "csrf_token": self.csrf[username]},
                                 files=files, headers=headers, follow_redirects=False)
        if answer.status_code not in (200, 201, 303):
            raise StepFailed(f"{username} posted {path}: {answer.status_code} "
                             f"{_text_of(answer.text)[:300]}")
        return f"posted {path} → {answer.status_code}"

    def _act(self, client: TestClient, username: str, task_id: int,
             options: dict[str, Any]) -> str:
        headers = {"X-CSRF-Token": self.csrf[username]}
        if options["action"] == "complete":
            answer = client.post(f"/api/v1/tasks/{task_id}/complete", headers=headers,
                                 json={"outcome": options["outcome"],
                                       "notes": options.get("notes")})
        else:
            # the route's body (web/routes_api.py ``Decision``): ``notes``, and ``back_to`` the
            # step a rejection sends the flow back to (驳回)
            body = {"decision": options["action"], "notes": options.get("notes")}
            if options.get("to_step"):
                body["back_to"] = options["to_step"]
            answer = client.post(f"/api/v1/tasks/{task_id}/decision", headers=headers,
                                 json=body)
            if answer.status_code in (404, 405) and "not found" in answer.text.lower():
                raise StepFailed(f"{options['action']} is not available: this Careloop has no "
                                 "POST /api/v1/tasks/{id}/decision yet")
        if answer.status_code != 200:
            raise StepFailed(f"{options['action']} of task {task_id} by {username} answered "
                             f"{answer.status_code}: {answer.text[:300]}")
        return f"{options['action']} ({options.get('outcome', '')})".replace(" ()", "")

    # --- expectations --------------------------------------------------------------------

    def check(self, expectation: ExpectSpec) -> str | None:
        """``None`` when the expectation holds, else what was seen instead."""
        try:
            return expectation.check(self)
        except StepFailed as exc:
            return str(exc)


def fill_form(client: TestClient, html: str, answers: dict[str, Any], who: str) -> str:
    """Answer a Careloop form page by page as a browser does: the page's hidden fields, the
    answers whose inputs are on the page, ``next`` until the last page, then ``submit``."""
    for pages in range(1, 50):
        reader = read_form(html)
        if reader.action is None:
            return f"submitted {len(answers)} answer(s) over {pages - 1} page(s)"
        press = "submit" if "submit" in reader.buttons else "next"
        data = [*reader.hidden.items(), *_fields_for(answers, reader.names), ("_action", press)]
        # multipart/form-data, as the page's form (enctype) makes the browser send it
        answer = client.post(reader.action,
                             files=[(name, (None, value)) for name, value in data])
        if answer.status_code != 200:
            errors = read_form(answer.text).errors
            raise StepFailed(f"{who} refused the answers ({answer.status_code}): "
                             + ("; ".join(errors) or _text_of(answer.text)[:300]))
        html = answer.text
    raise StepFailed(f"{who}: the form did not finish after 50 pages")


def task_matches(task: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a task (as the API shows it) fits a filter (title, title_contains, kind…)."""
    title = str(task.get("title") or "")
    return ((wanted.get("title") is None or title == wanted["title"])
            and (wanted.get("title_contains") is None or wanted["title_contains"] in title)
            and all(wanted.get(k) is None or task.get(k) == wanted[k]
                    for k in ("kind", "priority")))


def _titles(tasks: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t.get('title')} [{t.get('priority')}]" for t in tasks) or "nothing"


def _masked(link: str) -> str:
    """A link without its secret token (``/f/abc…``), for output and logs."""
    return re.sub(r"(/[fe]/[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+", r"\1…", link)


def _text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def _password_for(username: str) -> str:
    """A random password the policy accepts for ``username`` (a random one may happen to
    contain a short username such as ``px``: then another is drawn)."""
    from careloop.web.passwords import check_password

    while True:
        password = f"Scenario-{secrets.token_urlsafe(12)}-9"
        if not check_password(password, username=username):
            return password
