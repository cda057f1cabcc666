"""The event dispatcher's round trips per event drained (issue 18): counted, not timed.

HIS events queued by the events API (``ingest(defer=True)``) are drained with the shipped
bundles installed; every SQL statement sent during ``drain()`` is counted with SQLAlchemy's
``before_cursor_execute`` event. A group of events shares one transaction: the claim that marks
them handled and loads them, the current definitions' check, the bundles; what remains per event
is its handlers' own work (the ``segments`` rule set tags the patient, the monthly chronic flow
checks its ``when``). And the definitions the handlers use are validated against the database:
a rule set retired or restored behind this process's back is seen by the next drain.
"""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Encounter, PatientTag
from careloop.engine.models import DefinitionRow, DomainEventRow
from careloop.flows.ingest import ingest
from careloop.flows.models import FlowRun
from careloop.rules.models import RuleEvaluation

from ..statements import counted

# Per event drained, 20 patients' ``patient.upserted``: 19.1 before event groups (a claim per
# round, then per event a transaction: the mark, the row read again, the current rule sets and
# flows read in full, the bundles, the patient's departments twice), 12.x with them, 5.45 with
# the group's reads made once (the rules prefetch: evaluations already stored, the patients,
# their tags, stays' departments and latest stay; the flow trigger's subject not read again).
LIMIT = 6


def _queue(engine: Engine, first: int, count: int) -> None:
    """``count`` patients' ``patient.upserted`` events, stored as the events API stores them."""
    with transaction(engine) as session:
        for n in range(first, first + count):
            status, body = ingest(session, {
                "event_id": f"his-{n}", "type": "patient.upserted",
                "payload": {"patient_id": f"P{n}", "mrn": f"M{n}", "name": "测试",
                            "birth_date": "1950-01-01"}}, defer=True)
            assert status == 200, body


def _pending(engine: Engine) -> int:
    with transaction(engine) as session:
        return len(session.scalars(select(DomainEventRow.id).where(
            DomainEventRow.state == "pending")).all())


def test_draining_costs_few_statements_per_event(bundles: Engine, departments: Engine) -> None:
    engine = bundles
    _queue(engine, 0, 1)
    assert drain(engine).handled == 1  # what a process reads once (compiled definitions)
    _queue(engine, 1, 20)

    with counted(engine) as counter:
        report = drain(engine)
    statements = counter.statements

    assert report.handled == 20 and report.failed == 0 and _pending(engine) == 0
    per_event = len(statements) / 20
    assert per_event <= LIMIT, f"{per_event} statements per event:\n" + "\n".join(statements)
    with transaction(engine) as session:  # the handlers ran: the segments rule set, once each
        assert len(session.scalars(select(RuleEvaluation.id)).all()) == 21


def _segments_ran(engine: Engine, event_id: str) -> bool:
    with transaction(engine) as session:
        return session.scalars(select(RuleEvaluation.id).where(
            RuleEvaluation.event_id == event_id, RuleEvaluation.ruleset_key == "segments")
        ).first() is not None


def test_a_definition_retired_or_restored_elsewhere_is_seen_by_the_next_drain(
        bundles: Engine, departments: Engine) -> None:
    engine = bundles
    _queue(engine, 0, 1)
    drain(engine)
    assert _segments_ran(engine, "his-0")

    # another process retires the rule set: this process's cached index must not be used
    with engine.begin() as conn:
        conn.execute(update(DefinitionRow).where(DefinitionRow.kind == "ruleset",
                                                 DefinitionRow.key == "segments")
                     .values(retired_at=DefinitionRow.created_at))
    _queue(engine, 1, 1)
    drain(engine)
    assert not _segments_ran(engine, "his-1")

    with engine.begin() as conn:  # and restores it
        conn.execute(update(DefinitionRow).where(DefinitionRow.kind == "ruleset",
                                                 DefinitionRow.key == "segments")
                     .values(retired_at=None))
    _queue(engine, 2, 1)
    drain(engine)
    assert _segments_ran(engine, "his-2")
    with transaction(engine) as session:
        assert session.scalars(select(PatientTag.patient_id).where(
            PatientTag.patient_id == "P2")).first() == "P2"


def test_a_group_read_at_once_answers_as_each_event_read_alone(
        bundles: Engine, departments: Engine) -> None:
    """What the group's prefetch read for every patient is what each event's handlers would
    have read themselves: the HIS's tags (the chronic-care flow starts for those on the path
    only), a stay (its diagnosis tags the first hypertension visit), and the tags one event's
    rule set added are not taken for another patient's."""
    engine = bundles
    _queue(engine, 0, 1)
    drain(engine)
    with transaction(engine) as session:
        for n in range(1, 7):
            status, body = ingest(session, {
                "event_id": f"his-{n}", "type": "patient.upserted",
                "payload": {"patient_id": f"P{n}", "mrn": f"M{n}", "name": "测试",
                            "birth_date": "1950-01-01" if n % 2 else "2000-01-01",
                            **({"tags": ["chronic_path"]} if n in (2, 5) else {})}},
                defer=True)
            assert status == 200, body
        session.flush()
        session.add(Encounter(id="E3", patient_id="P3", type="outpatient",
                              department_id="cardiology", status="discharged",
                              diagnoses={"codes": ["I10"]}))
    assert drain(engine).handled == 6

    with transaction(engine) as session:
        runs = sorted(session.scalars(select(FlowRun.patient_id).where(
            FlowRun.flow_key == "monthly_chronic")).all())
        tags = {(p, t) for p, t in session.execute(select(PatientTag.patient_id,
                                                         PatientTag.tag))}
        evaluations = session.scalars(select(RuleEvaluation.event_id).where(
            RuleEvaluation.ruleset_key == "segments")).all()
    assert runs == ["P2", "P5"]
    assert {p for p, t in tags if t == "aged_70_plus"} == {"P0", "P1", "P3", "P5"}
    assert {p for p, t in tags if t == "hypertension_first_visit"} == {"P3"}
    assert sorted(evaluations) == sorted(f"his-{n}" for n in range(7))

    # the same event again (a second delivery): stored once, evaluated once
    _queue(engine, 1, 1)
    assert drain(engine).handled == 0
