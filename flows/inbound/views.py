"""HIS database views (数据库视图) polled on the ticker: each new row becomes one domain event.

A ``his_view`` definition (bundle folder ``his_views/``) names the environment variable holding
the SQLAlchemy URL of the HIS database (never the URL: it holds the password), a read-only query
with the parameter ``:watermark``, the watermark column, the batch size, the poll interval and the
mapping of columns to an event::

    kind: his_view
    key: his_discharges
    url_env: CARELOOP_HIS_URL
    query: SELECT * FROM v_discharges WHERE updated_at > :watermark ORDER BY updated_at
    watermark: {column: updated_at, start: "2024-01-01T00:00:00"}
    event:
      type: encounter.discharged
      event_id: "his-discharge-{visit_no}"
      payload: {encounter_id: visit_no, patient_id: patient_no, type: {value: inpatient}, …}

Every process's ticker may poll: a poller first claims the view's row in ``his_view_state`` with a
conditional UPDATE (a lease), reads one batch from the HIS in a read-only transaction, and ingests
the batch through :func:`careloop.flows.ingest.ingest` in one transaction that first re-checks
its lease and moves the watermark. A poller that lost its lease commits nothing; the event id
(from the row's columns) makes a row read twice one event. A row the HIS changed afterwards
(same event id, another body) is sent as a correction (``"corrects"``). A row that is refused
stops the batch there: the watermark stays before it, the error is shown on
``/admin/integration``, and the next poll tries it again (nothing is skipped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, create_engine, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from careloop.engine import store
from careloop.engine.check import CompileContext, Definition
from careloop.engine.clock import hospital_tz, now_utc, to_local
from careloop.engine.db import transaction
from careloop.flows.inbound.models import HisViewState

log = logging.getLogger("careloop.flows.inbound")

KIND = "his_view"
LEASE_SECONDS = 300
MAX_BATCHES = 20  # per poll: one poll is bounded; the next tick goes on
SOURCE_TIMEOUT_SECONDS = 30

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Statements that write (a data-modifying CTE, SELECT … FOR UPDATE); the poll's transaction is
# read-only as well, on the databases that have one.
_WRITES = re.compile(r"\b(insert|update|delete|merge|drop|alter|create|truncate|grant|revoke)\b",
                     re.IGNORECASE)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_QUOTED = re.compile(r"'[^']*'")


class HisViewError(Exception):
    """A poll that could not be done (no URL, source unreachable, a column missing): a code
    (``hisdata.views.error.<code>``) with its parameters; ``str()`` is the English text."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code, self.params = code, params

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "params": self.params}

    def __str__(self) -> str:
        return error_text(self.to_json(), "en")


def error_text(problem: dict[str, Any], locale: str | None) -> str:
    """A recorded poll error in words (``hisdata.views.error.<code>``)."""
    from careloop.engine.i18n import t

    return t(f"hisdata.views.error.{problem.get('code')}", locale, **problem.get("params", {}))


# --- the definition ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """A payload value: a column of the row (lower case) or a constant."""

    column: str | None = None
    value: Any = None


@dataclass(frozen=True, slots=True)
class HisViewSpec:
    key: str
    title: dict[str, str]
    url_env: str
    query: str
    watermark_column: str
    watermark_start: Any
    batch_size: int
    interval_seconds: int
    timezone: str | None
    event_type: str
    event_id: str
    payload: tuple[tuple[str, Field], ...]
    occurred_at: Field | None = None
    id_columns: tuple[str, ...] = field(default=())

    def columns(self) -> set[str]:
        """Every column the mapping reads (lower case)."""
        named = {f.column for _, f in self.payload if f.column}
        if self.occurred_at is not None and self.occurred_at.column:
            named.add(self.occurred_at.column)
        return named | set(self.id_columns) | {self.watermark_column}

    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone) if self.timezone else hospital_tz()

    def event(self, row: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
        """The domain event of one row (keys lower case); a column that is NULL leaves its
        payload field out."""
        missing = [c for c in self.id_columns if row.get(c) is None]
        if missing:
            raise HisViewError("event_id_column_empty", column=missing[0])
        event_id = self.event_id.format(**{c: _text(row[c], tz) for c in self.id_columns})
        payload: dict[str, Any] = {}
        for name, spec in self.payload:
            value = spec.value if spec.column is None else row.get(spec.column)
            if value is not None:
                payload[name] = value if spec.column is None else _text(value, tz)
        event: dict[str, Any] = {"event_id": event_id, "type": self.event_type,
                                 "payload": payload}
        if self.occurred_at is not None:
            when = (self.occurred_at.value if self.occurred_at.column is None
                    else row.get(self.occurred_at.column))
            if when is not None:
                event["occurred_at"] = _text(when, tz)
        return event


def _text(value: Any, tz: ZoneInfo) -> str:
    """A HIS value as event text: date-times with their offset (naive ones in ``tz``)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=tz)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value).strip()


def _field(raw: Any) -> Field:
    if isinstance(raw, str):
        return Field(column=raw.lower())
    return Field(value=raw["value"])


def _start(raw: Any) -> Any:
    if isinstance(raw, int):
        return raw
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return raw


def compile_his_view(definition: Definition, ctx: CompileContext) -> HisViewSpec | None:
    """Check the query is one read-only SELECT naming ``:watermark``, the event type is one the
    events API takes, every payload field is one of its fields (the required ones mapped), and
    the event id is built from columns."""
    from careloop.flows.ingest import accepted_event_types

    doc, body = definition.doc, definition.body
    before = len(ctx.problems)
    query = body["query"]
    bare = _QUOTED.sub("''", _COMMENTS.sub(" ", query)).strip().rstrip(";").strip()
    if not re.match(r"^(select|with)\b", bare, re.IGNORECASE) or ";" in bare \
            or _WRITES.search(bare):
        ctx.add(doc.problem("his_view.not-read-only", "the query must be one read-only SELECT "
                            "(no other statement, no INSERT/UPDATE/DELETE/DDL)", ("query",)))
    if not re.search(r"(?<!:):watermark\b", query):
        ctx.add(doc.problem("his_view.no-watermark", "the query must compare the watermark "
                            "column with :watermark, e.g. WHERE updated_at > :watermark",
                            ("query",)))
    if body.get("timezone"):
        try:
            ZoneInfo(body["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            ctx.add(doc.problem("his_view.unknown-timezone",
                                f"unknown time zone {body['timezone']!r}", ("timezone",)))
    event = body["event"]
    accepted = accepted_event_types()
    schema = accepted.get(event["type"])
    if schema is None:
        ctx.add(doc.problem("his_view.unknown-event-type", f"unknown event type "
                            f"{event['type']!r}; one of: " + ", ".join(accepted),
                            ("event", "type")))
    else:
        known = schema.get("properties", {})
        for name in event["payload"]:
            if name not in known:
                ctx.add(doc.problem("his_view.unknown-field", f"{event['type']} has no field "
                                    f"{name!r}; its fields: " + ", ".join(known),
                                    ("event", "payload", name), at_key=True))
        for name in schema.get("required", []):
            if name not in event["payload"]:
                ctx.add(doc.problem("his_view.missing-field", f"{event['type']} needs "
                                    f"{name!r}: map it to a column or a constant",
                                    ("event", "payload")))
    id_columns: list[str] = []
    try:
        for _, name, spec, conv in string.Formatter().parse(event["event_id"]):
            if name is None:
                continue
            if not _IDENT.match(name) or spec or conv:
                raise ValueError(f"{{{name}}} is not a column name")
            id_columns.append(name.lower())
        if not id_columns:
            raise ValueError("it names no column, so every row would get the same id")
    except ValueError as exc:
        ctx.add(doc.problem("his_view.bad-event-id", f"event id template: {exc}; write e.g. "
                            "'his-discharge-{visit_no}'", ("event", "event_id")))
    if len(ctx.problems) > before:
        return None
    occurred = event.get("occurred_at")
    return HisViewSpec(
        key=definition.key, title=definition.title, url_env=body["url_env"], query=query,
        watermark_column=body["watermark"]["column"].lower(),
        watermark_start=_start(body["watermark"]["start"]),
        batch_size=int(body.get("batch_size", 500)),
        interval_seconds=int(body.get("interval_seconds", 60)), timezone=body.get("timezone"),
        event_type=event["type"], event_id=event["event_id"],
        payload=tuple((name, _field(raw)) for name, raw in event["payload"].items()),
        occurred_at=_field(occurred) if occurred is not None else None,
        id_columns=tuple(dict.fromkeys(id_columns)))


# --- the watermark, stored as text ---------------------------------------------------------------


def encode_watermark(value: Any) -> str:
    if isinstance(value, datetime):
        kind, shown = "datetime", value.isoformat()
    elif isinstance(value, date):
        kind, shown = "date", value.isoformat()
    elif isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise HisViewError("bad_watermark_type", type=type(value).__name__)
    elif isinstance(value, int):
        kind, shown = "int", str(value)
    elif isinstance(value, Decimal):
        kind, shown = "decimal", str(value)
    else:
        kind, shown = "text", value
    return json.dumps({"type": kind, "value": shown})


def decode_watermark(stored: str) -> Any:
    data = json.loads(stored)
    kind, value = data["type"], data["value"]
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "int":
        return int(value)
    if kind == "decimal":
        return Decimal(value)
    return value


# --- polling -------------------------------------------------------------------------------------


@dataclass(slots=True)
class PollResult:
    """What one poll did: ``polled`` | ``not_due`` | ``busy`` (another process holds the
    lease) | ``lease_lost`` | ``error``."""

    view: str
    status: str
    rows: int = 0
    accepted: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"view": self.view, "status": self.status, "rows": self.rows,
                "accepted": self.accepted, "error": self.error}


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _ensure_row(engine: Engine, name: str) -> None:
    with transaction(engine) as session:
        if session.get(HisViewState, name) is not None:
            return
        try:
            with session.begin_nested():
                session.add(HisViewState(name=name, rows_seen=0, events_accepted=0))
        except IntegrityError:
            pass  # another process created it


def _claim(engine: Engine, spec: HisViewSpec, worker: str, now: datetime, force: bool) -> str:
    _ensure_row(engine, spec.key)
    conditions = [HisViewState.name == spec.key,
                  or_(HisViewState.lease_until.is_(None), HisViewState.lease_until < now)]
    if not force:
        conditions.append(or_(HisViewState.last_poll_at.is_(None), HisViewState.last_poll_at
                              <= now - timedelta(seconds=spec.interval_seconds)))
    with transaction(engine) as session:
        result = session.execute(update(HisViewState).where(*conditions).values(
            lease_owner=worker, lease_until=now + timedelta(seconds=LEASE_SECONDS),
            last_poll_at=now))
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return "claimed"
        if force:  # only a lease can have stopped it
            return "busy"
        # Not due only if polled within the interval. On PostgreSQL the holder may release
        # between the UPDATE and this read (an UPDATE matching no row locks nothing), so a
        # free lease with no recent poll still means another process held it: busy.
        state = session.get(HisViewState, spec.key)
        if state is None or state.last_poll_at is None or \
                state.last_poll_at <= now - timedelta(seconds=spec.interval_seconds):
            return "busy"
        return "busy" if state.lease_until is not None and state.lease_until >= now \
            else "not_due"


def _release(engine: Engine, name: str, worker: str, error: HisViewError | None,
             now: datetime) -> None:
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
    if error is None:
        values.update(last_error=None, last_success_at=now)
    else:  # the code and its parameters, shown in the reader's language
        values.update(last_error=json.dumps(error.to_json(), ensure_ascii=False)[:4000],
                      last_error_at=now)
    with transaction(engine) as session:
        session.execute(update(HisViewState).where(
            HisViewState.name == name, HisViewState.lease_owner == worker).values(**values))


def source_url(spec: HisViewSpec) -> str:
    url = os.environ.get(spec.url_env, "").strip()
    if not url:
        raise HisViewError("url_env_unset", env=spec.url_env)
    return url


def _source_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HisViewError("bad_url") from None
    connect_args: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        connect_args = {"connect_timeout": 10, "read_timeout": SOURCE_TIMEOUT_SECONDS}
    elif backend == "postgresql":
        connect_args = {"connect_timeout": 10,
                        "options": f"-c statement_timeout={SOURCE_TIMEOUT_SECONDS * 1000}"}
    try:
        return create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except (ArgumentError, ImportError) as exc:
        raise HisViewError("driver_missing", detail=f"{type(exc).__name__}: {exc}"[:300]) \
            from None


def fetch(source: Engine, spec: HisViewSpec, watermark: Any) -> list[dict[str, Any]]:
    """One batch of rows after ``watermark`` (column names lower case), read in a read-only
    transaction that is rolled back."""
    params: dict[str, Any] = {"watermark": watermark}
    if re.search(r"(?<!:):batch_size\b", spec.query):
        params["batch_size"] = spec.batch_size
    with source.connect() as conn:
        if conn.dialect.name in ("postgresql", "mysql", "mariadb", "oracle"):
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        result = conn.execute(text(spec.query), params)
        names = result.keys()
        columns = [str(c).lower() for c in names]
        rows = [dict(zip(columns, row, strict=True))
                for row in result.fetchmany(spec.batch_size)]
        result.close()
        conn.rollback()
    missing = sorted(spec.columns() - set(columns))
    if missing:
        raise HisViewError("missing_column", missing=", ".join(map(repr, missing)),
                           columns=", ".join(columns))
    return rows


def _mask(message: str) -> str:
    """A refusal without the values it quotes (they may be personal data)."""
    return _QUOTED.sub("'…'", message)


def _ingest_batch(engine: Engine, spec: HisViewSpec, worker: str,
                  rows: list[dict[str, Any]]) -> tuple[int, HisViewError | None]:
    """Ingest ``rows`` (sorted by watermark) in one transaction, on the condition that the lease
    is still ``worker``'s; returns ``(accepted, error)``. Raises :class:`LeaseLost`."""
    from careloop.flows.ingest import ingest

    tz, column = spec.tz(), spec.watermark_column
    accepted, done = 0, 0
    error: HisViewError | None = None
    with transaction(engine) as session:
        held = session.execute(update(HisViewState).where(
            HisViewState.name == spec.key, HisViewState.lease_owner == worker).values(
            lease_until=now_utc() + timedelta(seconds=LEASE_SECONDS)))
        if held.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(spec.key)
        for row in rows:
            try:
                event = spec.event(row, tz)
                status, body = _ingest_row(session, ingest, event, spec.key)
            except HisViewError as exc:
                status, body = 422, {"errors": [{"path": "$", "message": str(exc)}]}
                event = {"event_id": "?"}
            if status not in (200, 202):
                problems = "; ".join(f"{p['path']}: {_mask(p['message'])}"
                                     for p in body.get("errors", []))
                error = HisViewError("row_refused", event_id=event["event_id"], status=status,
                                     problems=problems[:1500])
                break
            accepted += 1
            done += 1
        state = session.get(HisViewState, spec.key)
        assert state is not None  # updated above
        if done == len(rows) and rows:
            state.watermark = encode_watermark(rows[-1][column])
        elif done:  # stop before the refused row: only values strictly below its watermark
            stop = rows[done][column]
            below = [r[column] for r in rows[:done] if r[column] < stop]
            if below:
                state.watermark = encode_watermark(below[-1])
        state.rows_seen += done
        state.events_accepted += accepted
    return accepted, error


def _ingest_row(session: Session, ingest: Callable[..., tuple[int, dict[str, Any]]],
                event: dict[str, Any], view: str) -> tuple[int, dict[str, Any]]:
    source = f"his_view:{view}"[:64]
    try:
        with session.begin_nested():
            status, body = ingest(session, event, source=source)
        if status == 409 and body.get("status") == "conflict":
            # The HIS changed the row after it was read: send the new body as a correction.
            digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:12]
            correction = {**event, "event_id": f"{event['event_id'][:110]}~{digest}",
                          "corrects": event["event_id"]}
            with session.begin_nested():
                status, body = ingest(session, correction, source=source)
    except IntegrityError:
        status, body = 409, {"errors": [{"path": "$.payload", "message":
                                         "conflicts with data already stored"}]}
    return status, body


class LeaseLost(Exception):
    """Another process took the view over (this poll's lease ran out); nothing was committed."""


def poll(engine: Engine, spec: HisViewSpec, *, now: datetime | None = None,
         worker: str | None = None, force: bool = False,
         after_fetch: Callable[[], None] | None = None) -> PollResult:
    """Poll one view if it is due (``force``: whatever its interval) and no other process holds
    it: batches until one comes back short (at most :data:`MAX_BATCHES`). Never raises for the
    source's faults: they are recorded on the view's state."""
    now = now or now_utc()
    worker = worker or worker_id()
    claimed = _claim(engine, spec, worker, now, force)
    if claimed != "claimed":
        return PollResult(spec.key, claimed)
    result = PollResult(spec.key, "polled")
    problem: HisViewError | None = None
    source: Engine | None = None
    try:
        source = _source_engine(source_url(spec))
        for _ in range(MAX_BATCHES):
            with transaction(engine) as session:
                state = session.get(HisViewState, spec.key)
                stored = state.watermark if state is not None else None
            mark = decode_watermark(stored) if stored else spec.watermark_start
            rows = fetch(source, spec, mark)
            if after_fetch is not None:
                after_fetch()
            full = len(rows) >= spec.batch_size
            batch = _whole_watermarks(rows, spec) if full else rows
            accepted, error = _ingest_batch(engine, spec, worker, batch)
            result.rows += len(batch)
            result.accepted += accepted
            if error is not None:
                problem = error
                break
            if not full:
                break
    except LeaseLost:
        result.status = "lease_lost"
        return result
    except HisViewError as exc:
        problem = exc
    except SQLAlchemyError as exc:
        problem = _source_error(exc, spec)
    finally:
        if source is not None:
            source.dispose()
    if problem is not None:
        result.status, result.error = "error", str(problem)
    _release(engine, spec.key, worker, problem, now)
    log.info("his view %s: %s, %d rows, %d accepted", spec.key, result.status, result.rows,
             result.accepted)
    return result


def _whole_watermarks(rows: list[dict[str, Any]], spec: HisViewSpec) -> list[dict[str, Any]]:
    """A full batch without its trailing rows sharing the last watermark value (the next poll
    reads them all with ``> :watermark``)."""
    column = spec.watermark_column
    last = rows[-1][column]
    kept = [r for r in rows if r[column] != last]
    if not kept:
        raise HisViewError("same_watermark", count=len(rows))
    if any(a[column] > b[column] for a, b in pairwise(kept)):
        raise HisViewError("not_ordered", column=column)
    return kept


def _source_error(exc: SQLAlchemyError, spec: HisViewSpec) -> HisViewError:
    """The driver's message without the password (drivers may quote the address)."""
    original = getattr(exc, "orig", None) or exc
    message = f"{type(original).__name__}: {str(original).splitlines()[0] if str(original) else ''}"
    url = os.environ.get(spec.url_env, "")
    password = None
    if url:
        try:
            password = make_url(url).password
        except ArgumentError:
            password = None
    if password:
        message = message.replace(str(password), "***")
    return HisViewError("source_failed", detail=message[:500])


def specs(session: Session) -> list[HisViewSpec]:
    """The current version of every ``his_view`` definition."""
    return [store.compile_row(row, HisViewSpec) for row in store.list_current(session, KIND)]


def spec_of(session: Session, name: str) -> HisViewSpec:
    return store.compile_row(store.get_version(session, KIND, name), HisViewSpec)


def poll_due(engine: Engine, now: datetime | None = None) -> dict[str, Any]:
    """The ``his_views.poll`` tick: every view that is due and free."""
    with transaction(engine) as session:
        due = specs(session)
    results = {}
    for spec in due:
        try:
            results[spec.key] = poll(engine, spec, now=now).status
        except Exception as exc:  # one view never stops the others; the type only (no data)
            log.error("his view %s: poll failed: %s", spec.key, type(exc).__name__)
            results[spec.key] = "failed"
    return results


def view_states(session: Session) -> list[dict[str, Any]]:
    """What ``/admin/integration`` shows for each view: its title, state and last error."""
    states = {s.name: s for s in session.scalars(select(HisViewState)).all()}
    shown = []
    for spec in specs(session):
        state = states.get(spec.key)
        mark = decode_watermark(state.watermark) if state and state.watermark else None
        shown.append({"key": spec.key, "title": spec.title, "event_type": spec.event_type,
                      "interval": spec.interval_seconds, "state": state,
                      "error": _recorded(state.last_error) if state is not None else None,
                      "watermark": watermark_text(mark if mark is not None
                                                  else spec.watermark_start)})
    return shown


def _recorded(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if not isinstance(found, dict) or "code" not in found:
        return {"code": "source_failed", "params": {"detail": text}}
    return found


def watermark_text(value: Any) -> str:
    """How far a view was read, as a person reads it: a date-time in the HIS's own clock (one
    with an offset in the hospital's), a number or text as it is."""
    if isinstance(value, datetime):
        local = to_local(value) if value.tzinfo else value
        return local.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
