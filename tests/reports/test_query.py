"""Datasets compile to one SQL query whose results equal hand-written SQL and hand computation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from careloop.reports.compiler import dataset_from_body
from careloop.reports.query import Filters, build_query, run_dataset

AT = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)

NPS_BODY = {"source": "submissions", "forms": ["inpatient_satisfaction"],
            "dimensions": ["department"],
            "measures": [{"key": "nps", "type": "nps", "field": "nps"},
                         {"key": "responses", "type": "count"}]}


def test_nps_on_the_known_vectors(engine: Engine, seed: Any) -> None:
    for v in [10, 9, 8, 7, 6, 0]:
        seed.submit("a", {"nps": v}, at=AT)
    for v in [10, 10, 9, 9, 9, 8, 7, 6, 5, 0]:
        seed.submit("b", {"nps": v}, at=AT)
    seed.submit("c", {"overall": 5}, at=AT)  # answered, but not the NPS question
    with engine.connect() as conn:
        result = run_dataset(conn, dataset_from_body("t", NPS_BODY), scope=None)
    assert {r["department"]: r["nps"] for r in result.rows} == {"a": 0.0, "b": 20.0, "c": None}
    assert [r["responses"] for r in result.rows] == [6, 10, 1]


def test_min_sample_gives_none_never_zero(engine: Engine, seed: Any) -> None:
    for v in [10, 9, 8, 7, 6, 0]:
        seed.submit("a", {"nps": v}, at=AT)
    body = {**NPS_BODY, "measures": [{"key": "nps", "type": "nps", "field": "nps",
                                      "min_sample": 7}]}
    with engine.connect() as conn:
        rows = run_dataset(conn, dataset_from_body("t", body), scope=None).rows
    assert rows == [{"department": "a", "nps": None}]


def _seed_mixed(seed: Any) -> None:
    values = [(d, o, n) for d in ("card", "ortho", "obst") for o, n in
              ((5, 10), (4, 9), (2, 3), (3, 7), (1, 0))]
    for i, (dept, overall, nps) in enumerate(values):
        seed.submit(dept, {"overall": overall - (i % 2 if overall > 1 else 0), "nps": nps,
                           "touchpoints": {"food": (i % 5) + 1, "nursing": 5 - i % 3}},
                    at=datetime(2026, 1 + i % 3, 1 + i, 18, tzinfo=UTC), doctor=100 + i % 4)


HAND_SQL = """
SELECT s.department_id,
       COUNT(DISTINCT s.id),
       AVG(CASE WHEN a.field_key = 'overall' THEN a.value_number END),
       100.0 * SUM(CASE WHEN a.field_key = 'overall' AND a.value_number >= 4 THEN 1 ELSE 0 END)
         / COUNT(CASE WHEN a.field_key = 'overall' THEN 1 END),
       MAX(CASE WHEN a.field_key = 'nps' THEN a.value_number END)
FROM submissions s JOIN submission_answers a ON a.submission_id = s.id
GROUP BY s.department_id ORDER BY s.department_id
"""


def test_dataset_equals_hand_written_sql(engine: Engine, seed: Any) -> None:
    _seed_mixed(seed)
    body = {"source": "submissions", "dimensions": ["department"],
            "measures": [{"key": "n", "type": "count"},
                         {"key": "avg", "type": "avg", "field": "overall"},
                         {"key": "csat", "type": "csat", "field": "overall"},
                         {"key": "max_nps", "type": "max", "field": "nps"}]}
    with engine.connect() as conn:
        got = [tuple(r.values()) for r in run_dataset(conn, dataset_from_body("t", body),
                                                      scope=None).rows]
        want = [tuple(r) for r in conn.execute(text(HAND_SQL))]
    assert len(got) == 3
    for g, w in zip(got, want, strict=True):
        assert g[:2] == tuple(w[:2])
        assert g[2:] == pytest.approx(tuple(float(x) for x in w[2:]))


def test_touchpoint_csat_per_question(engine: Engine, seed: Any) -> None:
    _seed_mixed(seed)
    body = {"source": "submissions", "dimensions": ["question"],
            "measures": [{"key": "csat", "type": "csat", "field": "touchpoints"}]}
    with engine.connect() as conn:
        rows = run_dataset(conn, dataset_from_body("t", body), scope=None).rows
    food = [(i % 5) + 1 for i in range(15)]
    nursing = [5 - i % 3 for i in range(15)]
    by_q = {r["question"]: r["csat"] for r in rows if r["csat"] is not None}
    assert by_q == pytest.approx({
        "touchpoints.food": 100 * sum(v >= 4 for v in food) / 15,
        "touchpoints.nursing": 100 * sum(v >= 4 for v in nursing) / 15})


@pytest.mark.parametrize(("grain", "expected"), [
    ("day", ["2026-01-01", "2026-01-02"]),
    ("week", ["2025-12-29"]),
    ("month", ["2026-01"]),
    ("quarter", ["2026-Q1"]),
    ("year", ["2026"]),
])
def test_time_buckets_are_hospital_local(engine: Engine, seed: Any, grain: str,
                                         expected: list[str]) -> None:
    # 2025-12-31 16:30 UTC is already 1 January 00:30 in Shanghai.
    seed.submit("a", {"nps": 10}, at=datetime(2025, 12, 31, 16, 30, tzinfo=UTC))
    seed.submit("a", {"nps": 10}, at=datetime(2026, 1, 2, 1, 0, tzinfo=UTC))
    body = {"source": "submissions", "dimensions": [grain],
            "measures": [{"key": "n", "type": "count"}]}
    with engine.connect() as conn:
        rows = run_dataset(conn, dataset_from_body("t", body), scope=None).rows
    assert [r[grain] for r in rows] == expected


def test_age_band_doctor_and_date_filters(engine: Engine, seed: Any) -> None:
    seed.submit("a", {"nps": 10}, at=AT, birth=date(1990, 3, 11), doctor=7)  # 35 (not yet 36)
    seed.submit("a", {"nps": 0}, at=AT, birth=date(1940, 1, 1), doctor=8)  # 86
    seed.submit("a", {"nps": 0}, at=datetime(2026, 5, 1, tzinfo=UTC), doctor=8)
    body = {"source": "submissions", "dimensions": ["age_band", "doctor"],
            "measures": [{"key": "n", "type": "count"}]}
    spec = dataset_from_body("t", body)
    with engine.connect() as conn:
        rows = run_dataset(conn, spec, scope=None,
                           filters=Filters(date_from=date(2026, 3, 1),
                                           date_to=date(2026, 3, 31))).rows
    assert rows == [{"age_band": "18-44", "doctor": 7, "n": 1},
                    {"age_band": "80+", "doctor": 8, "n": 1}]


def test_scope_is_applied_in_sql(engine: Engine, seed: Any) -> None:
    seed.submit("a", {"nps": 10}, at=AT)
    seed.submit("b", {"nps": 10}, at=AT)
    spec = dataset_from_body("t", NPS_BODY)
    with engine.connect() as conn:
        only_a = run_dataset(conn, spec, scope=frozenset({"a"})).rows
        nothing = run_dataset(conn, spec, scope=frozenset()).rows
    assert [r["department"] for r in only_a] == ["a"]
    assert nothing == []
    sql = str(build_query(spec, "sqlite", Filters(), frozenset({"a"})))
    # the row's department (own, answered, or the latest encounter's) or the encounter's ward
    assert ") IN (" in sql and "ward_id IN" in sql and "WHERE" in sql


def test_median_and_percentile_are_the_same_on_both_databases(engine: Engine, seed: Any) -> None:
    # SQLite has no percentile_cont: the report engine installs its own aggregate, which
    # interpolates the same way PostgreSQL does (before, SQLite raised at run time).
    for dept, values in (("a", (1, 2, 3, 4, 10)), ("b", (1, 2, 3, 4))):
        for v in values:
            seed.submit(dept, {"overall": v}, at=AT)
    seed.submit("b", {"other": 1}, at=AT)  # no 'overall': not a value of the median
    body = {"source": "submissions", "dimensions": ["department"],
            "measures": [{"key": "med", "type": "median", "field": "overall"},
                         {"key": "p90", "type": "percentile", "field": "overall",
                          "fraction": 0.9}]}
    with engine.connect() as conn:
        rows = run_dataset(conn, dataset_from_body("t", body), scope=None).rows
    assert [(r["department"], r["med"], round(r["p90"], 6)) for r in rows] == [
        ("a", 3.0, 7.6), ("b", 2.5, 3.7)]


def test_answer_range_and_category(engine: Engine, seed: Any) -> None:
    seed.submit("a", {"overall": 1}, at=AT, category="attitude")
    seed.submit("a", {"overall": 2}, at=AT, category="waiting")
    seed.submit("a", {"overall": 2}, at=AT, category="attitude")
    seed.submit("a", {"overall": 5}, at=AT, category="attitude")
    body = {"source": "submissions", "dimensions": ["category"],
            "answer_range": {"field": "overall", "max": 2},
            "measures": [{"key": "n", "type": "count"}]}
    with engine.connect() as conn:
        rows = run_dataset(conn, dataset_from_body("t", body), scope=None).rows
    assert rows == [{"category": "attitude", "n": 2}, {"category": "waiting", "n": 1}]
