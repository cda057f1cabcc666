"""Stored definitions: versions, the current version, and compiled specs of stored rows.

A changed definition becomes a new version; earlier versions stay, because submissions, runs and
evaluations point at them by (kind, key, version). "Current" is the highest version that is not
retired.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from typing import Any, TypeVar, overload

from sqlalchemy import Engine, case, event, func, select
from sqlalchemy.orm import Session, make_transient_to_detached

from careloop.engine import txcache
from careloop.engine.check import check_documents
from careloop.engine.errors import CareloopError, DefinitionInvalid, NotFound
from careloop.engine.models import DefinitionRow
from careloop.engine.sources import load_text


def latest(session: Session, kind: str, key: str) -> DefinitionRow | None:
    """The highest version, retired or not (read once per transaction: every step of a flow
    asks for its templates)."""
    return txcache.remember(session, ("store.latest", kind, key), lambda: session.scalars(
        select(DefinitionRow).where(DefinitionRow.kind == kind, DefinitionRow.key == key)
        .order_by(DefinitionRow.version.desc()).limit(1)).first(), (DefinitionRow,))


def prefetch(session: Session, pairs: set[tuple[str, str]]) -> None:
    """The latest version of each ``(kind, key)`` not yet read in this transaction, in one
    query: :func:`latest` and :func:`current` of them then cost nothing (a flow run's start
    reads the templates and forms its steps name at once, not one query each)."""
    answers = session.info.get(txcache.ANSWERS_KEY) or {}
    wanted = {pair for pair in pairs if ("store.latest", *pair) not in answers}
    if not wanted or _definitions_changing(session):
        return
    kinds, keys = {k for k, _ in wanted}, {key for _, key in wanted}
    newest = (select(DefinitionRow.kind, DefinitionRow.key,
                     func.max(DefinitionRow.version).label("version"))
              .where(DefinitionRow.kind.in_(kinds), DefinitionRow.key.in_(keys))
              .group_by(DefinitionRow.kind, DefinitionRow.key).subquery())
    found = {(row.kind, row.key): row for row in session.scalars(
        select(DefinitionRow).join(newest, (DefinitionRow.kind == newest.c.kind)
                                   & (DefinitionRow.key == newest.c.key)
                                   & (DefinitionRow.version == newest.c.version)))}
    for pair in wanted:
        row = found.get(pair)
        txcache.remember(session, ("store.latest", *pair), lambda row=row: row,  # type: ignore[misc]
                         (DefinitionRow,))


def current(session: Session, kind: str, key: str) -> DefinitionRow | None:
    """The version in force: the latest, unless it was retired (removed from its bundle)."""
    listed: Sequence[DefinitionRow] | None = session.info.get(_CURRENT, {}).get((kind, None))
    if listed is not None and not _definitions_changing(session):
        # this transaction's list of the kind's current rows answers without a query
        for candidate in listed:
            if candidate.key == key:
                return candidate
    snapshot = _snapshot(session, kind)
    if snapshot is not None:  # the process's copy of the kind's current rows is still right
        found = snapshot.get(key)
        return session.merge(found, load=False) if found is not None else None
    row = latest(session, kind, key)
    return row if row is not None and row.retired_at is None else None


def _snapshot(session: Session, kind: str) -> dict[str, DefinitionRow] | None:
    """Detached copies of the kind's current rows kept by :func:`shared_current`, when this
    transaction already checked the fingerprint they were read under (no query of its own)."""
    mark = session.info.get(_FINGERPRINT)
    if mark is None or session.info.get(_WROTE) or _definitions_changing(session):
        return None
    engine = session.get_bind()
    if not isinstance(engine, Engine):
        return None
    with _SHARED_LOCK:
        found = _SHARED.get(engine, {}).get((kind, _ROWS))
    if found is None or found[0] != mark:
        return None
    rows: dict[str, DefinitionRow] = found[1]
    return rows


def get_version(session: Session, kind: str, key: str, version: int | None = None) -> DefinitionRow:
    """A given version, or the current one; raises :class:`NotFound`."""
    if version is None:
        row = current(session, kind, key)
    else:
        row = txcache.remember(session, ("store.version", kind, key, version),
                               lambda: session.scalars(select(DefinitionRow).where(
                                   DefinitionRow.kind == kind, DefinitionRow.key == key,
                                   DefinitionRow.version == version)).first(),
                               (DefinitionRow,))
    if row is None:
        suffix = f" version {version}" if version is not None else ""
        raise NotFound(f"no {kind} '{key}'{suffix}")
    return row


def versions(session: Session, kind: str, key: str) -> Sequence[DefinitionRow]:
    return session.scalars(select(DefinitionRow).where(
        DefinitionRow.kind == kind, DefinitionRow.key == key)
        .order_by(DefinitionRow.version)).all()


_CURRENT = "careloop.store.current"  # session.info key: list_current answers of this transaction


@event.listens_for(Session, "after_transaction_end")
def _forget_current(session: Session, transaction: Any) -> None:
    # A savepoint released inside the transaction keeps what was read (a batch's rules and
    # flows each run in one); the outer transaction's end, or any rollback, forgets it.
    if transaction.parent is None:
        for name in (_CURRENT, _FINGERPRINT, _WROTE):
            session.info.pop(name, None)


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_CURRENT, None)


def _definitions_changing(session: Session) -> bool:
    return any(isinstance(obj, DefinitionRow)
               for obj in (*session.new, *session.dirty, *session.deleted))


@event.listens_for(Session, "before_flush")
def _forget_on_change(session: Session, flush_context: Any, instances: Any) -> None:
    if _definitions_changing(session):
        session.info.pop(_CURRENT, None)
        session.info.pop(_FINGERPRINT, None)
        session.info[_WROTE] = True  # until the transaction ends: see shared_current


def list_current(session: Session, kind: str | None = None,
                 app_id: str | None = None) -> Sequence[DefinitionRow]:
    """The current version of every definition (optionally of one kind or app).

    Remembered for the rest of the transaction (an HIS batch of 500 patients asks once per
    kind, not once per event): forgotten when the transaction ends or when this session adds or
    changes a definition row. Another process's publication is seen by the next transaction."""
    if _definitions_changing(session):
        session.info.pop(_CURRENT, None)
    else:
        remembered: Sequence[DefinitionRow] | None = \
            session.info.get(_CURRENT, {}).get((kind, app_id))
        if remembered is not None:
            return remembered
    rows = _query_current(session, kind, app_id)
    session.info.setdefault(_CURRENT, {})[(kind, app_id)] = rows
    return rows


# --- what is derived from the current definitions, shared by the process's transactions -----

_FINGERPRINT = "careloop.store.fingerprint"  # session.info: this transaction's fingerprint
_WROTE = "careloop.store.wrote"  # session.info: this transaction flushed a definition row

T = TypeVar("T")

# (engine, kind, name) -> (fingerprint, value): derived data only (a value is rebuilt whenever
# the database's fingerprint differs), never state another process needs.
_SHARED: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str], tuple[tuple[Any, ...], Any]]] \
    = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def fingerprint(session: Session) -> tuple[Any, ...]:
    """What changes whenever any process adds, retires or restores a definition version (rows
    are never changed otherwise): the row count, the highest id, the sum of the ids in force,
    the latest creation and retirement, the least and greatest content hash — one aggregate
    row, read once per transaction (the definitions table holds hundreds of rows, not more)."""
    found: tuple[Any, ...] | None = session.info.get(_FINGERPRINT)
    if found is None:
        found = tuple(session.execute(_fingerprint_query()).one())
        session.info[_FINGERPRINT] = found
    return found


@cache
def _fingerprint_query() -> Any:
    """:func:`fingerprint`'s statement, built once (it was a tenth of a dispatched group's CPU)."""
    return select(
        func.count(), func.max(DefinitionRow.id),
        func.sum(case((DefinitionRow.retired_at.is_(None), DefinitionRow.id), else_=0)),
        func.max(DefinitionRow.created_at), func.max(DefinitionRow.retired_at),
        func.min(DefinitionRow.content_hash), func.max(DefinitionRow.content_hash))


def shared_current(session: Session, kind: str, name: str,
                   build: Callable[[Sequence[DefinitionRow]], T]) -> T:
    """``build(list_current(session, kind))``, computed once per process and database while the
    definitions' :func:`fingerprint` stays the same: a transaction then pays one aggregate
    query instead of reading and loading every current row (the event dispatcher asks per
    event group). Another process's publication changes the fingerprint, so it is seen by the
    next transaction, as with :func:`list_current`.

    ``build`` must return plain data (specs, keys, versions, app ids) — never the rows, which
    belong to this session. A transaction that writes definitions builds its own answer."""
    if session.info.get(_WROTE) or _definitions_changing(session):
        return build(list_current(session, kind))
    engine = session.get_bind()
    if not isinstance(engine, Engine):  # bound to a connection: nothing to share it with
        return build(list_current(session, kind))
    mark = fingerprint(session)
    with _SHARED_LOCK:
        found = _SHARED.get(engine, {}).get((kind, name))
    if found is not None and found[0] == mark:
        value: T = found[1]
        return value
    rows = list_current(session, kind)
    value = build(rows)
    with _SHARED_LOCK:
        shared = _SHARED.setdefault(engine, {})
        shared[(kind, name)] = (mark, value)
        if shared.get((kind, _ROWS), (None,))[0] != mark:
            shared[(kind, _ROWS)] = (mark, {row.key: _detached(row) for row in rows})
    return value


_ROWS = "careloop.store.rows"  # _SHARED name of a kind's detached current rows


def shared_rows(session: Session, kinds: set[str]) -> bool:
    """Make :func:`current` answer each of ``kinds`` from the process's detached copy of its
    current rows (read once per process and definitions fingerprint): True when it then does
    for all of them without a query; False (nothing read) when this transaction writes
    definitions or is bound to a connection — :func:`prefetch` is the way then."""
    if session.info.get(_WROTE) or _definitions_changing(session) \
            or not isinstance(session.get_bind(), Engine):
        return False
    for kind in kinds:
        shared_current(session, kind, "rows kept", lambda rows: None)
    return all(_snapshot(session, kind) is not None for kind in kinds)


def _detached(row: DefinitionRow) -> DefinitionRow:
    """A copy of ``row`` in no session: :func:`current` merges it (``load=False``, no query)
    into a session that asks for it; rows are never changed but for ``retired_at``."""
    copy = DefinitionRow(**{column.key: getattr(row, column.key)
                            for column in DefinitionRow.__mapper__.column_attrs})
    make_transient_to_detached(copy)
    return copy


def _query_current(session: Session, kind: str | None,
                   app_id: str | None) -> Sequence[DefinitionRow]:
    newest = (select(DefinitionRow.kind, DefinitionRow.key,
                     func.max(DefinitionRow.version).label("version"))
              .group_by(DefinitionRow.kind, DefinitionRow.key).subquery())
    query = (select(DefinitionRow)
             .join(newest, (DefinitionRow.kind == newest.c.kind)
                   & (DefinitionRow.key == newest.c.key)
                   & (DefinitionRow.version == newest.c.version))
             .where(DefinitionRow.retired_at.is_(None)))
    if kind is not None:
        query = query.where(DefinitionRow.kind == kind)
    if app_id is not None:
        query = query.where(DefinitionRow.app_id == app_id)
    return session.scalars(query.order_by(DefinitionRow.kind, DefinitionRow.key)).all()


@lru_cache(maxsize=512)
def _compile_cached(kind: str, key: str, version: int, content_hash: str,
                    source_path: str, source_text: str) -> Any:
    # Keyed by content hash: a row's text never changes, so this cache never goes stale and is
    # safe to hold per process (it is derived data, not state another process needs).
    doc = load_text(source_text, f"{kind}/{key}@v{version}:{source_path}")
    # References were resolved when the version was imported; here they are taken as present.
    result = check_documents([doc], external=lambda _kind, _key: {"stored": True})
    if not result.ok or (kind, key) not in result.specs:
        raise DefinitionInvalid(result.errors, f"stored {kind} '{key}' v{version} does not compile")
    return result.specs[(kind, key)]


SpecT = TypeVar("SpecT")


class SpecMismatch(CareloopError):
    """A stored row compiled to another spec type than the caller asked for (a kind mix-up)."""


@overload
def compile_row(row: DefinitionRow) -> object: ...


@overload
def compile_row(row: DefinitionRow, spec_type: type[SpecT]) -> SpecT: ...


def compile_row(row: DefinitionRow, spec_type: type[Any] | None = None) -> object:
    """The frozen spec of a stored definition version.

    With ``spec_type`` the result is checked and typed: ``compile_row(row, FormSpec)`` is a
    ``FormSpec`` or raises :class:`SpecMismatch` naming the row (never a wrong spec used
    silently). Without it the spec is an ``object`` the caller must narrow.
    """
    spec: object = _compile_cached(row.kind, row.key, row.version, row.content_hash,
                                   row.source_path, row.source_text)
    if spec_type is not None and not isinstance(spec, spec_type):
        raise SpecMismatch(f"stored {row.kind} '{row.key}' v{row.version} compiles to "
                           f"{type(spec).__name__}, not {spec_type.__name__}")
    return spec
