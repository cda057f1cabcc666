"""The step-type contract: a step type owns everything about its type (modelled on the rule
engine's ``ActionSpec``). A built-in and a plugin's type register the same way, in
``registry.catalogue("step_type")``, and no other module switches on a step type's name::

    class PhoneRobot(StepType):
        name = "phone_robot"
        title = {"zh-CN": "机器人电话", "en": "Phone-robot call"}
        options = {"script": {"type": "string", "minLength": 1}, "max_attempts": {...}}
        required = ("script",)
        edges = (NEXT, Edge("on_no_answer", {"zh-CN": "未接通", "en": "no answer"}))
        pauses = True
        retry = RetryPolicy(attempts=4, backoff="10m")
        resumes = (Resume("phone_robot.completed", payload_schema={...}),)
        def run(self, x): ...

What the type declares, and who reads it:

* ``options`` — option name → JSON Schema fragment (may ``$ref`` the flow schema's ``$defs``:
  ``duration``, ``expression``, ``text``, ``key``, ``assignee``, ``until``); enforced per type by
  the compiler (:func:`careloop.flows.compiler.check_options`), located at the option.
  ``required`` (each needed) and ``modes`` (exactly one of, e.g. wait's duration/until/event)
  complete it; the builder's panel is generated from the same schema.
* ``expressions`` — option paths holding expressions (``"if"``, ``"values.*"``,
  ``"cases.*.when"``), compiled once under those paths; ``references`` — option paths naming
  another definition (``("template", "template")``), checked like any reference.
* ``edges`` — where a step can go (:class:`Edge`): the graph check (:mod:`.steps_graph`), the
  spec's ``next`` and the builder's diagram all read them.
* ``pauses`` — the step waits for a timer, an event or people (a loop must pass through one).
* ``retry`` — attempts and first backoff when ``run`` raises (a step's ``retry`` option wins).
* ``timers`` — the timer purposes the type sets (``x.timer(purpose, due)``); the sweep calls
  :meth:`StepType.on_timer` with the purpose.
* ``resumes`` — the events that resume a waiting step (:class:`Resume`); an event with a
  ``payload_schema`` is accepted from outside at ``POST /api/v1/events`` (see
  :func:`inbound_events`). The flows event handler calls :meth:`StepType.accepts` and
  :meth:`StepType.on_event`.
* ``labels`` — per option ``{"label": {zh-CN, en}, "help": {zh-CN, en}}`` for the builder panel.
* ``icon``, ``defaults`` and ``delay`` — for the builder only: the symbol on the step's box, the
  options a new step starts with (a wait starts at one day), and which options move the
  patient's day on in the flow's timeline (:class:`Delay`). The builder writes no rule of its
  own: all of this, the edges, ``pauses`` (its loop check) and the ``join`` word reach it
  through ``GET /api/v1/builder/step-types``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from careloop.engine.registry import loaded_registry

if TYPE_CHECKING:
    from careloop.engine.check import CompileContext, Definition
    from careloop.flows.runtime import Exec, Outcome

Text = Mapping[str, str]
Options = Mapping[str, Mapping[str, Any]]  # option name → JSON Schema fragment
Labels = Mapping[str, Mapping[str, Text]]  # option name → {"label"|"help": text}
JOIN = "join"  # the ``next`` that ends a parallel branch


@dataclass(frozen=True, slots=True)
class Edge:
    """One kind of outgoing edge: the option holding the target step key(s).

    ``many``: a list of keys; ``item``: a list of objects whose ``item`` names the key
    (``cases[].next``); ``fallback``: when absent, the step after this one; ``mode``: only while
    that mode is the step's (see :attr:`StepType.modes`); ``fork``: the targets start parallel
    branches whose paths end at ``join``."""

    option: str
    label: Text
    many: bool = False
    item: str | None = None
    fallback: bool = False
    mode: str | None = None
    fork: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"option": self.option, "label": dict(self.label), "many": self.many,
                "item": self.item, "fallback": self.fallback, "mode": self.mode,
                "fork": self.fork}


NEXT = Edge("next", {"zh-CN": "下一步", "en": "next"}, fallback=True)
ON_TIMEOUT = Edge("on_timeout", {"zh-CN": "超时", "en": "timeout"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing step runs and the first delay (doubling each time)."""

    attempts: int = 1
    backoff: str = "1m"


@dataclass(frozen=True, slots=True)
class Resume:
    """An event that resumes a waiting step. ``payload_schema`` (JSON Schema of the payload)
    given: the event is accepted from outside at ``POST /api/v1/events``; ``None``: the event is
    raised inside Careloop (``form.submitted``) or named by the step (wait's ``event``)."""

    event: str
    payload_schema: Mapping[str, Any] | None = None
    description: Text = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delay:
    """Which options of a pausing step move the timeline on: ``duration`` (a duration added to
    the day), ``until`` (an object whose ``days`` after its ``base`` is the day) and ``event``
    (a wait for an event, shown but not moving the day). ``None``: not used by the type."""

    duration: str | None = None
    until: str | None = None
    event: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"duration": self.duration, "until": self.until, "event": self.event}


# A step's own ``retry`` (every type accepts it): attempts and first backoff for this step.
RETRY_OPTION: Mapping[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {"attempts": {"type": "integer", "minimum": 1, "maximum": 20},
                   "backoff": {"$ref": "#/$defs/duration"}}}


class StepType:
    """Base class of every step type (built-in or plugin). Subclasses set the class attributes
    and implement :meth:`run`; the defaults describe a step that runs and continues at ``next``."""

    name: ClassVar[str]
    title: ClassVar[Text]
    options: ClassVar[Options] = {}
    required: ClassVar[tuple[str, ...]] = ()
    modes: ClassVar[tuple[str, ...]] = ()
    expressions: ClassVar[tuple[str, ...]] = ()
    references: ClassVar[tuple[tuple[str, str], ...]] = ()
    edges: ClassVar[tuple[Edge, ...]] = (NEXT,)
    pauses: ClassVar[bool] = False
    # The step run's row id is read through ``x.key``, ``x.timer`` and ``x.step_run_id`` only
    # (which write the row when they need its id): the row is then written once, with the
    # step's outcome, instead of inserted before and updated after. A type that reads
    # ``x.step_run.id`` directly keeps the default.
    lazy_row: ClassVar[bool] = False
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    timers: ClassVar[tuple[str, ...]] = ()
    resumes: ClassVar[tuple[Resume, ...]] = ()
    labels: ClassVar[Labels] = {}
    icon: ClassVar[str] = "•"
    defaults: ClassVar[Mapping[str, Any]] = {}
    delay: ClassVar[Delay | None] = None

    def run(self, x: Exec) -> Outcome:
        raise NotImplementedError

    # --- compile time -----------------------------------------------------------------------

    def check(self, definition: Definition, ctx: CompileContext, index: int,
              step: Mapping[str, Any]) -> None:
        """Checks the schema cannot say (an ``if`` needs its ``then``); add located problems."""

    # --- while waiting ------------------------------------------------------------------------

    def on_timer(self, x: Exec, purpose: str) -> None:
        """A timer of this step fired while it waits: ``resume`` continues at ``next``,
        ``timeout`` at ``on_timeout`` (default ``next``), marking ``<key>_timed_out``."""
        from careloop.flows.runtime import resume

        if purpose == "resume":
            resume(x.session, x.step_run, x.step.next)
        elif purpose == "timeout":
            resume(x.session, x.step_run, x.step.get("on_timeout", x.step.next),
                   {f"{x.step.key}_timed_out": True})

    def accepts(self, x: Exec, event: str, payload: Mapping[str, Any]) -> bool:
        """Whether this waiting step is the one ``event`` is about (default: the step's
        ``match`` expression, if any, is true)."""
        match = x.step.expression("match")
        if match is None:
            return True
        from careloop.flows import context as ctxmod

        names = ctxmod.build(x.session, patient_id=x.run.patient_id,
                             encounter_id=x.run.encounter_id, context=x.run.context,
                             event=dict(payload))
        return bool(match.evaluate(names))

    def on_event(self, x: Exec, event: str,
                 payload: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Where a resumed step continues and what it adds to the run's context."""
        return x.step.next, {}

    # --- derived ------------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> list[str]:
        """Every option a step of this type may carry besides ``key`` and ``type``, in the
        builder panel's order: ``title``, ``when``, the declared options, then the edges."""
        names = ["title", "when", *cls.options]
        names += [e.option for e in cls.edges if e.option not in names]
        return [*names, *(["retry"] if "retry" not in names else [])]

    @classmethod
    def option_schemas(cls) -> dict[str, dict[str, Any]]:
        """Option name → JSON Schema (``$ref``s into the flow schema's ``$defs``)."""
        out: dict[str, dict[str, Any]] = {"title": {"$ref": "#/$defs/text"},
                                          "when": {"$ref": "#/$defs/expression"}}
        for name, schema in cls.options.items():
            out[name] = dict(schema)
        for edge in cls.edges:
            if edge.option not in out:
                out[edge.option] = ({"type": "array", "items": {"type": "string"}}
                                    if edge.many else {"type": "string"})
        out.setdefault("retry", dict(RETRY_OPTION))  # any step may override its type's policy
        for option, kind in cls.references:
            if option in out:
                out[option] = {**out[option], "x-reference": kind}
        return out

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The whole schema of one step of this type (without ``$defs``)."""
        props: dict[str, Any] = {"key": {"$ref": "#/$defs/key"}, "type": {"const": cls.name}}
        props.update(cls.option_schemas())
        schema: dict[str, Any] = {"type": "object", "properties": props,
                                  "required": ["key", "type", *cls.required],
                                  "additionalProperties": False}
        if cls.modes:
            schema["oneOf"] = [{"required": [m]} for m in cls.modes]
        return schema

    @classmethod
    def mode_of(cls, step: Mapping[str, Any]) -> str | None:
        """The step's mode: the first of :attr:`modes` it carries (else the first mode)."""
        for mode in cls.modes:
            if mode in step:
                return mode
        return cls.modes[0] if cls.modes else None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """What the builder draws and checks a step of this type from (no graph rule in JS)."""
        return {"name": cls.name, "title": dict(cls.title),
                "edges": [e.to_json() for e in cls.edges], "modes": list(cls.modes),
                "pauses": cls.pauses, "forks": any(e.fork for e in cls.edges),
                "labels": {k: {part: dict(text) for part, text in v.items()}
                           for k, v in cls.labels.items()},
                "resumes": [r.event for r in cls.resumes],
                "retry": {"attempts": cls.retry.attempts, "backoff": cls.retry.backoff},
                "icon": cls.icon, "defaults": dict(cls.defaults),
                "delay": cls.delay.to_json() if cls.delay is not None else None,
                "join": JOIN if any(e.fork for e in cls.edges) else None}


def step_type(name: object) -> StepType | None:
    """The registered step type called ``name`` (``None`` when there is none)."""
    found: StepType | None = loaded_registry().catalogue("step_type").get(str(name))
    return found


def registered() -> Iterator[tuple[str, StepType]]:
    yield from sorted(loaded_registry().catalogue("step_type").items())


def inbound_events() -> dict[str, Mapping[str, Any]]:
    """Event type → payload schema of every event a registered step type accepts from outside
    (``POST /api/v1/events``), e.g. ``phone_robot.completed`` of the example plugin."""
    return {r.event: r.payload_schema for _, t in registered() for r in t.resumes
            if r.payload_schema is not None}


def expression_paths(paths: tuple[str, ...],
                     step: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """``(path, value)`` of every expression a step carries, for the declared ``paths``
    (``*``: every key of a mapping or index of a list).

    >>> list(expression_paths(("if", "cases.*.when"), {"cases": [{"when": "a"}, {"when": "b"}]}))
    [(('cases', 0, 'when'), 'a'), (('cases', 1, 'when'), 'b')]
    """
    for pattern in paths:
        yield from _walk(step, tuple(pattern.split(".")), ())


def _walk(node: Any, rest: tuple[str, ...],
          at: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if not rest:
        yield at, node
        return
    head, tail = rest[0], rest[1:]
    if head == "*":
        if isinstance(node, Mapping):
            for key, value in node.items():
                yield from _walk(value, tail, (*at, str(key)))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from _walk(value, tail, (*at, i))
    elif isinstance(node, Mapping) and head in node:
        yield from _walk(node[head], tail, (*at, head))
