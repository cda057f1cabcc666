"""Checks the meaning of a ``scenario`` and compiles it into a :class:`ScenarioSpec`.

The schema has checked the shape; here, each step names exactly one step type, instants parse,
time never travels backwards, every person a step or an expectation names was set up before, every
form, template, flow, dashboard and chart named exists, and an answer names fields of the form
whose link was opened::

    steps:
      - staff: {as: hn_nobody}          # scenario.unknown-user at $.steps[0].staff.as
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from careloop.engine.check import CompileContext, Definition
from careloop.engine.clock import hospital_tz
from careloop.engine.errors import Path, did_you_mean, format_path
from careloop.engine.registry import loaded_registry
from careloop.web.scenarios.spec import (
    ExpectationType,
    ExpectSpec,
    ScenarioSpec,
    StepSpec,
    StepType,
    Where,
)

# Where a step or an expectation names a person (a username, or {role, department}).
WHO_FIELDS = {("step", "staff"): "as", ("expect", "inbox"): "of",
              ("expect", "submissions"): "seen_by", ("expect", "dashboard"): "as",
              ("expect", "page"): "as", ("expect", "pdf"): "as"}
# Further options of an expectation that name a person, and options that are instants.
PEOPLE = {"tasks": ("user",), "alerts": ("seen_by", "not_seen_by", "acknowledged_by")}
INSTANTS = {"messages": ("after", "before"), "tasks": ("due", "due_after", "due_before")}
# Where an expectation or a step names another definition: (option, kind).
REFERENCES = {"messages": (("template", "template"),), "pdf": (("template", "template"),),
              "submissions": (("form", "form"),),
              "flow_runs": (("flow", "flow"),),
              "dashboard": (("key", "dashboard"), ("chart", "chart")),
              "patient_opens_link": (("form", "form"), ("template", "template")),
              "scan_touchpoint": (("touchpoint", "touchpoint"),),
              "patient_reads_education": (("article", "education"),)}
_DURATION = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_instant(text: str) -> datetime:
    """An ISO instant as aware UTC; without an offset it is hospital-local time.

    >>> parse_instant("2026-12-01T09:00").isoformat()
    '2026-12-01T01:00:00+00:00'

    Raises:
        ValueError: if the text is not an ISO date-time.
    """
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=hospital_tz())
    return value.astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    """``"3d"`` → three days (the schema has checked the shape).

    >>> parse_duration("48h")
    datetime.timedelta(days=2)
    """
    return timedelta(**{_DURATION[text[-1]]: int(text[:-1])})


class Checker:
    """The meaning checks of one scenario; problems go to the compile context."""

    def __init__(self, definition: Definition, ctx: CompileContext) -> None:
        self.definition, self.ctx, self.doc = definition, ctx, definition.doc
        self.users: dict[str, tuple[str, str | None]] = {}
        self.opened_form: str | None = None
        self.link_opened = False
        self.clock: datetime | None = None

    def where(self, path: Path) -> Where:
        line, column = self.doc.position(path)
        return Where(self.doc.file, line, column, format_path(path))

    def problem(self, code: str, message: str, path: Path, *, hint: str | None = None,
                at_key: bool = False) -> None:
        self.ctx.add(self.doc.problem(code, message, path, hint=hint, at_key=at_key))

    def start(self) -> datetime | None:
        try:
            self.clock = parse_instant(self.definition.body["start"])
        except ValueError:
            self.problem("scenario.bad-instant",
                         f"'start' {self.definition.body['start']!r} is not a date-time",
                         ("start",))
        return self.clock

    def step(self, index: int, raw: dict[str, Any]) -> StepSpec | None:
        path: Path = ("steps", index)
        catalogue: dict[str, StepType] = dict(loaded_registry().catalogue("scenario_step").items())
        types = [name for name in catalogue if name in raw]
        if len(types) != 1:
            self.problem("scenario.step-type-count",
                         f"a step has exactly one of {', '.join(catalogue)}; this one has "
                         + (", ".join(types) if types else "none"), path)
        else:
            catalogue[types[0]].check(self, (*path, types[0]), raw[types[0]])
        expects = tuple(self.expectations(path, raw.get("expect") or []))
        if len(types) != 1:
            return None
        return StepSpec(index=index, step_type=catalogue[types[0]], options=raw[types[0]],
                        note=raw.get("note"), expects=expects, where=self.where(path))

    def expectations(self, step: Path, items: list[dict[str, Any]]) -> Iterator[ExpectSpec]:
        catalogue: dict[str, ExpectationType] = dict(
            loaded_registry().catalogue("scenario_expectation").items())
        for i, item in enumerate(items):
            path: Path = (*step, "expect", i)
            kinds = [name for name in catalogue if name in item]
            if len(kinds) != 1:
                self.problem("scenario.expectation-count",
                             "an expectation has exactly one of " + ", ".join(catalogue), path)
                continue
            kind = kinds[0]
            options = item[kind]
            self._references((*path, kind), kind, options)
            field = WHO_FIELDS.get(("expect", kind))
            if field and field in options:
                self._who((*path, kind, field), options[field])
            for person in PEOPLE.get(kind, ()):
                if person in options:
                    self._who((*path, kind, person), options[person])
            for instant in INSTANTS.get(kind, ()):
                self._instant((*path, kind, instant), options.get(instant))
            yield ExpectSpec(expectation=catalogue[kind], options=options,
                             where=self.where(path))

    def _instant(self, path: Path, text: str | None) -> None:
        if text is None:
            return
        try:
            parse_instant(text)
        except ValueError:
            self.problem("scenario.bad-instant", f"{text!r} is not a date-time", path)

    def _references(self, path: Path, kind: str, options: dict[str, Any]) -> None:
        for option, target in REFERENCES.get(kind, ()):
            if option in options:
                self.ctx.reference(target, options[option], self.doc, (*path, option),
                                   code="scenario.unknown-reference")

    def _who(self, path: Path, who: Any) -> None:
        if isinstance(who, str):
            if who not in self.users:
                self.problem("scenario.unknown-user",
                             f"no user '{who}' was set up before this step", path,
                             hint=did_you_mean(who, self.users) or "add it to a setup step")
            return
        role, department = who.get("role"), who.get("department")
        found = [u for u, (r, d) in self.users.items()
                 if r == role and (department is None or d == department)]
        if len(found) != 1:
            shown = role + (f" in {department}" if department else "")
            self.problem("scenario.unknown-user",
                         f"{len(found)} users set up with role {shown}; exactly one is needed",
                         path, hint="name the user by username" if found else
                         "add such a user to a setup step")

    def setup(self, path: Path, options: dict[str, Any]) -> None:
        for i, user in enumerate(options.get("users") or []):
            if user["username"] in self.users:
                self.problem("scenario.duplicate-user",
                             f"user '{user['username']}' is set up twice",
                             (*path, "users", i, "username"))
            self.users[user["username"]] = (user["role"], user.get("department"))

    def his(self, path: Path, events: list[dict[str, Any]]) -> None:
        from careloop.flows.ingest import accepted_event_types

        accepted = list(accepted_event_types())
        for i, event in enumerate(events):
            self._instant((*path, i, "occurred_at"), event.get("occurred_at"))
            if event["type"] not in accepted:
                self.problem("scenario.unknown-event-type",
                             f"unknown HIS event type {event['type']!r}", (*path, i, "type"),
                             hint=did_you_mean(event["type"], accepted))

    def travel(self, path: Path, travel: Any) -> None:
        if self.clock is None:
            return
        if isinstance(travel, str):
            self.clock += parse_duration(travel)
            return
        try:
            target = parse_instant(travel["to"])
        except ValueError:
            self.problem("scenario.bad-instant", f"{travel['to']!r} is not a date-time",
                         (*path, "to"))
            self.clock = None
            return
        if target < self.clock:
            self.problem("scenario.travel-backwards",
                         f"travel to {travel['to']} goes back in time (the scenario is already "
                         f"at {self.clock.astimezone(hospital_tz()).isoformat()})", (*path, "to"))
        self.clock = max(target, self.clock)

    def patient_opens_link(self, path: Path, options: dict[str, Any]) -> None:
        self._references(path, "patient_opens_link", options)
        self.link_opened = True
        self.opened_form = options.get("form")

    def scan_touchpoint(self, path: Path, options: dict[str, Any]) -> None:
        self._references(path, "scan_touchpoint", options)
        found = self.ctx.definitions.get(("touchpoint", options["touchpoint"]))
        body = found.body if found is not None else (
            self.ctx.external("touchpoint", options["touchpoint"]) if self.ctx.external
            else None)
        self.link_opened = True
        self.opened_form = body.get("form") if isinstance(body, dict) else None

    def patient_reads_education(self, path: Path, options: dict[str, Any]) -> None:
        self._references(path, "patient_reads_education", options)

    def answer(self, path: Path, answers: dict[str, Any]) -> None:
        if not self.link_opened:
            self.problem("scenario.answer-without-link",
                         "an answer needs an earlier patient_opens_link step", path)
            return
        fields = self._form_fields(self.opened_form)
        if fields is None:
            return
        for name in answers:
            if name not in fields:
                self.problem("scenario.unknown-field",
                             f"form '{self.opened_form}' has no field '{name}'", (*path, name),
                             at_key=True, hint=did_you_mean(name, fields))

    def _form_fields(self, key: str | None) -> list[str] | None:
        if key is None:
            return None
        spec = self.ctx.spec_of("form", key)
        if spec is not None:
            return [f.key for f in spec.fields]
        found = self.ctx.definitions.get(("form", key))
        body = found.body if found is not None else (
            self.ctx.external("form", key) if self.ctx.external else None)
        if not isinstance(body, dict):
            return None
        return [f["key"] for f in body.get("fields", []) if isinstance(f, dict) and "key" in f]

    def staff(self, path: Path, options: dict[str, Any]) -> None:
        self._who((*path, "as"), options["as"])
        action = options.get("action")
        if action == "complete" and "outcome" not in options:
            self.problem("scenario.missing-outcome",
                         "completing a task records an outcome; add 'outcome'", path)
        if action and "task" not in options:
            self.problem("scenario.missing-task",
                         f"'{action}' needs 'task' to pick the task from the inbox", path)
        post = options.get("post") or {}
        if "json" in post and ("fields" in post or "files" in post):
            self.problem("scenario.post-body",
                         "a post sends either form 'fields' (and 'files') or a 'json' body, "
                         "not both", (*path, "post"))
        for name, chosen in (post.get("files") or {}).items():
            try:
                base64.b64decode(str(chosen.get("base64", "")), validate=True)
            except ValueError:
                self.problem("scenario.post-body", f"file '{name}' is not valid base64",
                             (*path, "post", "files", name, "base64"))


def compile_scenario(definition: Definition, ctx: CompileContext) -> ScenarioSpec | None:
    """Check a scenario's meaning and build its spec (``None`` when it has errors)."""
    checker = Checker(definition, ctx)
    before = len(ctx.problems)
    start = checker.start()
    steps = [checker.step(i, raw) for i, raw in enumerate(definition.body["steps"])]
    if start is None or any(p.severity == "error" for p in ctx.problems[before:]):
        return None
    return ScenarioSpec(key=definition.key, title=dict(definition.title), start=start,
                        steps=tuple(s for s in steps if s is not None),
                        file=definition.doc.file,
                        apps=tuple(definition.body.get("apps") or ()))
