"""The same HIS event id sent again: identical (the original acknowledgement) or not (409 naming
the differing JSON paths).

What an accepted event looked like is kept as one hash per field path, salted with the event id
(``his_event_fingerprints``): a re-sent name or phone is compared without the value being kept
(the event log leaves personal fields out).

    >>> paths_differ({"type": "encounter.discharged", "payload": {"a": 1, "b": [1]}},
    ...              {"type": "encounter.discharged", "payload": {"a": 2, "b": [1], "c": 3}})
    ['$.payload.a', '$.payload.c']
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from careloop.engine.check import canonical_json
from careloop.engine.clock import now_utc
from careloop.engine.models import DomainEventRow
from careloop.flows.models import HisEventFingerprint

# The parts of an event that make its body (its id is the key, not the body).
BODY = ("type", "occurred_at", "corrects", "payload")


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(path, value)`` of every leaf; a list is one value (``diagnoses`` as a whole)."""
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _leaves(value[key], f"{path}.{key}")
    else:
        yield path, value


def fields(event: dict[str, Any]) -> dict[str, Any]:
    """An event's body by JSON path: ``{"$.payload.discharged_at": "…", …}``."""
    return {path: value for name in BODY if name in event
            for path, value in _leaves(event[name], f"$.{name}")}


def fingerprint(event: dict[str, Any]) -> dict[str, str]:
    """One hash per field path, salted with the event id (a value is never kept, only whether
    a re-send has the same one)."""
    return {path: hashlib.sha256(f"{event['event_id']}\0{path}\0{canonical_json(value)}"
                                 .encode()).hexdigest()[:32]
            for path, value in fields(event).items()}


_ABSENT = object()


def _compare(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    return sorted(path for path in set(first) | set(second)
                  if first.get(path, _ABSENT) != second.get(path, _ABSENT))


def paths_differ(original: dict[str, Any], event: dict[str, Any]) -> list[str]:
    """The paths where two event bodies differ (present in one only, or another value)."""
    return _compare(fields(original), fields(event))


# Built once: a fingerprint's insert (Core: no unit of work for a row never changed).
_INSERT = insert(HisEventFingerprint.__table__)  # type: ignore[arg-type]


def remember(session: Session, event: dict[str, Any]) -> None:
    """Keep the fingerprint of an accepted event (one ``INSERT``, at once)."""
    session.connection().execute(_INSERT, {"event_id": event["event_id"],
                                           "fingerprint": fingerprint(event),
                                           "received_at": now_utc()})


def remember_many(session: Session, events: list[dict[str, Any]]) -> None:
    """:func:`remember` for a batch of accepted events (one multi-row insert)."""
    received = now_utc()
    session.add_all([HisEventFingerprint(event_id=event["event_id"],
                                         fingerprint=fingerprint(event), received_at=received)
                     for event in events])
    session.flush()


_UNREAD: Any = object()


def differing(session: Session, existing: DomainEventRow, event: dict[str, Any],
              logged_payload: dict[str, Any], kept: Any = _UNREAD) -> list[str]:
    """The paths where ``event`` differs from the accepted one of the same id. One accepted
    before fingerprints were kept is compared on what the event log holds (``logged_payload``:
    the re-sent payload as the log would keep it; personal fields are not compared then).
    ``kept``: the stored fingerprint when the caller read it already (None: there is none)."""
    if kept is _UNREAD:
        row = session.get(HisEventFingerprint, existing.event_id)
        kept = row.fingerprint if row is not None else None
    if kept is not None:
        return _compare(dict(kept), fingerprint(event))
    return paths_differ({"type": existing.type, "payload": existing.payload},
                        {"type": event["type"], "payload": logged_payload})


def conflict_body(event_id: str, paths: list[str]) -> dict[str, Any]:
    """The 409 answer: every differing path, never a value."""
    hint = (f"event {event_id!r} was received with another value here; nothing was changed. "
            f"To correct it, send a new event_id with \"corrects\": {event_id!r}")
    return {"status": "conflict", "event_id": event_id, "differing": paths,
            "errors": [{"path": path, "message": hint} for path in paths]}
