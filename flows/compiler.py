"""Compile a ``flow`` definition: a list of small checkers, each appending located problems.

    steps:                       problems found here, located at the offending key:
      - {key: a, type: wait}     flow.missing-field   (wait needs duration, until or event)
      - {key: a, type: wait, duration: 1d, url: …}   flow.unknown-option (wait has no 'url')
      - {key: b, next: nowhere}  flow.unknown-step    (no step 'nowhere')
      - {key: c, ...}            flow.unreachable     (nothing leads to 'c')
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator

from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import did_you_mean
from careloop.engine.expressions import Expression
from careloop.engine.registry import loaded_registry
from careloop.engine.schema import fill_registry_enums, kind_schema, validator_problems
from careloop.flows.spec import EXPRESSION_NAMES, FlowSpec, StepSpec, TriggerSpec, default_once
from careloop.flows.step_types import StepType, expression_paths, step_type
from careloop.flows.steps_graph import JOIN, pauses, target_paths, targets

Checker = Callable[[Definition, CompileContext], None]


def required_of(name: str) -> tuple[str | tuple[str, ...], ...]:
    """What a step type needs, as it declares it: each of ``required``, and one of ``modes``
    (a tuple inside). An unknown type (the schema reports it) needs nothing."""
    found = step_type(name)
    if found is None:
        return ()
    return (*found.required, *((tuple(found.modes),) if found.modes else ()))


def _options_validator(kind: StepType) -> Draft202012Validator:
    """One step type's whole schema, with the flow schema's ``$defs`` and registry enums."""
    cached = _VALIDATORS.get(kind.name)
    if cached is not None and cached[0] is kind:
        return cached[1]
    schema = copy.deepcopy(kind.schema())
    fill_registry_enums(schema, loaded_registry())
    schema["$defs"] = kind_schema("flow")["$defs"]
    validator = Draft202012Validator(schema)
    _VALIDATORS[kind.name] = (kind, validator)
    return validator


# Derived from the registered types only (rebuilt when a name is registered anew).
_VALIDATORS: dict[str, tuple[StepType, Draft202012Validator]] = {}


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


def check_options(definition: Definition, ctx: CompileContext) -> None:
    """Each step against its own type's options schema: an option the type does not have, or a
    value its schema refuses, is reported at that option (``flow.unknown-option``)."""
    for i, step in enumerate(_steps(definition)):
        kind = step_type(step["type"])
        if kind is None:
            continue
        root = ("steps", i)
        for problem in validator_problems(definition.doc, _options_validator(kind), root):
            where = problem.path[len(root):]
            if problem.code == "schema.missing-key" and not where:
                continue  # check_required says which, in the author's words
            if problem.code == "schema.unknown-key" and len(where) == 1:
                allowed = kind.option_names()
                problem = replace(problem, code="flow.unknown-option", message=(
                    f"step '{step['key']}' of type {kind.name} has no option '{where[0]}'"),
                    hint=did_you_mean(str(where[0]), allowed)
                    or "its options: " + ", ".join(allowed))
            elif problem.code == "schema.one-of" and not where:
                problem = replace(problem, code="flow.bad-option", message=(
                    f"step '{step['key']}' of type {kind.name} takes exactly one of "
                    + ", ".join(f"'{m}'" for m in kind.modes)), hint=None)
            ctx.add(problem)


def check_required(definition: Definition, ctx: CompileContext) -> None:
    for i, step in enumerate(_steps(definition)):
        for need in required_of(step["type"]):
            options = need if isinstance(need, tuple) else (need,)
            if not any(o in step for o in options):
                ctx.add(definition.doc.problem(
                    "flow.missing-field",
                    f"step '{step['key']}' of type {step['type']} needs "
                    + " or ".join(f"'{o}'" for o in options), ("steps", i, "type")))


def check_types(definition: Definition, ctx: CompileContext) -> None:
    """What each step type checks beyond its schema (:meth:`StepType.check`)."""
    for i, step in enumerate(_steps(definition)):
        kind = step_type(step["type"])
        if kind is not None:
            kind.check(definition, ctx, i, step)


def check_targets(definition: Definition, ctx: CompileContext) -> None:
    steps = _steps(definition)
    keys = [s["key"] for s in steps]
    has_parallel = any(any(e.fork for e in getattr(step_type(s["type"]), "edges", ()))
                       for s in steps)
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
    pausing = {s["key"]: pauses(s) for s in steps}
    order = [s["key"] for s in steps]
    for comp in _cycles(_graph(steps)):
        if not any(pausing[k] for k in comp):
            first = min(comp, key=order.index)
            ctx.add(definition.doc.problem(
                "flow.loop-without-wait",
                "steps " + ", ".join(sorted(comp)) + " form a loop with no wait, form or "
                "approval in it", ("steps", order.index(first), "key"),
                hint="add a wait step inside the loop"))


def check_references(definition: Definition, ctx: CompileContext) -> None:
    """The definitions each step type declares it names (``references``), e.g. a template."""
    doc = definition.doc
    kinds = loaded_registry().catalogue("kind")
    for i, step in enumerate(_steps(definition)):
        kind = step_type(step["type"])
        for option, other in kind.references if kind is not None else ():
            if other not in kinds:
                continue  # that engine is not installed
            for path, value in expression_paths((option,), step):
                if other == definition.kind and value == definition.key:
                    continue  # a flow may start itself again
                ctx.reference(other, value, doc, ("steps", i, *path),
                              code=f"flow.unknown-{other}")


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


CHECKERS: tuple[Checker, ...] = (check_duplicates, check_options, check_required, check_types,
                                 check_targets,
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

    kind = step_type(step["type"])
    declared = kind.expressions if kind is not None else ()
    for path, text in expression_paths(("when", *declared), step):
        add(path, text)
    return found


def _next_of(step: dict[str, Any], default_next: str | None) -> str | None:
    """Where the step continues by default: its ``next`` (or the step after it), ``None`` for
    a type with no edges (``end``)."""
    kind = step_type(step["type"])
    if kind is None or not kind.edges:
        return None
    found = step.get("next", default_next)
    return found if isinstance(found, str) else default_next


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
            next=_next_of(step, _default_next(steps_raw, i)),
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
