"""The ``encounters`` source (discharges): 30-day readmission rate and follow-up coverage, per
department, equal to hand computation on SQLite and PostgreSQL; scope and date filters apply."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from careloop.reports.compiler import dataset_from_body
from careloop.reports.query import Filters, run_dataset
from careloop.reports.tables import table

BODY = {"source": "encounters", "dimensions": ["department"],
        "measures": [{"key": "discharges", "type": "count"},
                     {"key": "readmitted", "type": "readmission_rate"},
                     {"key": "readmitted_7d", "type": "readmission_rate", "days": 7},
                     {"key": "covered", "type": "followup_coverage"}]}
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


class Hospital:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.n = engine, 0
        with engine.begin() as conn:
            for dept in ("card", "ortho"):
                conn.execute(insert(table("departments")).values(
                    id=dept, name={"zh-CN": dept, "en": dept}, kind="department", active=True))

    def patient(self) -> str:
        self.n += 1
        pid = f"p{self.n}"
        with self.engine.begin() as conn:
            conn.execute(insert(table("patients")).values(
                id=pid, mrn=f"m{self.n}", name="x", locale="zh-CN", attributes={}, consents={},
                created_at=T0, updated_at=T0))
        return pid

    def stay(self, pid: str, dept: str, admitted: datetime, days: int | None,
             kind: str = "inpatient") -> str:
        self.n += 1
        eid = f"e{self.n}"
        discharged = admitted + timedelta(days=days) if days is not None else None
        with self.engine.begin() as conn:
            conn.execute(insert(table("encounters")).values(
                id=eid, patient_id=pid, type=kind, department_id=dept,
                status="discharged" if discharged else "admitted", admitted_at=admitted,
                discharged_at=discharged, diagnoses={}, procedures={}, created_at=admitted))
        return eid

    def form_sent(self, pid: str, eid: str, at: datetime) -> None:
        self.n += 1
        with self.engine.begin() as conn:
            conn.execute(insert(table("form_requests")).values(
                id=f"r{self.n}", token_hash=f"h{self.n}", form_key="f", patient_id=pid,
                encounter_id=eid, channel="sms", status="sent", sent_at=at,
                expires_at=at + timedelta(days=7), created_at=at))

    def call_done(self, pid: str, eid: str, at: datetime, status: str = "done") -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(table("tasks")).values(
                title="call", kind="phone_followup", patient_id=pid, encounter_id=eid,
                priority="normal", status=status, escalation={}, details={}, created_at=at,
                completed_at=at if status == "done" else None))


def _rows(engine: Engine, **kw: Any) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        result = run_dataset(conn, dataset_from_body("t", BODY), **kw)
    return {r["department"]: r for r in result.rows}


def test_readmission_and_coverage_by_hand(engine: Engine) -> None:
    h = Hospital(engine)
    # cardiology: 4 inpatient discharges
    a = h.patient()
    e1 = h.stay(a, "card", T0, 5)                                   # readmitted on day 6
    h.stay(a, "card", T0 + timedelta(days=11), 3)                   # … this stay: not again
    b = h.patient()
    e3 = h.stay(b, "card", T0, 2)                                   # readmitted on day 20
    h.stay(b, "ortho", T0 + timedelta(days=22), 4)                  # (an ortho stay)
    c = h.patient()
    h.stay(c, "card", T0, 1)                                        # outpatient visit after:
    h.stay(c, "card", T0 + timedelta(days=3), 0, kind="outpatient")  # not a readmission
    d = h.patient()
    h.stay(d, "card", T0, None)                                      # still in hospital: skipped
    # follow-up: e1 got a questionnaire on day 2 after discharge, e3 a call on day 40 (too late)
    h.form_sent(a, e1, T0 + timedelta(days=7))
    h.call_done(b, e3, T0 + timedelta(days=42))
    rows = _rows(engine, scope=None)
    card, ortho = rows["card"], rows["ortho"]
    assert card["discharges"] == 5          # 4 inpatient + 1 outpatient
    assert card["readmitted"] == 50.0       # 2 of 4 inpatient discharges
    assert card["readmitted_7d"] == 25.0    # only the day-6 return
    assert card["covered"] == 20.0          # 1 of 5 discharges followed up within 30 days
    assert ortho["discharges"] == 1 and ortho["readmitted"] == 0.0 and ortho["covered"] == 0.0


def test_an_open_task_or_a_message_before_discharge_is_no_coverage(engine: Engine) -> None:
    h = Hospital(engine)
    a = h.patient()
    e1 = h.stay(a, "card", T0, 5)
    h.form_sent(a, e1, T0 + timedelta(days=2))                      # during the stay
    h.call_done(a, e1, T0 + timedelta(days=8), status="open")       # not done
    assert _rows(engine, scope=None)["card"]["covered"] == 0.0
    h.call_done(a, e1, T0 + timedelta(days=9))
    assert _rows(engine, scope=None)["card"]["covered"] == 100.0


def test_scope_and_dates_filter_discharges(engine: Engine) -> None:
    h = Hospital(engine)
    a = h.patient()
    h.stay(a, "card", T0, 5)
    h.stay(a, "ortho", T0 + timedelta(days=40), 5)
    assert set(_rows(engine, scope=frozenset({"ortho"}))) == {"ortho"}
    march = Filters(date_from=date(2026, 3, 1), date_to=date(2026, 3, 31))
    assert set(_rows(engine, scope=None, filters=march)) == {"card"}
