"""What the pages' CPU cuts keep the same (issue 18): the template's shortcut for dict rows,
the remembered ``<time>`` tags and the readings of several types read in one statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.models import DomainEventRow
from careloop.web import patient360
from careloop.web.display import time_tag
from careloop.web.render import environment

from ..statements import counted


def test_dict_rows_read_as_jinja_always_read_them() -> None:
    page = environment().from_string(
        "{{ row.title }}|{{ row.missing is undefined }}|{{ row.items is callable }}|"
        "{{ row.get('title') }}|{{ other.title }}")
    row = {"title": "<随访>", "items": "a key that is also a dict method"}

    class Other:
        title = "attr"
    assert page.render(row=row, other=Other()) == "&lt;随访&gt;|True|True|&lt;随访&gt;|attr"


def test_time_tags_are_the_hospital_time(monkeypatch: pytest.MonkeyPatch) -> None:
    at = datetime(2026, 12, 4, 1, 31, tzinfo=UTC)
    expected = '<time datetime="2026-12-04T09:31:00+08:00">2026-12-04 09:31</time>'
    assert time_tag(at) == time_tag(at.isoformat()) == expected
    assert time_tag(None) == time_tag("") == time_tag("not a time") == ""
    assert time_tag(datetime(2026, 12, 4, 1, 31)) == ""  # naive: never a guess
    monkeypatch.setenv("CARELOOP_TIMEZONE", "Europe/London")  # remembered per time zone
    assert time_tag(at) == '<time datetime="2026-12-04T01:31:00+00:00">2026-12-04 01:31</time>'


def test_readings_of_several_types_in_one_statement(engine: Engine,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patient360, "READINGS_PER_TYPE", 3)
    start = now_utc() - timedelta(days=30)
    with transaction(engine) as session:
        for n in range(5):
            for kind, value in (("glucose", {"value": 5 + n}), ("weight", {"value": 60 + n})):
                session.add(DomainEventRow(
                    event_id=f"r-{kind}-{n}", type="reading.recorded", source="his",
                    occurred_at=start + timedelta(days=n), patient_id="p1",
                    payload={"patient_id": "p1", "type": kind, "value": value}))
        session.add(DomainEventRow(
            event_id="r-other", type="reading.recorded", source="his", occurred_at=start,
            patient_id="p2", payload={"patient_id": "p2", "type": "glucose", "value": {}}))
    with transaction(engine) as session:
        with counted(engine) as counter:
            found = patient360.readings_by_type(session, "p1", ("glucose", "weight", "spo2"))
        one = patient360.readings(session, "p1", "weight")
    assert len(counter.statements) == 1, counter.statements
    # the first three of each type, oldest first, as one statement per type read them
    assert [r["value"]["value"] for r in found["glucose"]] == [5, 6, 7]
    assert [r["value"]["value"] for r in found["weight"]] == [60, 61, 62] == [
        r["value"]["value"] for r in one]
    assert found["spo2"] == []
