"""Dashboards an analyst can trust: what the shipped dashboards show over the demo (produced
through the public paths) and over seeded submissions — words, not codes or ``null``; no
sample data; scope-aware titles and data; before/after drawn; exports Excel and CJK ready."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from PIL import Image
from sqlalchemy import Engine, update

from careloop.engine import store
from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.reports import views
from careloop.reports.export import cjk_font_file, render
from careloop.reports.labels import KEY_SUFFIX
from careloop.reports.tables import table

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
AT = datetime(2026, 3, 1, 4, tzinfo=UTC)


def _rows(payload: dict[str, Any], chart: str) -> list[dict[str, Any]]:
    tile = next(t for t in payload["tiles"] if t["chart"] == chart)
    rows: list[dict[str, Any]] = tile["data"]["rows"]
    return rows


def test_demo_complaints_dashboard_reads_as_words(engine: Engine) -> None:
    """``careloop up --demo``: complaints taken at the intake, questionnaires sent by the flows.
    Categories are the complaint form's choices, every row has a named department."""
    from careloop.web.cli import up

    result = CliRunner().invoke(up, ["--no-serve", "--demo", "--patients", "40"])
    assert result.exit_code == 0, result.output
    with transaction() as session:
        payload = views.dashboard_payload(session, "complaints_overview", {}, None, "zh-CN")
        form = store.current(session, "form", "complaint")
        assert form is not None
        choices = {c["code"]: c["label"]["zh-CN"] for f in form.body["fields"]
                   if f["key"] == "category" for c in f["choices"]}
        names = {d.id: d.name["zh-CN"] for d in session.query(Department)}
    categories = _rows(payload, "complaints_by_category")
    assert categories, "the demo takes complaints"
    for row in categories:
        assert row["category" + KEY_SUFFIX] in choices
        assert row["category"] == choices[row["category" + KEY_SUFFIX]]
    for chart in ("complaint_rate_by_department", "followup_reach", "complaint_handling"):
        for row in _rows(payload, chart):
            assert row["department" + KEY_SUFFIX] in names, (chart, row)
            assert row["department"] == names[row["department" + KEY_SUFFIX]]
    # home-BP questionnaires are sent without an encounter: they count for the patient's
    # department (the old query put 70 of them under a department "null")
    reach = _rows(payload, "followup_reach")
    assert all(r["department"] != "未指定科室" for r in reach)
    text = json.dumps(payload, ensure_ascii=False)
    assert "seattle" not in text.lower() and '"category": null' not in text
    assert '"department": null' not in text


def _bundles(engine: Engine) -> None:
    for app in ("common", "discharge", "cardiology", "satisfaction", "complaints"):
        import_bundle(APPS / app, engine=engine)


def test_doctors_and_nursing_groups_by_name(engine: Engine, seed: Any) -> None:
    _bundles(engine)
    for v in (10, 9, 9, 8, 2):
        seed.submit("card", {"nps": v, "overall": 4}, at=datetime(2026, 7, 1, tzinfo=UTC),
                    doctor=5)
    seed.submit("card", {"nps": 3, "overall": 2}, at=AT, doctor=5)  # before the split
    with engine.begin() as conn:
        conn.execute(update(table("encounters")).values(responsible_nurse_id=5))
    with transaction(engine) as session:
        payload = views.dashboard_payload(session, "comparisons", {}, None, "zh-CN")
        drilled = views.drill_payload(session, "comparisons", "nps_by_doctor", ["*", "card"],
                                      {}, None, "zh-CN")
    doctors = _rows(payload, "nps_by_doctor")
    assert [(r["doctor"], r["doctor" + KEY_SUFFIX]) for r in doctors] == [("Dr 5", "5")]
    assert [r["nursing_group"] for r in _rows(payload, "csat_by_nursing_group")] == ["Dr 5"]
    tile = next(t for t in payload["tiles"] if t["chart"] == "nps_by_doctor")
    assert tile["dimension"] == "doctor"
    assert tile["spec"]["width"] == "container"  # fills its tile
    x = tile["spec"]["encoding"]["x"]
    assert x["title"] == "主管医生" and tile["spec"]["encoding"]["y"]["title"] == "净推荐值"
    assert drilled["level"] == "doctor" and drilled["rows"][0]["doctor"] == "Dr 5"
    assert drilled["spec"]["encoding"]["x"]["field"] == "doctor"
    # before/after is drawn: two series around the dashboard's split date
    compare = tile["before_after"]
    periods = {v["period"] for v in compare["data"]["values"]}
    assert periods == {"2026-06-01之前", "2026-06-01起"}
    assert compare["encoding"]["xOffset"]["field"] == "period"


def test_ward_nurse_sees_the_ward_under_its_name(engine: Engine, seed: Any) -> None:
    """A ward's head nurse (scope: the ward) sees the ward's rows; 全院NPS reads 心内1病区 NPS."""
    _bundles(engine)
    for v in (10, 10, 9, 9, 3, 10):
        seed.submit("card", {"nps": v, "overall": 5}, at=AT)
    with engine.begin() as conn:
        conn.execute(table("departments").insert().values(
            id="card_w1", name={"zh-CN": "心内1病区", "en": "Cardiology ward 1"}, kind="ward",
            parent_id="card", active=True))
        conn.execute(update(table("encounters")).values(ward_id="card_w1"))
        conn.execute(table("departments").insert().values(
            id="ortho", name={"zh-CN": "骨科", "en": "Orthopedics"}, kind="department",
            active=True))
    with transaction(engine) as session:
        ward = views.dashboard_payload(session, "service_quality_overview", {},
                                       frozenset({"card_w1"}), "zh-CN")
        english = views.dashboard_payload(session, "service_quality_overview", {},
                                          frozenset({"card_w1"}), "en")
        other = views.dashboard_payload(session, "service_quality_overview", {},
                                        frozenset({"ortho"}), "zh-CN")
    kpi = next(t for t in ward["tiles"] if t["chart"] == "kpi_nps")
    assert kpi["title"] == "心内1病区 NPS" and kpi["empty"] is None
    assert kpi["data"]["rows"][0]["responses"] == 6
    assert ward["title"] == "心内1病区服务质量概览"
    assert next(t for t in english["tiles"] if t["chart"] == "kpi_nps")["title"] == \
        "Cardiology ward 1 NPS"
    # a department with no data is told so, in words, with the scope
    empty = next(t for t in other["tiles"] if t["chart"] == "nps_by_department")
    assert empty["spec"] is None and empty["empty"].startswith("本期暂无数据：尚无")
    assert "（骨科范围内）" in empty["empty"]


def test_csv_has_a_bom_and_titles_for_excel(engine: Engine, seed: Any) -> None:
    _bundles(engine)
    seed.submit("card", {"nps": 10, "overall": 5}, at=AT)
    with transaction(engine) as session:
        body = views.export_tile(session, "service_quality_overview", "nps_by_department",
                                 "csv", {}, None, "zh-CN")
    assert body[:3] == b"\xef\xbb\xbf"
    lines = body[3:].decode("utf-8").split("\r\n")
    assert lines[0].startswith("科室,") and "净推荐值" in lines[0]
    assert lines[1].startswith("card,1,") and "__key" not in body.decode("utf-8-sig")
    assert "样本不足" in lines[1]  # nps under min_sample: words, not n/a or an empty cell


def _ink(png: bytes, box: tuple[int, int, int, int] | None = None) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGBA")
    white = Image.new("RGBA", image.size, "white")
    flat = Image.alpha_composite(white, image).convert("L")
    if box is not None:
        flat = flat.crop(box)
    return sum(flat.point(lambda p: 255 if p < 160 else 0).histogram()[255:])


def test_word_cloud_png_and_pdf_draw_glyphs(engine: Engine, seed: Any) -> None:
    font = cjk_font_file()
    assert font.exists() and "CJK" in font.name  # resolved through fontconfig
    _bundles(engine)
    for _ in range(3):
        seed.submit("card", {"nps": 2, "overall": 1, "comment": "护士态度很差，等待时间太长"},
                    at=AT)
    with transaction(engine) as session:
        png = views.export_tile(session, "negative_feedback", "negative_wordcloud", "png", {},
                                None, "zh-CN")
        pdf = views.export_tile(session, "negative_feedback", "negative_wordcloud", "pdf", {},
                                None, "zh-CN")
        payload = views.dashboard_payload(session, "negative_feedback", {}, None, "zh-CN")
    spec = next(t for t in payload["tiles"] if t["chart"] == "negative_wordcloud")["spec"]
    placed = spec["data"][0]["values"]
    assert {"护士", "态度"} <= {p["word"] for p in placed}
    # the glyph area (where the largest word was placed) has ink; the old export was blank
    big = max(placed, key=lambda p: p["fontSize"])
    x, y = big["x"] + 5, big["y"] + 5 + 30  # padding, and the title above the plot
    assert _ink(png, (x, y, x + big["fontSize"] * 2, y + big["fontSize"])) > 30
    assert _ink(png) > 200
    assert pdf[:5] == b"%PDF-" and len(pdf) > 3000
    blank = render(dict(spec, data=[{"name": "words", "values": []}]), "pdf")
    assert len(pdf) > len(blank) + 1000  # the words are in the PDF, not an empty page
