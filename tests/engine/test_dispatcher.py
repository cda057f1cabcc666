"""The event queue: stored before acknowledged, handled exactly once, in order per patient,
a failing event isolated (retried with backoff, then parked for IT), a dead worker's claim
taken over; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from careloop.engine import dispatcher, events
from careloop.engine.clock import frozen_now, now_utc
from careloop.engine.db import transaction
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry

Probe = Callable[[Callable[[DomainEventRow], None]], None]


@pytest.fixture
def probe() -> Iterator[Probe]:
    """Register a handler (an event handler like any extension's) for the test's duration."""
    handlers = loaded_registry().catalogue("event_handler")

    def install(fn: Callable[[DomainEventRow], None]) -> None:
        handlers.register("test_queue_probe", lambda _session, event: fn(event), replace=True)

    yield install
    if "test_queue_probe" in handlers:
        handlers.unregister("test_queue_probe")


def store(engine: Engine, *items: tuple[str, str | None]) -> list[int]:
    """Store deferred events ``(event id, patient id)`` as the events API does."""
    ids = []
    with transaction(engine) as session:
        for event_id, patient in items:
            payload: dict[str, Any] = {"patient_id": patient} if patient else {}
            row, _ = events.record(session, "test.queued", payload, event_id=event_id,
                                   defer=True)
            ids.append(row.id)
    return ids


def states(engine: Engine) -> dict[str, str]:
    with transaction(engine) as session:
        return dict(session.execute(select(DomainEventRow.event_id, DomainEventRow.state)).all())


def test_deferred_events_wait_and_drain_handles_each_once(engine: Engine, probe: Probe) -> None:
    seen: list[str] = []
    probe(lambda event: seen.append(event.event_id))
    store(engine, ("a1", "P1"), ("b1", "P2"), ("none", None))
    assert seen == [] and set(states(engine).values()) == {"pending"}

    report = dispatcher.drain(engine)
    again = dispatcher.drain(engine)

    assert report.handled == 3 and again.handled == 0
    assert sorted(seen) == ["a1", "b1", "none"]
    assert set(states(engine).values()) == {"handled"}


def test_one_event_per_patient_is_claimed_until_the_earlier_one_is_handled(
        engine: Engine) -> None:
    a1, a2, b1 = store(engine, ("a1", "P1"), ("a2", "P1"), ("b1", "P2"))
    now = now_utc()

    first = dispatcher.claim(engine, "w1", now)
    other = dispatcher.claim(engine, "w2", now)  # P1's a2 waits for a1, which w1 holds

    assert first == [a1, b1] and other == []
    assert dispatcher.handle(engine, a1, "w1") is True
    assert dispatcher.claim(engine, "w2", now) == [a2]


def test_an_inline_event_of_a_patient_with_pending_events_queues_behind_them(
        engine: Engine, probe: Probe) -> None:
    seen: list[str] = []
    probe(lambda event: seen.append(event.event_id))
    store(engine, ("queued", "P1"))
    with transaction(engine) as session:
        events.record(session, "test.inline", {"patient_id": "P1"}, event_id="inline")
        events.record(session, "test.inline", {"patient_id": "P2"}, event_id="other")

    assert seen == ["other"]  # P2 has nothing waiting: handled at once, as before
    dispatcher.drain(engine)
    assert seen == ["other", "queued", "inline"]


def test_a_failing_event_is_retried_then_parked_and_stops_holding_its_patient(
        engine: Engine, probe: Probe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_EVENT_ATTEMPTS", "2")
    seen: list[str] = []

    def handler(event: DomainEventRow) -> None:
        if event.event_id == "bad":
            raise RuntimeError("handler bug")
        seen.append(event.event_id)

    probe(handler)
    bad, _after, _b = store(engine, ("bad", "P1"), ("after", "P1"), ("b", "P2"))

    first = dispatcher.drain(engine)
    with transaction(engine) as session:
        row = session.get(DomainEventRow, bad)
        assert row is not None
        waiting_until, attempts, error = row.available_at, row.attempts, row.last_error
    assert first.failed == 1 and seen == ["b"]  # P2 went on; P1's next event waits in order
    assert attempts == 1 and error == "RuntimeError" and waiting_until is not None
    assert dispatcher.drain(engine).failed == 0  # the retry is not due yet

    assert waiting_until is not None
    with frozen_now(waiting_until + timedelta(seconds=1)):
        second = dispatcher.drain(engine)
    assert second.failed == 1 and seen == ["b", "after"]
    assert states(engine)["bad"] == "parked"
    assert [e.event_id for e in dispatcher.parked(engine)] == ["bad"]
    assert dispatcher.state(engine).parked == 1

    probe(lambda event: seen.append(event.event_id))  # the bug fixed: IT retries it
    assert dispatcher.retry_parked(engine, bad) and not dispatcher.retry_parked(engine, bad)
    dispatcher.drain(engine)
    assert seen[-1] == "bad" and states(engine)["bad"] == "handled"


def test_a_dead_workers_claim_expires_and_the_event_is_handled_once(
        engine: Engine, probe: Probe) -> None:
    seen: list[str] = []
    probe(lambda event: seen.append(event.event_id))
    (only,) = store(engine, ("e", "P1"))
    assert dispatcher.claim(engine, "killed", now_utc()) == [only]  # then kill -9: no commit

    assert dispatcher.drain(engine).handled == 0  # still claimed
    with frozen_now(now_utc() + timedelta(seconds=dispatcher.CLAIM_SECONDS + 1)):
        assert dispatcher.drain(engine).handled == 1
    assert dispatcher.handle(engine, only, "killed") is None  # the old claim handles nothing
    assert seen == ["e"]


def test_concurrent_dispatchers_handle_each_event_once_in_order_per_patient(
        engine: Engine, probe: Probe) -> None:
    order: list[tuple[str, int]] = []
    lock = threading.Lock()

    def handler(event: DomainEventRow) -> None:
        with lock:
            order.append((str(event.patient_id), int(event.event_id.split("-")[1])))

    probe(handler)
    store(engine, *[(f"{p}-{i}", p) for i in range(8) for p in ("P1", "P2", "P3", "P4")])
    workers = [threading.Thread(target=dispatcher.drain, args=(engine,),
                                kwargs={"batch": 3}) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    dispatcher.drain(engine)  # what a thread left when its last claim came up empty

    assert len(order) == 32 and len(set(order)) == 32
    for patient in ("P1", "P2", "P3", "P4"):
        assert [i for p, i in order if p == patient] == list(range(8))
