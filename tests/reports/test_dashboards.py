"""Bundled dashboards on seeded data: numbers equal hand computation; scope holds everywhere."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.reports import views
from careloop.reports.runtime import load_spec, run_cached

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "app_definitions"
CASES = json.loads((APPS / "satisfaction/tests/reports/overview_cases.json").read_text("utf-8"))


@pytest.fixture
def bundles(engine: Engine) -> Engine:
    for app in ("common", "discharge", "cardiology", "satisfaction", "complaints"):
        import_bundle(APPS / app, engine=engine)
    return engine


def _seed(seed: Any) -> None:
    for s in CASES["submissions"]:
        month = datetime.fromisoformat(s["month"] + "-10T02:00:00+00:00")
        seed.submit(s["dept"], {"nps": s["nps"], "overall": s["overall"],
                                "comment": "护士态度很差，等待时间太长" if s["overall"] <= 2
                                else "很好"},
                    at=month, doctor=s["doctor"])


@pytest.mark.parametrize("dataset", sorted(CASES["expected"]))
def test_bundled_datasets_match_hand_computation(bundles: Engine, seed: Any,
                                                 dataset: str) -> None:
    _seed(seed)
    with transaction(bundles) as session:
        spec = load_spec(session, "dataset", dataset)
        rows = run_cached(session, spec, scope=None).rows
    assert rows == [_approx(r) for r in CASES["expected"][dataset]]


def _approx(row: dict[str, Any]) -> dict[str, Any]:
    return {k: pytest.approx(v) if isinstance(v, float) else v for k, v in row.items()}


def test_department_head_sees_only_their_department(bundles: Engine, seed: Any) -> None:
    _seed(seed)
    scope = frozenset({"card"})
    with transaction(bundles) as session:
        payload = views.dashboard_payload(session, "service_quality_overview", {}, scope,
                                          "zh-CN")
        depts = {r.get("department") for t in payload["tiles"] for r in t["data"]["rows"]}
        assert depts <= {"card", None}
        by_dept = next(t for t in payload["tiles"] if t["chart"] == "nps_by_department")
        assert [r["department"] for r in by_dept["data"]["rows"]] == ["card"]
        kpi = next(t for t in payload["tiles"] if t["chart"] == "kpi_csat")
        assert kpi["data"]["rows"][0]["responses"] == 6  # card's six, not the hospital's 17
        drilled = views.drill_payload(session, "service_quality_overview", "nps_by_department",
                                      ["*"], {}, scope)
        assert [r["department"] for r in drilled["rows"]] == ["card"]
        # asking for another department's doctors through the drill path gives nothing
        other = views.drill_payload(session, "service_quality_overview", "nps_by_department",
                                    ["*", "ortho"], {}, scope)
        assert other["rows"] == []
        responses = views.drill_payload(session, "service_quality_overview",
                                        "nps_by_department", ["*", "card", "11"], {}, scope)
        assert {r["department"] for r in responses["rows"]} == {"card"}
        assert len(responses["rows"]) == 3
        exported = views.export_tile(session, "service_quality_overview", "nps_by_department",
                                     "csv", {}, scope, "zh-CN").decode("utf-8-sig")
        xlsx = views.export_tile(session, "service_quality_overview", "nps_by_department",
                                 "xlsx", {}, scope, "zh-CN")
        hospital = views.dashboard_payload(session, "service_quality_overview", {}, None, "en")
    assert [r["科室"] for r in csv.DictReader(io.StringIO(exported))] == ["card"]
    sheet = load_workbook(io.BytesIO(xlsx)).active
    assert sheet is not None
    assert [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)] == ["card"]
    full = next(t for t in hospital["tiles"] if t["chart"] == "nps_by_department")
    assert [r["department"] for r in full["data"]["rows"]] == ["card", "obst", "ortho"]


def test_cache_is_keyed_by_scope_and_sees_new_submissions(bundles: Engine, seed: Any) -> None:
    _seed(seed)
    with transaction(bundles) as session:
        spec = load_spec(session, "dataset", "satisfaction_kpis")
        assert run_cached(session, spec, scope=None).rows[0]["responses"] == 17
        assert run_cached(session, spec, scope=frozenset({"obst"})).rows[0]["responses"] == 1
    seed.submit("obst", {"nps": 10, "overall": 5}, at=datetime(2026, 2, 11, tzinfo=UTC))
    with transaction(bundles) as session:
        assert run_cached(session, spec, scope=frozenset({"obst"})).rows[0]["responses"] == 2
        assert run_cached(session, spec, scope=None).rows[0]["responses"] == 18


def test_global_filters_previous_period_and_before_after(bundles: Engine, seed: Any) -> None:
    _seed(seed)
    params = {"from": "2026-02-01", "to": "2026-02-28", "department": "ortho"}
    with transaction(bundles) as session:
        payload = views.dashboard_payload(session, "service_quality_overview", params, None,
                                          "zh-CN")
        kpi = next(t for t in payload["tiles"] if t["chart"] == "kpi_nps")
        # February ortho: 9,9,8,7,6,5,0 -> 2 promoters, 3 detractors of 7 -> -14.3
        assert kpi["data"]["rows"][0]["nps"] == pytest.approx(100 * (2 - 3) / 7)
        # the previous period (4–31 January) holds ortho's 10,10,9 -> 100
        assert kpi["previous"]["rows"][0]["nps"] is None  # 3 responses < min_sample 5
        comp = views.dashboard_payload(session, "comparisons", {}, None, "zh-CN")
    before = comp["before_after"]["tiles"]["kpi_nps"]["before"]["rows"][0]
    assert before["responses"] == 17  # all seeded data precede the 2026-06-01 split
    assert comp["before_after"]["tiles"]["kpi_nps"]["after"]["rows"][0]["responses"] == 0


def test_negative_feedback_word_cloud_gets_word_counts_only(bundles: Engine, seed: Any) -> None:
    _seed(seed)
    with transaction(bundles) as session:
        payload = views.dashboard_payload(session, "negative_feedback", {}, None, "zh-CN")
    cloud = next(t for t in payload["tiles"] if t["chart"] == "negative_wordcloud")
    words = {r["word"]: r["count"] for r in cloud["data"]["rows"]}
    # four dissatisfied patients (overall <= 2) wrote the same sentence
    assert words["护士"] == 4 and words["态度"] == 4
    assert "很好" not in words  # satisfied patients' comments are not read
    # laid out server-side (Vega's wordcloud transform needs a browser canvas)
    placed = cloud["spec"]["data"][0]["values"]
    assert {p["word"] for p in placed} <= set(words) and all("x" in p for p in placed)
    assert all(set(r) == {"word", "count"} for r in cloud["data"]["rows"])


def test_drill_path_without_hospital_level_filters_each_click(engine: Engine, seed: Any) -> None:
    from careloop.reports.compiler import dataset_from_body
    from careloop.reports.query import Filters
    from careloop.reports.runtime import drill
    from careloop.reports.spec import ChartSpec, DashboardSpec, TileSpec

    at = datetime(2026, 3, 1, 4, tzinfo=UTC)
    seed.submit("card", {"nps": 10}, at=at, doctor=1)
    seed.submit("card", {"nps": 0}, at=at, doctor=2)
    seed.submit("ortho", {"nps": 9}, at=at, doctor=3)
    data = dataset_from_body("d", {"source": "submissions", "dimensions": ["department"],
                                   "measures": [{"key": "n", "type": "count"}]})
    chart = ChartSpec(key="c", title={}, dataset="d", type="bar",
                      encoding={"x": "department", "y": "n"}, inline_dataset=data)
    dash = DashboardSpec(key="x", title={}, tiles=(TileSpec("c", inline=chart),),
                         drilldown=("department", "doctor", "responses"))
    with transaction(engine) as session:
        top = drill(session, dash, "c", [], Filters(), None).rows
        doctors = drill(session, dash, "c", ["card"], Filters(), None).rows
        responses = drill(session, dash, "c", ["card", "2"], Filters(), None).rows
    assert [r["department"] for r in top] == ["card", "ortho"]
    assert [r["doctor"] for r in doctors] == [1, 2]
    assert [r["department"] for r in responses] == ["card"] and len(responses) == 1


def test_empty_tiles_say_why_and_draw_no_sample_data(bundles: Engine) -> None:
    with transaction(bundles) as session:
        payload = views.dashboard_payload(session, "service_quality_overview", {}, None, "zh-CN")
    tile = next(t for t in payload["tiles"] if t["chart"] == "nps_by_department")
    assert tile["spec"] is None and tile["data"]["rows"] == []
    assert tile["empty"].startswith("本期暂无数据：尚无")
    assert "seattle" not in json.dumps(payload).lower()
    kpi = next(t for t in payload["tiles"] if t["chart"] == "kpi_nps")
    assert kpi["spec"] is None and kpi["empty"]  # an ungrouped KPI counting nothing is empty
