"""What one transaction reads once: pinned rows, per-transaction answers, deferred inserts.

SQLAlchemy's identity map holds rows weakly: a patient read by one step of a flow and not kept
by anyone is gone by the next step, and ``session.get`` asks the database again. A discharge run
read its patient 19 times. Within one transaction this module keeps:

- **pinned rows**: every ``Patient``, ``Encounter``, ``Department``, ``BundleRow`` (and the other
  classes :func:`pin_class` names) loaded by the session stays in the identity map until the
  transaction ends, so ``session.get`` of it costs nothing (at most :data:`PIN_LIMIT` rows a
  transaction: a report scanning a million patients keeps memory bounded);
- **answers** (:func:`remember`): a value computed from the database under a key, forgotten at
  the end of the transaction or when a flush touches one of the classes it was computed from;
- **deferred inserts** (:func:`defer`): rows nobody reads back in the transaction (flow run
  history) added in one batch just before commit: one ``INSERT`` for all of them.

Everything is dropped when the outermost transaction ends (commit or rollback), so another
process's change is seen by the next transaction, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event, insert
from sqlalchemy.orm import Session, SessionTransaction

PIN_LIMIT = 2_000

_PINNED = "careloop.txcache.pinned"
_ANSWERS = "careloop.txcache.answers"
ANSWERS_KEY = _ANSWERS  # session.info key of the answers (to ask whether one is known)
_DEFERRED = "careloop.txcache.deferred"

_PIN_CLASSES: set[type] = set()

T = TypeVar("T")


def pin_class(cls: type[T]) -> type[T]:
    """Keep rows of ``cls`` loaded in a transaction until it ends (usable as a decorator)."""
    _PIN_CLASSES.add(cls)
    return cls


@event.listens_for(Session, "loaded_as_persistent")
def _pin(session: Session, instance: object) -> None:
    if type(instance) in _PIN_CLASSES:
        pinned: list[object] = session.info.setdefault(_PINNED, [])
        if len(pinned) < PIN_LIMIT:
            pinned.append(instance)


def remember(session: Session, key: tuple[Any, ...], compute: Callable[[], T],
             depends_on: tuple[type, ...] = ()) -> T:
    """``compute()`` once per transaction for ``key``; forgotten when a flush of this session
    adds, changes or deletes a row of a class in ``depends_on``."""
    answers: dict[tuple[Any, ...], tuple[Any, tuple[type, ...]]] = \
        session.info.setdefault(_ANSWERS, {})
    found = answers.get(key)
    if found is not None and depends_on and _pending(session, depends_on):
        found = None  # a row it depends on is being changed and not yet flushed
    if found is not None:
        value: T = found[0]
        return value
    value = compute()
    answers[key] = (value, depends_on)
    return value


def _pending(session: Session, classes: tuple[type, ...]) -> bool:
    return any(isinstance(obj, classes)
               for obj in (*session.new, *session.dirty, *session.deleted))


def forget(session: Session, *classes: type) -> None:
    """Drop the answers computed from ``classes`` (all answers when none is named)."""
    answers: dict[tuple[Any, ...], tuple[Any, tuple[type, ...]]] | None = \
        session.info.get(_ANSWERS)
    if not answers:
        return
    if not classes:
        answers.clear()
        return
    for key in [k for k, (_, deps) in answers.items() if set(deps) & set(classes)]:
        del answers[key]


@event.listens_for(Session, "before_flush")
def _forget_changed(session: Session, flush_context: Any, instances: Any) -> None:
    if session.info.get(_ANSWERS):
        changed = {type(obj) for obj in (*session.new, *session.dirty, *session.deleted)}
        if changed:
            forget(session, *changed)


class Later:
    """A value known only once ``obj`` is flushed (its database id): a deferred row (or a dict
    value of it) may hold one; it is read when the deferred rows are inserted, after a flush.
    A step then needs no flush of its own to name the message or task it wrote."""

    __slots__ = ("attr", "obj")

    def __init__(self, obj: object, attr: str = "id") -> None:
        self.obj, self.attr = obj, attr

    def value(self) -> Any:
        return getattr(self.obj, self.attr)


def _has_later(values: dict[str, Any]) -> bool:
    return any(isinstance(v, Later) or (isinstance(v, dict) and any(
        isinstance(w, Later) for w in v.values())) for v in values.values())


def _resolved(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Later):
            value = value.value()
        elif isinstance(value, dict) and any(isinstance(w, Later) for w in value.values()):
            value = {k: (w.value() if isinstance(w, Later) else w) for k, w in value.items()}
        out[name] = value
    return out


def defer(session: Session, table: Any, values: dict[str, Any]) -> None:
    """Insert ``values`` into ``table`` (a mapped class) just before the transaction commits,
    with every other deferred row of the table in one ``INSERT`` (an executemany)."""
    session.info.setdefault(_DEFERRED, []).append((table, values))


def at_commit(session: Session, action: Callable[[Session, list[Any]], None],
              item: Any) -> None:
    """Call ``action(session, items)`` once just before the transaction commits (after the
    deferred inserts) with every ``item`` deferred for the same action: one ``UPDATE … IN``
    for many rows instead of one each."""
    session.info.setdefault(_DEFERRED, []).append((action, item))


def deferred_mark(session: Session) -> int:
    """A mark to roll deferred rows back to (:func:`drop_deferred_since`) when a savepoint
    they were added in is rolled back."""
    return len(session.info.get(_DEFERRED, ()))


def drop_deferred_since(session: Session, mark: int) -> None:
    deferred: list[object] | None = session.info.get(_DEFERRED)
    if deferred is not None:
        del deferred[mark:]


def flush_deferred(session: Session) -> None:
    """Insert the deferred rows now (before a query that must see them)."""
    deferred: list[tuple[Any, dict[str, Any]]] | None = session.info.pop(_DEFERRED, None)
    if not deferred:
        return
    by_table: dict[Any, list[dict[str, Any]]] = {}
    calls: dict[Callable[[Session, list[Any]], None], list[Any]] = {}
    for target, value in deferred:
        if isinstance(target, type):
            by_table.setdefault(target, []).append(value)
        else:
            calls.setdefault(target, []).append(value)
    if by_table:
        if any(_has_later(row) for rows in by_table.values() for row in rows):
            session.flush()  # the rows a Later names get their ids
            by_table = {table: [_resolved(row) for row in rows]
                        for table, rows in by_table.items()}
        connection = session.connection()
        for table, rows in by_table.items():
            # Core, not the ORM's bulk insert (which sends a statement per row here): one
            # executemany per table
            connection.execute(insert(table.__table__), rows)
    for action, items in calls.items():
        action(session, items)


@event.listens_for(Session, "before_commit")
def _add_deferred(session: Session) -> None:
    # before_commit fires for a savepoint's release too; the rows wait for the outer commit
    if session.info.get(_DEFERRED) and not session.in_nested_transaction():
        flush_deferred(session)


@event.listens_for(Session, "after_transaction_end")
def _forget_all(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        for name in (_PINNED, _ANSWERS, _DEFERRED):
            session.info.pop(name, None)
