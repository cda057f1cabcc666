"""Compile a ``flow`` definition: a list of small checkers, each appending located problems.

    steps:                       problems found here, located at the offending key:
      - {key: a, type: wait}     flow.missing-field   (wait needs duration, until or event)
      - {key: b, next: nowhere}  flow.unknown-step    (no step 'nowhere')
      - {key: c, ...}            flow.unreachable     (nothing leads to 'c')
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import did_you_mean
from careloop.engine.expressions import Expression
from careloop.engine.registry import loaded_registry
from careloop.flows.spec import EXPRESSION_NAMES, FlowSpec, StepSpec, TriggerSpec, default_once
from careloop.flows.steps_graph import JOIN, PAUSING, target_paths, targets

Checker = Callable[[Definition, CompileContext], None]


def required_of(step_type: str) -> tuple[str | tuple[str, ...], ...]:
    """What a step type needs, as it declares it (``required`` on the registered step type, see
    :mod:`careloop.flows.steps`); a tuple inside means "one of these". An unknown type (the schema
    reports it) or a plugin's type that declares nothing needs nothing."""
    registered = loaded_registry().catalogue("step_type").get(step_type)
    required: tuple[str | tuple[str, ...], ...] = tuple(getattr(registered, "required", ()))
    return required


def _steps(definition: Definition) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = definition.body["steps"]
    return steps


def _default_next(steps: list[dict[str, Any]], i: int) -> str | None:
    return steps[i + 1]["key"] if i + 1 < len(steps) else None


def check_duplicates(definition: Definition, ctx: CompileContext) -> None:
    seen: set[str] = set()
    for i, step in enumerate(_steps(definition)):
        if step["key"] in seen:
            ctx.add(definition.doc.problem("flow.duplicate-step",
                                           f"step key '{step['key']}' is used twice",
                                           ("steps", i, "key")))
        seen.add(step["key"])


def check_required(definition: Definition, ctx: CompileContext) -> None:
    for i, step in enumerate(_steps(definition)):
        for need in required_of(step["type"]):
            options = need if isinstance(need, tuple) else (need,)
            if not any(o in step for o in options):
                ctx.add(definition.doc.problem(
                    "flow.missing-field",
                    f"step '{step['key']}' of type {step['type']} needs "
                    + " or ".join(f"'{o}'" for o in options), ("steps", i, "type")))
        if step["type"] == "decision" and "if" in step and "then" not in step:
            ctx.add(definition.doc.problem("flow.missing-field",
                                           f"step '{step['key']}': 'if' needs 'then'",
                                           ("steps", i, "if"), at_key=True))
        if step.get("mode") == "n_of_m":
            count = len(step.get("approvers", []))
            required = step.get("required")
            if not isinstance(required, int) or required > count:
                ctx.add(definition.doc.problem(
                    "flow.bad-required",
                    f"step '{step['key']}': n_of_m needs 'required' between 1 and {count}",
                    ("steps", i, "mode")))


def check_targets(definition: Definition, ctx: CompileContext) -> None:
    steps = _steps(definition)
    keys = [s["key"] for s in steps]
    has_parallel = any(s["type"] == "parallel" for s in steps)
    for i, step in enumerate(steps):
        for path, target in target_paths(step):
            if target == JOIN:
                if not has_parallel:
                    ctx.add(definition.doc.problem(
                        "flow.join-without-branches",
                        f"step '{step['key']}' ends a branch ('join') but the flow has no "
                        "parallel step", ("steps", i, *path)))
                continue
            if target not in keys:
                ctx.add(definition.doc.problem("flow.unknown-step", f"no step '{target}'",
                                               ("steps", i, *path),
                                               hint=did_you_mean(target, keys)))
        if step["type"] == "parallel" and not step.get("branches"):
            ctx.add(definition.doc.problem("flow.join-without-branches",
                                           f"parallel step '{step['key']}' has no branches",
                                           ("steps", i, "branches")))
        if "on_reject" in step and step["on_reject"] in keys \
                and keys.index(step["on_reject"]) >= i:
            ctx.add(definition.doc.problem(
                "flow.reject-not-earlier",
                f"'on_reject' must name an earlier step, not '{step['on_reject']}'",
                ("steps", i, "on_reject")))


def _graph(steps: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {s["key"]: targets(s, _default_next(steps, i)) for i, s in enumerate(steps)}


def check_reachable(definition: Definition, ctx: CompileContext) -> None:
    steps = _steps(definition)
    graph = _graph(steps)
    seen: set[str] = set()
    todo = [steps[0]["key"]]
    while todo:
        key = todo.pop()
        if key in seen or key not in graph:
            continue
        seen.add(key)
        todo.extend(graph[key])
    for i, step in enumerate(steps):
        if step["key"] not in seen:
            ctx.add(definition.doc.problem("flow.unreachable",
                                           f"step '{step['key']}' can never be reached",
                                           ("steps", i, "key")))


def _cycles(graph: dict[str, list[str]]) -> list[set[str]]:
    """Strongly connected components that form a loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, []):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            comp: set[str] = set()
            while True:
                top = stack.pop()
                comp.add(top)
                if top == node:
                    break
            if len(comp) > 1 or node in graph.get(node, []):
                out.append(comp)

    for node in graph:
        if node not in index:
            visit(node)
    return out


def check_loops(definition: Definition, ctx: CompileContext) -> None:
    steps = _steps(definition)
    types = {s["key"]: s["type"] for s in steps}
    order = [s["key"] for s in steps]
    for comp in _cycles(_graph(steps)):
        if not any(types[k] in PAUSING for k in comp):
            first = min(comp, key=order.index)
            ctx.add(definition.doc.problem(
                "flow.loop-without-wait",
                "steps " + ", ".join(sorted(comp)) + " form a loop with no wait, form or "
                "approval in it", ("steps", order.index(first), "key"),
                hint="add a wait step inside the loop"))


def check_references(definition: Definition, ctx: CompileContext) -> None:
    doc = definition.doc
    has_forms = "form" in loaded_registry().catalogue("kind")
    for i, step in enumerate(_steps(definition)):
        for name in ("template", "reminder_template"):
            if name in step:
                ctx.reference("template", step[name], doc, ("steps", i, name),
                              code="flow.unknown-template")
        if "form" in step and has_forms:
            ctx.reference("form", step["form"], doc, ("steps", i, "form"),
                          code="flow.unknown-form")
        if step["type"] == "start_subflow" and step.get("flow") != definition.key:
            ctx.reference("flow", step.get("flow"), doc, ("steps", i, "flow"),
                          code="flow.unknown-flow")
        calendar = (step.get("until") or {}).get("calendar")
        if calendar is not None:
            ctx.reference("calendar", calendar, doc, ("steps", i, "until", "calendar"),
                          code="flow.unknown-calendar")


def check_cron(definition: Definition, ctx: CompileContext) -> None:
    cron = definition.body["trigger"].get("cron")
    if cron is None:
        return
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(cron)
    except ValueError as exc:
        ctx.add(definition.doc.problem("flow.bad-cron", f"invalid cron schedule {cron!r}: {exc}",
                                       ("trigger", "cron")))


def check_once(definition: Definition, ctx: CompileContext) -> None:
    """``once`` needs an event to count, and ``per_encounter`` an event that names an encounter.

    ``trigger: {manual: true, once: per_patient}``        → flow.bad-once (no event)
    ``trigger: {event: patient.upserted, once: per_encounter}`` → flow.bad-once (no encounter)
    """
    trigger = definition.body["trigger"]
    once, event = trigger.get("once"), trigger.get("event")
    if once is None:
        return
    if event is None:
        ctx.add(definition.doc.problem(
            "flow.bad-once", f"'once: {once}' needs an 'event' trigger; manual and cron runs are "
            "started one by one", ("trigger", "once"), at_key=True))
    elif once == "per_encounter" and event.startswith("patient."):
        ctx.add(definition.doc.problem(
            "flow.bad-once", f"'once: per_encounter' but {event} events name no encounter",
            ("trigger", "once"), hint="use per_patient or per_patient_while_active"))


CHECKERS: tuple[Checker, ...] = (check_duplicates, check_required, check_targets,
                                 check_reachable, check_loops, check_references, check_cron,
                                 check_once)


def _step_expressions(definition: Definition, ctx: CompileContext, i: int,
                      step: dict[str, Any]) -> dict[str, Expression]:
    found: dict[str, Expression] = {}
    doc = definition.doc
    names = EXPRESSION_NAMES

    def add(path: tuple[str | int, ...], text: object) -> None:
        compiled = ctx.expression(doc, ("steps", i, *path), text, names)
        if compiled is not None:
            found[".".join(str(p) for p in path)] = compiled

    for name in ("when", "if", "match"):
        if name in step:
            add((name,), step[name])
    for j, case in enumerate(step.get("cases", []) or []):
        add(("cases", j, "when"), case.get("when"))
    for group in ("values", "set", "body"):
        for name, text in (step.get(group) or {}).items():
            add((group, name), text)
    if "until" in step:
        add(("until", "base"), step["until"].get("base"))
    return found


def compile_flow(definition: Definition, ctx: CompileContext) -> FlowSpec | None:
    """Check a flow and build its spec.

    Example: ``steps: [{key: a, type: wait, duration: 1d}, {key: b, type: end}]`` compiles to a
    :class:`FlowSpec` whose ``first`` is ``"a"`` and whose step ``a`` has ``next == "b"``.
    """
    before = len(ctx.problems)
    for checker in CHECKERS:
        checker(definition, ctx)
    body = definition.body
    trigger = body["trigger"]
    when = ctx.expression(definition.doc, ("trigger", "when"), trigger.get("when"),
                          EXPRESSION_NAMES)
    steps_raw = _steps(definition)
    steps = []
    for i, step in enumerate(steps_raw):
        expressions = _step_expressions(definition, ctx, i, step)
        steps.append(StepSpec(
            key=step["key"], type=step["type"], index=i,
            next=None if step["type"] == "end" else step.get("next",
                                                              _default_next(steps_raw, i)),
            raw=MappingProxyType(dict(step)), expressions=MappingProxyType(expressions)))
    if len(ctx.problems) > before:
        return None
    return FlowSpec(key=definition.key, title=MappingProxyType(dict(definition.title)),
                    trigger=TriggerSpec(event=trigger.get("event"), when=when,
                                        manual=bool(trigger.get("manual", False)),
                                        cron=trigger.get("cron"),
                                        once=trigger.get("once", default_once(
                                            trigger.get("event")))),
                    cancel_on=tuple(body.get("cancel_on", [])), steps=tuple(steps))
