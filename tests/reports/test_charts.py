"""The chart layer against public data (vega-datasets), word clouds, and CJK rendering to PNG."""

from __future__ import annotations

import io
import json
import statistics
from typing import Any

import pytest
from PIL import Image, ImageChops
from vega_datasets import data as vega_data

from careloop.reports.chart_types import CHART_TYPES
from careloop.reports.charts import vega_lite, word_counts
from careloop.reports.export import render
from careloop.reports.query import ResultTable
from careloop.reports.spec import ChartSpec


def _weather() -> ResultTable:
    frame = vega_data.seattle_weather()
    frame["month"] = frame["date"].dt.strftime("%Y-%m")
    monthly = frame.groupby(["month", "weather"], as_index=False)["precipitation"].sum()
    rows: list[dict[str, Any]] = monthly.to_dict("records")
    return ResultTable(columns=["month", "weather", "precipitation"], rows=rows)


def _chart(kind: str, encoding: dict[str, str], **kw: Any) -> ChartSpec:
    return ChartSpec(key="c", title={"zh-CN": "图表", "en": "Chart"}, dataset="d", type=kind,
                     encoding=encoding, **kw)


ENCODINGS: dict[str, dict[str, str]] = {
    "bar": {"x": "month", "y": "precipitation"},
    "grouped_bar": {"x": "month", "y": "precipitation", "color": "weather"},
    "stacked_bar": {"x": "month", "y": "precipitation", "color": "weather"},
    "line": {"x": "month", "y": "precipitation", "color": "weather"},
    "area": {"x": "month", "y": "precipitation"},
    "pie": {"color": "weather", "theta": "precipitation"},
    "donut": {"color": "weather", "theta": "precipitation"},
    "heatmap": {"x": "month", "y": "weather", "color": "precipitation"},
    "scatter": {"x": "precipitation", "y": "precipitation"},
    "boxplot": {"x": "weather", "y": "precipitation"},
    "table": {"x": "month", "y": "precipitation"},
    "kpi": {"value": "precipitation"},
}


@pytest.mark.parametrize("kind", sorted(ENCODINGS))
def test_every_chart_type_renders_seattle_weather(kind: str) -> None:
    spec = vega_lite(_chart(kind, ENCODINGS[kind], threshold=50.0), _weather(),
                     previous=_weather())
    svg = render(spec, "svg").decode()
    assert svg.startswith("<svg") and ("<path" in svg or "<text" in svg)
    data = spec.get("data") or spec["layer"][0]["data"]
    assert len(data["values"]) in (len(_weather().rows), 1)  # the aggregated rows (KPI: one)


def test_chart_types_are_all_covered() -> None:
    assert set(ENCODINGS) | {"wordcloud"} == {t.name for t in CHART_TYPES}


def test_cars_scatter_carries_only_the_rows_given() -> None:
    cars = [c for c in json.loads(vega_data.cars.raw()) if c["Horsepower"] is not None]
    origins = sorted({c["Origin"] for c in cars})
    rows = [{"Origin": o, "Horsepower": statistics.mean(c["Horsepower"] for c in cars
                                                         if c["Origin"] == o)} for o in origins]
    result = ResultTable(columns=["Origin", "Horsepower"], rows=rows)
    spec = vega_lite(_chart("bar", {"x": "Origin", "y": "Horsepower"}), result)
    assert len(spec["data"]["values"]) == 3  # three origins, not 392 cars
    assert render(spec, "png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_threshold_line_and_kpi_change() -> None:
    layered = vega_lite(_chart("bar", ENCODINGS["bar"], threshold=20.0), _weather())
    assert layered["layer"][1]["mark"]["type"] == "rule"
    now = ResultTable(["nps"], [{"nps": 35.0}])
    before = ResultTable(["nps"], [{"nps": 40.5}])
    kpi = vega_lite(_chart("kpi", {"value": "nps"}), now, previous=before)
    assert kpi["data"]["values"] == [{"value": "35.0", "change": "▼ 5.5"}]
    empty = vega_lite(_chart("kpi", {"value": "nps"}), ResultTable(["nps"], [{"nps": None}]))
    assert empty["data"]["values"][0]["value"] == "n/a"


def test_word_counts_segment_chinese_and_drop_stop_words() -> None:
    rows = word_counts(["护士态度很差，等待时间太长", "等待时间长，护士很忙"])
    counts = {r["word"]: r["count"] for r in rows}
    assert counts["护士"] == 2 and counts["等待时间"] == 2
    assert "很" not in counts and "，" not in counts


def _ink(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("L")


def test_png_export_draws_chinese_labels() -> None:
    """Render the same bar chart with Chinese and with blank-glyph labels; the label area must
    differ, and Chinese text must not draw as the missing-glyph box (.notdef)."""
    def chart(labels: list[str]) -> bytes:
        rows = [{"department": name, "nps": v} for name, v in zip(labels, (30, 50), strict=True)]
        spec = vega_lite(_chart("bar", {"x": "department", "y": "nps"}),
                         ResultTable(["department", "nps"], rows))
        return render(spec, "png", scale=2)

    chinese = _ink(chart(["心内科", "骨科"]))
    # Private-use characters have no glyph in any font: they draw as .notdef boxes (or nothing)
    boxes = _ink(chart(["\ue000\ue001\ue002", "\ue003\ue004"]))
    other = _ink(chart(["产科病", "眼科"]))
    assert chinese.size == boxes.size == other.size
    diff_missing = ImageChops.difference(chinese, boxes).getbbox()
    diff_other = ImageChops.difference(chinese, other).getbbox()
    assert diff_missing is not None and diff_other is not None
    # The differing region is the x-axis labels (bottom part of the image).
    assert diff_missing[1] > chinese.size[1] * 0.5
    # Different Chinese words draw differently: real glyphs, not identical boxes per character.
    dark = chinese.crop(diff_other).point(lambda p: 255 if p < 128 else 0).histogram()[255]
    assert dark > 50
