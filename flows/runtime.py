"""Running flows: start a run, execute steps until they pause, resume on timers and events.

A run is pinned to the flow version it started on. Steps execute inside the caller's
transaction; a step that raises is retried with backoff (a ``retry`` timer) and, when its
attempts are used up, becomes an :class:`~careloop.flows.models.Incident`::

    start ─▶ enter(step) ─▶ StepType.run ─▶ ("next", key) ─▶ enter(key) …
                                       └──▶ ("wait",)  — a timer, an event or people resume it
                                       └──▶ ("end",)   — the run is completed
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, or_, select, update
from sqlalchemy.orm import Session

from careloop.engine import logs, store, txcache
from careloop.engine.clock import now_utc
from careloop.engine.domain import Task
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.expressions import ExpressionError
from careloop.engine.models import DefinitionRow
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import add_history
from careloop.flows import context as ctxmod
from careloop.flows.models import FlowRun, FlowTimer, Incident, RunHistory, StepRun, timer_status_is
from careloop.flows.outbox import cancel_for
from careloop.flows.spec import FlowSpec, StepSpec, parse_duration, releases_on_end
from careloop.flows.step_types import JOIN

log = logging.getLogger("careloop.flows")

Outcome = tuple[str, str | None]  # ("next", key) | ("wait", None) | ("end", None) | ("hold", None)
OPEN_STEP = ("pending", "waiting", "retrying")
MAX_STEPS_PER_CALL = 500



class FlowError(CareloopError):
    """Raised when a flow cannot be started (unknown flow, not startable) or acted upon."""


class StepError(CareloopError):
    """Raised by a step when it failed in a way worth retrying (e.g. a webhook answered 500)."""


def source_ref(run: FlowRun, step_key: str | None = None) -> str:
    return f"flow_run:{run.id}:" + (f"{step_key}" if step_key else "")


@dataclass(slots=True)
class Exec:
    """What a step type sees while it runs."""

    session: Session
    run: FlowRun
    spec: FlowSpec
    step: StepSpec
    step_run: StepRun
    # the step run was created in this transaction: nothing can hold its idempotency key yet
    fresh: bool = False

    def names(self) -> dict[str, Any]:
        return ctxmod.build(self.session, patient_id=self.run.patient_id,
                            encounter_id=self.run.encounter_id, context=self.run.context)

    def evaluate(self, path: str, names: dict[str, Any] | None = None) -> Any:
        expression = self.step.expression(path)
        if expression is None:
            return None
        try:
            return expression.evaluate(names if names is not None else self.names())
        except ExpressionError as exc:
            raise StepError(f"flow {self.spec.key} › step {self.step.key} › {path}: "
                            f"{exc.code}: {exc.message} in {expression.source!r}") from exc

    def history(self, action: str, details: dict[str, Any] | None = None) -> None:
        history(self.session, self.run, self.step.key, action, details)

    def timer(self, purpose: str, due_at: datetime, payload: dict[str, Any] | None = None) -> None:
        timer = FlowTimer(run_id=self.run.id, purpose=purpose, due_at=due_at,
                          status="pending", payload=payload or {})
        if self.step_run.id is None:
            timer.step_run = self.step_run  # written after the step run, in the same flush
        else:
            timer.step_run_id = self.step_run.id
        self.session.add(timer)

    @property
    def step_run_id(self) -> int:
        """The step run's row id (the row is written now if it was not yet)."""
        if self.step_run.id is None:
            self.session.flush()
        return self.step_run.id

    @property
    def key(self) -> str:
        """Idempotency key of this step execution (stable across retries).

        A step run created in this transaction whose row is not written yet (a ``lazy_row``
        step in a batch or a start) is keyed by its step and a random token instead of its row
        id, so the row is written once, finished, with the batch's other rows: nothing can hold
        the key yet, and a retry of the step runs after this attempt was rolled back (its
        messages and tasks with it), keyed by the row id then."""
        if self.step_run.id is None and self.fresh:
            token = self.step_run.__dict__.get("_careloop_key")
            if token is None:
                token = secrets.token_hex(8)
                self.step_run.__dict__["_careloop_key"] = token
            return f"flow_run:{self.run.id}:step:{self.step.key}:{token}"
        return f"flow_run:{self.run.id}:step:{self.step_run_id}"


def history(session: Session, run: FlowRun, step_key: str | None, action: str,
            details: dict[str, Any] | None = None) -> None:
    """A history row, written with every other one of the transaction in one ``INSERT`` at
    commit (nothing reads a run's history in the transaction that writes it)."""
    txcache.defer(session, RunHistory, {"run_id": run.id, "step_key": step_key,
                                        "at": now_utc(), "action": action,
                                        "details": details or {}})


_OPTIMISTIC = "careloop.flows.optimistic"


@contextmanager
def optimistic(session: Session) -> Iterator[None]:
    """Steps run inside this block take no savepoint of their own and let a failure through:
    the caller holds a savepoint around the whole block and, when it fails, rolls it back and
    runs the same work again step by step (each in its savepoint, a failure becoming a retry
    or an incident). A timer batch and a triggered start do so: two statements fewer a step."""
    previous = session.info.get(_OPTIMISTIC, False)
    session.info[_OPTIMISTIC] = True
    try:
        yield
    finally:
        session.info[_OPTIMISTIC] = previous


def prefetch_references(session: Session, specs: list[FlowSpec]) -> None:
    """The templates and forms the steps of ``specs`` name, read in one query for the
    transaction (a start, a timer batch) instead of one query each when a step needs it."""
    catalogue = loaded_registry().catalogue("step_type")
    pairs: set[tuple[str, str]] = set()
    for spec in specs:
        for step in spec.steps:
            kind = catalogue.get(step.type)
            for option, referenced in getattr(kind, "references", ()):
                value = step.get(option)
                if isinstance(value, str):
                    pairs.add((referenced, value))
    if not store.shared_rows(session, {kind for kind, _ in pairs}):
        store.prefetch(session, pairs)


_SPECS = "careloop.flows.specs"  # session.info: (flow key, version) -> spec, for the transaction


def spec_of(session: Session, run: FlowRun) -> FlowSpec:
    """The compiled spec of the run's flow version: a current version's from the process's
    specs (kept while the definitions' fingerprint stays the same: no query of its own), an
    older one's read for the transaction.

    A stored version never changes, so its spec is found once per transaction and version
    (a timer batch of a hundred runs of one flow asks once, not once a step: the process's
    specs are checked by scanning the session's changed rows each time)."""
    version = (run.flow_key, run.flow_version)
    known: dict[tuple[str, int], FlowSpec] = session.info.setdefault(_SPECS, {})
    spec = known.get(version)
    if spec is not None:
        return spec
    spec = store.shared_current(session, "flow", "by version", _by_version).get(version)
    if spec is None:
        row = store.get_version(session, "flow", run.flow_key, run.flow_version)
        spec = store.compile_row(row, FlowSpec)
    if not session.info.get(store._WROTE):  # a transaction writing definitions asks each time
        known[version] = spec
    return spec


@event.listens_for(Session, "after_transaction_end")
def _forget_specs(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_SPECS, None)


@event.listens_for(Session, "after_soft_rollback")
def _forget_specs_on_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_SPECS, None)


def _by_version(rows: Sequence[DefinitionRow]) -> dict[tuple[str, int], FlowSpec]:
    found: dict[tuple[str, int], FlowSpec] = {}
    for row in rows:
        try:
            found[(row.key, row.version)] = store.compile_row(row, FlowSpec)
        except CareloopError:  # left out: spec_of reads it and raises as it always did
            continue
    return found


_WITHOUT_RUNS = "careloop.flows.without_runs"


def without_runs(session: Session) -> set[str | None]:
    """Patients this transaction knows to have no flow run (the ``flows`` prefetch of an event
    batch fills it, :func:`start` takes a patient out); forgotten when the transaction ends."""
    found: set[str | None] = session.info.setdefault(_WITHOUT_RUNS, set())
    return found


@event.listens_for(Session, "after_transaction_end")
def _forget_without_runs(session: Session, transaction: Any) -> None:
    # a rolled-back savepoint only removes runs: what was known stays true until the end
    if transaction.parent is None:
        session.info.pop(_WITHOUT_RUNS, None)


def start(session: Session, *, flow_key: str, patient_id: str | None = None,
          encounter_id: str | None = None, context: dict[str, Any] | None = None,
          idempotency_key: str, once_key: str | None = None, new_key: bool = False) -> int:
    """Start the current version of ``flow_key`` (service ``flows.start``); the same key returns
    the existing run's id. ``once_key`` (unique in ``flow_runs``) is held by the run for its
    trigger's ``once``; a second start with a held one raises ``IntegrityError`` at the insert.
    ``new_key``: the caller knows no run holds ``idempotency_key`` (derived from an event just
    stored): not looked up, and a run that does hold it raises ``IntegrityError`` instead."""
    existing = None if new_key else session.scalars(select(FlowRun.id).where(
        FlowRun.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return existing
    row = store.current(session, "flow", flow_key)
    if row is None:
        raise FlowError(f"no flow '{flow_key}'")
    spec = store.compile_row(row, FlowSpec)
    prefetch_references(session, [spec])
    run = FlowRun(flow_key=flow_key, flow_version=row.version, status="running",
                  patient_id=patient_id, encounter_id=encounter_id, context=dict(context or {}),
                  idempotency_key=idempotency_key, once_key=once_key, started_at=now_utc())
    session.add(run)
    session.flush()
    without_runs(session).discard(patient_id)
    history(session, run, None, "started", {"version": row.version})
    enter(session, run, spec, spec.first, None)
    return run.id


def enter(session: Session, run: FlowRun, spec: FlowSpec, key: str | None,
          parent_id: int | None) -> None:
    """Execute steps from ``key`` on one path until the path pauses or ends."""
    for _ in range(MAX_STEPS_PER_CALL):
        if run.status != "running":
            return
        if key is None or key == JOIN:
            _path_end(session, run, spec, parent_id, key)
            return
        step = spec.step(key)
        step_run = StepRun(run_id=run.id, step_key=step.key, step_type=step.type,
                           status="pending", parent_id=parent_id, started_at=now_utc(), state={})
        session.add(step_run)
        known = session.info.get(_OPEN_KNOWN, {}).get(run.id)
        if known is not None:
            known.append(step_run)
        if not (session.info.get(_OPTIMISTIC) and _lazy_row(step.type)):
            session.flush()  # a savepoint of its own rolls back to a step run that exists
        outcome = execute(session, run, spec, step, step_run, fresh=True)
        if outcome is None or outcome[0] in ("wait", "hold"):
            return
        if outcome[0] == "end":
            _finish(step_run)
            complete_run(session, run, "completed")
            return
        _finish(step_run)
        key = outcome[1]
    raise FlowError(f"flow {spec.key}: more than {MAX_STEPS_PER_CALL} steps without a pause")


def _lazy_row(step_type: str) -> bool:
    return bool(loaded_registry().catalogue("step_type")[step_type].lazy_row)


def _finish(step_run: StepRun, status: str = "done") -> None:
    step_run.status, step_run.finished_at, step_run.waiting_for = status, now_utc(), None


def execute(session: Session, run: FlowRun, spec: FlowSpec, step: StepSpec,
            step_run: StepRun, fresh: bool = False) -> Outcome | None:
    """Run one step in a savepoint; a failure schedules a retry or opens an incident."""
    x = Exec(session, run, spec, step, step_run, fresh)
    if step.expression("when") is not None and not x.evaluate("when"):
        x.history("skipped", {"reason": "when"})
        return ("next", step.next)
    step_type = loaded_registry().catalogue("step_type")[step.type]
    if session.info.get(_OPTIMISTIC) and step_run.id is None:
        # a lazy row: what the step reads (its patient's department, links, templates) does
        # not write the step run first; its row, messages, task and timers go in the batch's
        # flush, one INSERT a table, finished (no INSERT now and UPDATE later)
        with session.no_autoflush:
            outcome: Outcome = step_type.run(x)
    elif session.info.get(_OPTIMISTIC):
        outcome = step_type.run(x)
    else:
        mark = txcache.deferred_mark(session)
        try:
            with session.begin_nested():
                outcome = step_type.run(x)
        except Exception as exc:  # a step may fail in many ways; each a retry or incident
            txcache.drop_deferred_since(session, mark)
            _failed(x, exc)
            return None
    x.history("step_done" if outcome[0] == "next" else f"step_{outcome[0]}",
              {"type": step.type, "next": outcome[1]} if outcome[0] == "next" else {})
    return outcome


def _failed(x: Exec, exc: Exception) -> None:
    step_run = x.step_run
    step_run.attempts += 1
    # stored and shown on /admin/flows: no SQL, parameters or addresses; the full detail goes to
    # the redacted log below
    step_run.error = logs.error_text(exc)
    # the step type's retry policy; a step's own ``retry`` option overrides it
    default = loaded_registry().catalogue("step_type")[x.step.type].retry
    policy = x.step.get("retry") or {}
    attempts = int(policy.get("attempts", default.attempts))
    delay = parse_duration(policy.get("backoff", default.backoff))
    log.warning("flow run %s step %s failed (attempt %s/%s): %s", x.run.id, x.step.key,
                step_run.attempts, attempts, type(exc).__name__, exc_info=exc)
    if step_run.attempts < attempts:
        step_run.status = "retrying"
        x.timer("retry", now_utc() + delay * (2 ** (step_run.attempts - 1)))
        x.history("retry_scheduled", {"attempt": step_run.attempts, "error": step_run.error})
        return
    step_run.status = "failed"
    x.session.add(Incident(run_id=x.run.id, step_run_id=step_run.id, step_key=x.step.key,
                           error=step_run.error, status="open", created_at=now_utc()))
    x.history("incident", {"error": step_run.error})


def _path_end(session: Session, run: FlowRun, spec: FlowSpec, parent_id: int | None,
              key: str | None) -> None:
    if parent_id is None:
        complete_run(session, run, "completed")
        return
    join(session, run, spec, parent_id)


def join(session: Session, run: FlowRun, spec: FlowSpec, parent_id: int) -> None:
    """A branch of a parallel step reached its end."""
    parent = session.get(StepRun, parent_id)
    if parent is None or parent.status != "waiting":
        return  # already joined (join: first)
    state = dict(parent.state)
    state["done"] = int(state.get("done", 0)) + 1
    parent.state = state
    step = spec.step(parent.step_key)
    if step.get("join", "all") == "first" or state["done"] >= int(state.get("total", 0)):
        _finish(parent)
        history(session, run, step.key, "joined", {"branches_done": state["done"]})
        for child in session.scalars(select(StepRun).where(
                StepRun.parent_id == parent.id, StepRun.status.in_(OPEN_STEP))).all():
            _cancel_step(session, child)
        enter(session, run, spec, step.next, parent.parent_id)


def resume(session: Session, step_run: StepRun, target: str | None,
           context_update: dict[str, Any] | None = None) -> None:
    """A waiting step is done: cancel its other timers and continue at ``target``."""
    run = session.get(FlowRun, step_run.run_id)
    if run is None or run.status != "running" or step_run.status not in ("waiting", "retrying"):
        return
    if context_update:
        run.context = {**run.context, **context_update}
    _cancel_timers(session, step_run)
    _finish(step_run)
    history(session, run, step_run.step_key, "resumed", {"next": target})
    enter(session, run, spec_of(session, run), target, step_run.parent_id)


def retry_step(session: Session, step_run: StepRun) -> None:
    """Execute a failed or retrying step again (a retry timer, or an administrator)."""
    run = session.get(FlowRun, step_run.run_id)
    if run is None or run.status != "running":
        return
    spec = spec_of(session, run)
    step = spec.step(step_run.step_key)
    step_run.status = "pending"
    outcome = execute(session, run, spec, step, step_run)
    if outcome is None or outcome[0] in ("wait", "hold"):
        return
    _finish(step_run)
    if outcome[0] == "end":
        complete_run(session, run, "completed")
        return
    enter(session, run, spec, outcome[1], step_run.parent_id)


def _cancel_timers(session: Session, step_run: StepRun) -> None:
    """The step's pending timers are cancelled, with every other finished step's of the
    transaction in one ``UPDATE`` at commit (the sweep claims timers in its own transactions)."""
    txcache.at_commit(session, _cancel_pending, ("step", step_run))


def _cancel_pending(session: Session, items: list[tuple[str, Any]]) -> None:
    """One ``UPDATE`` at commit for the pending timers of the transaction's finished steps and
    ended runs (a step run's id read now: a step run made in the transaction has one now)."""
    session.flush()
    steps = [obj.id for kind, obj in items if kind == "step" and obj.id is not None]
    runs = [i for kind, i in items if kind == "run" and i is not None]
    which = [*([FlowTimer.step_run_id.in_(steps)] if steps else []),
             *([FlowTimer.run_id.in_(runs)] if runs else [])]
    if which:
        pending = timer_status_is(session.get_bind().dialect.name, "pending")
        session.execute(update(FlowTimer).where(pending, or_(*which))
                        .values(status="cancelled"))


def _cancel_step(session: Session, step_run: StepRun) -> None:
    _cancel_timers(session, step_run)
    _finish(step_run, "cancelled")
    for task in session.scalars(select(Task).where(
            Task.source_ref == f"flow_step:{step_run.id}",
            Task.status.in_(("open", "in_progress")))).all():
        task.status = "cancelled"
        add_history(session, task, "flows", "cancelled", {})


def complete_run(session: Session, run: FlowRun, status: str, reason: str | None = None) -> None:
    """End a run: ``completed`` or ``cancelled``; every open step, timer, unsent message and
    open task of the run is cancelled, so nothing more is sent."""
    for step_run in _open_steps(session, run):
        _cancel_step(session, step_run)
    # its pending timers, with every other ended run's of the transaction in one UPDATE at
    # commit (after the flush that writes the timers made in it)
    txcache.at_commit(session, _cancel_pending, ("run", run.id))
    if status == "cancelled":
        cancel_for(session, source_ref(run))
        for task in session.scalars(select(Task).where(
                Task.source_ref.startswith(source_ref(run), autoescape=True),
                Task.status.in_(("open", "in_progress")))).all():
            task.status = "cancelled"
            add_history(session, task, "flows", "cancelled", {"reason": reason})
    run.status, run.finished_at = status, now_utc()
    if run.once_key is not None and (status == "cancelled" or releases_on_end(run.once_key)):
        run.once_key = None  # the trigger may start this flow again for the patient/encounter
    history(session, run, None, status, {"reason": reason} if reason else {})


_OPEN_KNOWN = "careloop.flows.open_steps"


def know_open_steps(session: Session, run_ids: set[int], loaded: list[StepRun]) -> None:
    """``loaded`` holds every open step run of ``run_ids`` (a timer batch read them with its
    step runs): for the rest of the transaction a run's end finds them, and the step runs
    :func:`enter` makes for those runs, without a query."""
    known: dict[int, list[StepRun]] = session.info.setdefault(_OPEN_KNOWN, {})
    for run_id in run_ids:
        known.setdefault(run_id, [])
    for step_run in loaded:
        if step_run.run_id in known and step_run not in known[step_run.run_id]:
            known[step_run.run_id].append(step_run)


@event.listens_for(Session, "after_transaction_end")
def _forget_open_steps(session: Session, transaction: Any) -> None:
    # a rolled-back savepoint may have made step runs that are gone: forget on any end
    session.info.pop(_OPEN_KNOWN, None)


def _open_steps(session: Session, run: FlowRun) -> list[StepRun]:
    """The run's open step runs: those stored (read without flushing this transaction's new
    rows first: the ending step's row and its batch's are written together later) and those
    made in this transaction, not written yet."""
    known = session.info.get(_OPEN_KNOWN, {}).get(run.id)
    if known is not None:
        return [step_run for step_run in known if step_run.status in OPEN_STEP]
    with session.no_autoflush:
        stored = session.scalars(select(StepRun).where(
            StepRun.run_id == run.id, StepRun.status.in_(OPEN_STEP))).all()
    found = [s for s in stored if s.status in OPEN_STEP]  # the identity map's, as changed
    found += [obj for obj in session.new if isinstance(obj, StepRun) and obj.run_id == run.id
              and obj.status in OPEN_STEP]
    return found


def cancel_runs(session: Session, *, encounter_id: str | None = None,
                patient_id: str | None = None, reason: str,
                flow_keys: set[str] | None = None) -> int:
    """Cancel the running runs of an encounter (or patient); returns how many."""
    query = select(FlowRun).where(FlowRun.status == "running")
    if encounter_id is not None:
        query = query.where(FlowRun.encounter_id == encounter_id)
    elif patient_id is not None:
        query = query.where(FlowRun.patient_id == patient_id)
    else:
        return 0
    count = 0
    for run in session.scalars(query).all():
        if flow_keys is None or run.flow_key in flow_keys:
            complete_run(session, run, "cancelled", reason)
            count += 1
    return count


def resolve_incident(session: Session, incident_id: int, action: str, actor: str) -> None:
    """An administrator's ``retry`` or ``skip`` of an open incident."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    if incident.status != "open":
        raise FlowError(f"incident {incident_id} is already {incident.status}")
    if action not in ("retry", "skip"):
        raise FlowError(f"unknown incident action '{action}' (retry or skip)")
    step_run = session.get(StepRun, incident.step_run_id)
    run = session.get(FlowRun, incident.run_id)
    if step_run is None or run is None:
        raise NotFound(f"incident {incident_id}: run or step is gone")
    incident.status = "retried" if action == "retry" else "skipped"
    incident.resolved_at, incident.resolved_by = now_utc(), actor
    history(session, run, step_run.step_key, f"incident_{incident.status}", {"actor": actor})
    if action == "retry":
        step_run.attempts = 0
        retry_step(session, step_run)
        return
    _finish(step_run, "skipped")
    spec = spec_of(session, run)
    enter(session, run, spec, spec.step(step_run.step_key).next, step_run.parent_id)


def after(duration: str) -> datetime:
    return now_utc() + parse_duration(duration)


def timer_due(delta: timedelta) -> datetime:
    return now_utc() + delta
