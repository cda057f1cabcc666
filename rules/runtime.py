"""Running rule sets: context building, evaluation with effects, the trace, and the dry run.

The event handler ``rules`` (registered by the plugin) evaluates every current rule set whose
``on`` names the event's type. For each (rule set, version, event) it writes one
:class:`~careloop.rules.models.RuleEvaluation` together with the effects of the matched rules,
inside a savepoint of the caller's transaction: all of it is stored, or none of it. A second
delivery of the same event finds the evaluation row and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import event, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import context as names
from careloop.engine import scope, store
from careloop.engine.clock import now_utc
from careloop.engine.domain import Task
from careloop.engine.errors import CareloopError
from careloop.engine.limits import LimitExceeded
from careloop.engine.models import DomainEventRow
from careloop.rules.actions import ActionContext
from careloop.rules.classify import CategoryMatch, DictionarySpec, summary
from careloop.rules.models import Classification, RuleEvaluation
from careloop.rules.spec import Match, RuleRuntimeError, RuleSetSpec

DEFAULT_BP_TARGET = {"systolic": 140, "diastolic": 90}

logger = logging.getLogger("careloop.rules")


@dataclass(slots=True)
class Outcome:
    """What one rule set did (or, in a dry run, would do) for one event."""

    ruleset: str
    version: int
    event_id: str
    applies: bool
    matched: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False  # already evaluated for this event
    error: str | None = None  # an action failed; no effect was stored

    def to_json(self) -> dict[str, Any]:
        return {"ruleset": self.ruleset, "version": self.version, "event_id": self.event_id,
                "applies": self.applies, "matched": self.matched, "actions": self.actions,
                "skipped": self.skipped, "error": self.error}


# --- context --------------------------------------------------------------------------------


def recent_readings(session: Session, patient_id: str | None, target: Mapping[str, Any],
                    days: int = 7) -> dict[str, Any]:
    """Blood-pressure readings of the patient in the last ``days`` days (stored
    ``reading.recorded`` events: ``{"type": "blood_pressure", "value": {"systolic", ...}}``)."""
    if patient_id is None:
        return {"count_7d": 0, "above_target_7d": 0}
    since = now_utc() - timedelta(days=days)
    rows = session.scalars(select(DomainEventRow).where(
        DomainEventRow.type == "reading.recorded", DomainEventRow.occurred_at >= since)).all()
    mine = [r.payload.get("value") or {} for r in rows
            if r.payload.get("patient_id") == patient_id
            and r.payload.get("type") == "blood_pressure"]
    above = [v for v in mine if _num(v.get("systolic")) > target["systolic"]
             or _num(v.get("diastolic")) > target["diastolic"]]
    return {"count_7d": len(mine), "above_target_7d": len(above)}


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def build_context(session: Session, event_type: str,
                  payload: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The expression context of an event and the ids actions need.

    The names every engine shares come from :func:`careloop.engine.context.build`; the rule
    engine adds ``classification`` and, for ``reading.recorded``, ``readings``.
    """
    task = None
    if event_type == "task.overdue" and payload.get("task_id") is not None:
        task = session.get(Task, payload["task_id"])
    patient_id = payload.get("patient_id") or (task.patient_id if task else None)
    encounter_id = payload.get("encounter_id") or (task.encounter_id if task else None)
    context = names.build(
        session, patient_id=patient_id, encounter_id=encounter_id, event=payload,
        answers=payload.get("answers"), scores=payload.get("scores"),
        bands=payload.get("bands"),
        reading=payload if event_type == "reading.recorded" else None, task=task,
        context=payload.get("context"))
    context["classification"] = {"categories": [], "negative": [], "words": {}}
    if event_type == "reading.recorded":
        attributes = (context["patient"] or {}).get("attributes") or {}
        context["readings"] = recent_readings(session, patient_id,
                                              attributes.get("bp_target") or DEFAULT_BP_TARGET)
    encounter = context["encounter"]
    ids = {"patient_id": patient_id, "encounter_id": encounter["id"] if encounter else None,
           "submission_id": payload.get("submission_id"),
           "task_id": task.id if task else payload.get("task_id")}
    return context, ids


# --- dictionaries ---------------------------------------------------------------------------


def dictionary_spec(session: Session, key: str) -> tuple[DictionarySpec, int]:
    row = store.get_version(session, "dictionary", key)
    spec = store.compile_row(row, DictionarySpec)
    return spec, row.version


def classify_and_store(session: Session | None, dictionary: str | DictionarySpec, text: object,
                       *, field_key: str, patient_id: str | None, submission_id: int | None,
                       event_id: str, version: int = 0) -> list[CategoryMatch]:
    """Classify ``text``; with a session, record each category and its words (once)."""
    if isinstance(dictionary, str):
        if session is None:
            raise RuleRuntimeError("a dictionary key needs a session to load it")
        spec, version = dictionary_spec(session, dictionary)
    else:
        spec = dictionary
    matches = spec.classify(text)
    if session is None:
        return matches
    source_ref = f"submission:{submission_id}" if submission_id is not None else f"event:{event_id}"
    for match in matches:
        exists = session.scalars(select(Classification.id).where(
            Classification.dictionary_key == spec.key, Classification.source_ref == source_ref,
            Classification.field_key == field_key,
            Classification.category == match.category)).first()
        if exists is None:
            session.add(Classification(
                dictionary_key=spec.key, dictionary_version=version, source_ref=source_ref,
                patient_id=patient_id, submission_id=submission_id, field_key=field_key,
                category=match.category, negative=match.negative, words=match.words,
                created_at=now_utc()))
    session.flush()
    return matches


# --- evaluation -----------------------------------------------------------------------------


def current_rulesets(session: Session, event_type: str | None = None
                     ) -> list[tuple[RuleSetSpec, int]]:
    found = []
    for row in store.list_current(session, "ruleset"):
        spec = store.compile_row(row, RuleSetSpec)
        if event_type is None or event_type in spec.on:
            found.append((spec, row.version))
    return found


def _classify(session: Session, spec: RuleSetSpec, context: dict[str, Any],
              ids: Mapping[str, Any], event_id: str, *, store_it: bool) -> None:
    if spec.classify is None:
        return
    text = (context.get("answers") or {}).get(spec.classify.field)
    dictionary, version = dictionary_spec(session, spec.classify.dictionary)
    matches = classify_and_store(session if store_it else None, dictionary, text,
                                 field_key=spec.classify.field, patient_id=ids["patient_id"],
                                 submission_id=ids["submission_id"], event_id=event_id,
                                 version=version)
    context["classification"] = summary(matches)


def _trace(matches: Sequence[Match], context: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"rule": m.rule.key, "priority": m.rule.priority,
             "values": _jsonable(m.values_in(context))}
            for m in matches]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def evaluate(session: Session, spec: RuleSetSpec, version: int, *, event_id: str,
             event_type: str, payload: Mapping[str, Any], dry_run: bool = False) -> Outcome:
    """Evaluate one rule set for one event; apply effects unless ``dry_run``.

    With effects, the evaluation row and every effect are written in one savepoint: an error in
    any action rolls all of them back and propagates (the caller's transaction fails too).
    """
    outcome = Outcome(spec.key, version, event_id, applies=False)
    if not dry_run and _evaluated(session, spec.key, version, event_id):
        outcome.skipped = True
        return outcome
    context, ids = build_context(session, event_type, payload)
    outcome.applies = spec.applies(context)
    if not outcome.applies:
        return outcome
    if dry_run:
        _classify(session, spec, context, ids, event_id, store_it=False)
        matches = spec.match(context)
        outcome.matched = _trace(matches, context)
        for m in matches:
            for index, call in enumerate(m.rule.then):
                try:
                    outcome.actions.append(_dry_action(session, spec, version, m, index, call,
                                                       context, ids, event_id, event_type))
                except LimitExceeded as exc:
                    raise exc.prefixed(("rules", m.rule.key, "then", index)) from None
        return outcome
    try:
        with session.begin_nested():
            _apply(session, spec, version, outcome, context, ids, event_type)
    except IntegrityError:
        # Another process evaluated the same event concurrently: its effects stand.
        outcome.skipped = True
    except CareloopError as exc:
        # An action could not run (no head nurse in the department, a service missing, …):
        # none of the effects are kept, but the event that caused it (e.g. a patient's
        # submission) must not be lost. The failure is recorded and raised as an alert.
        _record_failure(session, spec, version, outcome, ids, event_type, exc)
    return outcome


def _dry_action(session: Session, spec: RuleSetSpec, version: int, m: Match, index: int,
                call: Any, context: dict[str, Any], ids: Mapping[str, Any], event_id: str,
                event_type: str) -> dict[str, Any]:
    """What one action of a matched rule would do (a pure action is run: later actions see its
    outputs)."""
    done: dict[str, Any] = {"rule": m.rule.key, "do": call.do,
                            "would": _preview(call.options, context)}
    if _is_pure(call.do):
        ctx = ActionContext(session=session, ruleset=spec.key, version=version,
                            rule=m.rule.key, index=index, event_id=event_id,
                            event_type=event_type, context=context, **ids)
        done["result"] = _jsonable(_bind(context, _run_action(ctx, call.do, call.options)))
    return done


def _record_failure(session: Session, spec: RuleSetSpec, version: int, outcome: Outcome,
                    ids: Mapping[str, Any], event_type: str, exc: CareloopError) -> None:
    from careloop.rules.models import RuleAlert

    message = f"{type(exc).__name__}: {exc}"
    logger.warning("rule set %s v%s failed for event %s: %s", spec.key, version,
                   outcome.event_id, type(exc).__name__)
    outcome.error = message
    with session.begin_nested():
        session.add(RuleEvaluation(
            ruleset_key=spec.key, ruleset_version=version, event_id=outcome.event_id,
            event_type=event_type, patient_id=ids["patient_id"],
            submission_id=ids["submission_id"], task_id=ids["task_id"],
            matched=outcome.matched, actions=[], error=message, created_at=now_utc()))
        session.add(RuleAlert(
            idempotency_key=f"rule-failed:{spec.key}:{version}:{outcome.event_id}",
            ruleset_key=spec.key, rule_key="-", patient_id=ids["patient_id"],
            department_id=None, level="critical",
            message=f"rule set {spec.key} failed: {message}"[:2000], status="open",
            created_at=now_utc()))
        session.flush()


def _apply(session: Session, spec: RuleSetSpec, version: int, outcome: Outcome,
           context: dict[str, Any], ids: Mapping[str, Any], event_type: str) -> None:
    # The evaluation row is written once, finished, after the effects' flush: a duplicate
    # (another process evaluated the same event meanwhile) fails on the unique (rule set,
    # version, event) and the savepoint drops every effect with it. Nothing reads the row back
    # in the transaction: one Core INSERT, no ORM object to track and flush.
    created_at = now_utc()
    _classify(session, spec, context, ids, outcome.event_id, store_it=True)
    matches = spec.match(context)
    outcome.matched = _trace(matches, context)
    for match in matches:
        for index, call in enumerate(match.rule.then):
            ctx = ActionContext(session=session, ruleset=spec.key, version=version,
                                rule=match.rule.key, index=index, event_id=outcome.event_id,
                                event_type=event_type, context=context, **ids)
            result = _bind(context, _run_action(ctx, call.do, call.options))
            outcome.actions.append({"rule": match.rule.key, "do": call.do,
                                    "result": _jsonable(result)})
    task_id = ids["task_id"]
    if task_id is None:
        task_id = next((a["result"].get("task_id") for a in outcome.actions
                        if isinstance(a["result"], dict) and a["result"].get("task_id")), None)
    session.flush()  # the effects (the evaluation names their task)
    session.execute(_insert_evaluation(), {
        "ruleset_key": spec.key, "ruleset_version": version, "event_id": outcome.event_id,
        "event_type": event_type, "patient_id": ids["patient_id"],
        "submission_id": ids["submission_id"], "task_id": task_id,
        "matched": outcome.matched, "actions": outcome.actions, "created_at": created_at})


@cache
def _insert_evaluation() -> Any:
    """The evaluation's ``INSERT``, built once."""
    return insert(RuleEvaluation.__table__)  # type: ignore[arg-type]


def _bind(context: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Add a result's ``bind`` names (e.g. a decision table's outputs) to the context of the
    actions that follow; the result without ``bind`` is what the trace records."""
    bind = result.pop("bind", None)
    if isinstance(bind, dict):
        context.update(bind)
    return result


def _is_pure(name: str) -> bool:
    from careloop.engine.registry import loaded_registry

    spec = loaded_registry().catalogue("action").get(name)
    return bool(spec is not None and spec.pure)


def _run_action(ctx: ActionContext, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    from careloop.engine.registry import loaded_registry

    spec = loaded_registry().catalogue("action").get(name)
    if spec is None:
        raise RuleRuntimeError(f"action '{name}' is not registered")
    result: dict[str, Any] = spec.run(ctx, options)
    return result


def _preview(options: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    from careloop.rules.actions import _ENV

    out: dict[str, Any] = {}
    for name, value in options.items():
        if name in ("title", "message") and isinstance(value, str | dict):
            locale = ("zh-CN" if "zh-CN" in value else next(iter(value), None)) if isinstance(
                value, dict) else None
            text = value.get(locale, "") if isinstance(value, dict) else value
            try:
                out[name] = _ENV.render(text, context)
            except LimitExceeded as exc:
                raise exc.prefixed((name,) if locale is None else (name, locale)) from None
            except Exception as exc:  # jinja raises many types; a preview shows the problem
                out[name] = f"<{type(exc).__name__}: {exc}>"
        else:
            out[name] = _jsonable(value)
    return out


def handle_event(session: Session, event: DomainEventRow) -> None:
    """The ``rules`` event handler: every current rule set whose ``on`` matches the event and
    whose app acts for the event's department (:mod:`careloop.engine.scope`)."""
    departments: frozenset[str] | None = None
    owner: str | None = None
    for spec, version, app_id in listening(session).get(event.type, ()):
        if departments is None:
            departments = scope.event_departments(session, event.payload)
            owner = scope.form_owner(session, event.payload)
        if not scope.sees(session, app_id, departments, owner):
            continue
        evaluate(session, spec, version, event_id=event.event_id, event_type=event.type,
                 payload=event.payload)


def prefetch(session: Session, rows: Sequence[DomainEventRow]) -> None:
    """The ``rules`` prefetch of an event group (the dispatcher's, :func:`record_many`'s): for
    the events some rule set listens to, which (rule set, version) already evaluated them, in
    one query, and their patients' expression names (``engine/context.py``), so the group's
    events ask neither one by one."""
    index = listening(session)
    mine = [row for row in rows if index.get(row.type)]
    if not mine:
        return
    ids = sorted({row.event_id for row in mine})
    done: set[tuple[str, int, str]] = set()
    for first in range(0, len(ids), 500):
        done.update((key, version, event_id) for key, version, event_id in session.execute(
            select(RuleEvaluation.ruleset_key, RuleEvaluation.ruleset_version,
                   RuleEvaluation.event_id).where(
                RuleEvaluation.event_id.in_(ids[first:first + 500]))))
    # (rule set, version, event) known not evaluated when the group was read: each is asked
    # once (taken out when asked), anything else is asked of the database
    session.info.setdefault(_NOT_EVALUATED, set()).update(
        (spec.key, version, row.event_id) for row in mine
        for spec, version, _ in index[row.type]
        if (spec.key, version, row.event_id) not in done)
    names.prefetch(session, {p for row in mine if isinstance(p := row.payload.get("patient_id"),
                                                              str)})


_NOT_EVALUATED = "careloop.rules.not_evaluated"


def _evaluated(session: Session, key: str, version: int, event_id: str) -> bool:
    """Whether the rule set's version already evaluated the event (its row is stored)."""
    absent: set[tuple[str, int, str]] | None = session.info.get(_NOT_EVALUATED)
    if absent and (key, version, event_id) in absent:
        absent.discard((key, version, event_id))
        return False
    return session.scalars(select(RuleEvaluation.id).where(
        RuleEvaluation.ruleset_key == key, RuleEvaluation.ruleset_version == version,
        RuleEvaluation.event_id == event_id)).first() is not None


@event.listens_for(Session, "after_transaction_end")
def _forget_not_evaluated(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_NOT_EVALUATED, None)


Listening = dict[str, list[tuple[RuleSetSpec, int, str | None]]]


def listening(session: Session) -> Listening:
    """The current rule sets by the event types their ``on`` names (each rule set's ``(spec,
    version, app id)``, in key order): an event no rule set listens to costs a dictionary
    look-up. Built once per process while the stored definitions stay the same
    (:func:`careloop.engine.store.shared_current`)."""
    return store.shared_current(session, "ruleset", "by event type", _by_event_type)


def _by_event_type(rows: Sequence[Any]) -> Listening:
    found: Listening = {}
    for row in rows:
        spec = store.compile_row(row, RuleSetSpec)
        for event_type in dict.fromkeys(spec.on):
            found.setdefault(event_type, []).append((spec, row.version, row.app_id))
    return found


def dry_run(session: Session, ruleset: str, event: Mapping[str, Any]) -> Outcome:
    """Which rules of ``ruleset`` match ``event`` and what they would do; changes nothing.

    ``event`` is ``{"type": ..., "payload": {...}, "event_id": optional}`` or a bare
    ``form.submitted`` payload. Used by ``careloop rules test`` and the builder's "try it".
    """
    row = store.get_version(session, "ruleset", ruleset)
    spec = store.compile_row(row, RuleSetSpec)
    event_type = str(event.get("type") or "form.submitted")
    payload = event.get("payload", event if "type" not in event else {})
    _check_payload(payload)
    return evaluate(session, spec, row.version, event_id=str(event.get("event_id", "dry-run")),
                    event_type=event_type, payload=payload, dry_run=True)


_MAX_ID = 2**31 - 1


def _check_payload(payload: object) -> None:
    """A hand-written test event must have the shapes the context builder reads."""
    if not isinstance(payload, dict):
        raise RuleRuntimeError("the event payload must be a JSON object")
    for name in ("patient_id", "encounter_id"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise RuleRuntimeError(f"'{name}' must be text")
    for name in ("submission_id", "task_id"):
        value = payload.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 < value <= _MAX_ID):
            raise RuleRuntimeError(f"'{name}' must be a positive whole number")
    for name in ("answers", "scores", "bands", "context"):
        if payload.get(name) is not None and not isinstance(payload[name], dict):
            raise RuleRuntimeError(f"'{name}' must be a JSON object")


# --- the trace ------------------------------------------------------------------------------


def _read(session: Session, *conditions: Any) -> list[dict[str, Any]]:
    rows = session.scalars(select(RuleEvaluation).where(*conditions)
                           .order_by(RuleEvaluation.created_at, RuleEvaluation.id)).all()
    return [{"id": r.id, "ruleset": r.ruleset_key, "version": r.ruleset_version,
             "event_id": r.event_id, "event_type": r.event_type, "patient_id": r.patient_id,
             "submission_id": r.submission_id, "task_id": r.task_id, "matched": r.matched,
             "actions": r.actions, "error": r.error, "created_at": r.created_at.isoformat()}
            for r in rows]


def trace_for_submission(session: Session, submission_id: int) -> list[dict[str, Any]]:
    """Every evaluation caused by a submission's events (oldest first)."""
    return _read(session, RuleEvaluation.submission_id == submission_id)


def trace_for_patient(session: Session, patient_id: str) -> list[dict[str, Any]]:
    return _read(session, RuleEvaluation.patient_id == patient_id)


def trace_for_task(session: Session, task_id: int) -> list[dict[str, Any]]:
    """The evaluation that created a task, and those run for it (e.g. on ``task.overdue``)."""
    task = session.get(Task, task_id)
    event_id = (task.details or {}).get("event_id") if task else None
    conditions = [RuleEvaluation.task_id == task_id]
    if event_id:
        conditions.append(RuleEvaluation.event_id == event_id)
    return _read(session, or_(*conditions))


def classifications_for(session: Session, submission_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Classification).where(
        Classification.submission_id == submission_id).order_by(Classification.id)).all()
    return [{"dictionary": r.dictionary_key, "field": r.field_key, "category": r.category,
             "negative": r.negative, "words": r.words} for r in rows]


def decide(session: Session, table: str, context: Mapping[str, Any]) -> Any:
    """Evaluate the current version of a decision table against an expression context."""
    from careloop.rules.decisions import DecisionTableSpec

    spec = store.compile_row(store.get_version(session, "decision_table", table),
                             DecisionTableSpec)
    return spec.decide(context)
