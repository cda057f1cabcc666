"""The chart-type contract: a chart type registered like a plugin is validated (its required
channels, its own options), drawn and offered to the builder without any other module knowing
its name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from careloop.engine import schema
from careloop.engine.cli import cli
from careloop.engine.registry import loaded_registry
from careloop.reports.chart_types import ChartType, chart_type
from careloop.reports.charts import Drawing, alt, vega_lite
from careloop.reports.query import ResultTable
from careloop.reports.spec import ChartSpec

DATASET = """\
kind: dataset
key: volume
title: {zh-CN: 数量, en: Volume}
source: tasks
dimensions: [department]
measures:
  - {key: tasks, type: count}
"""
CHART = """\
kind: chart
key: volume_bullet
title: {zh-CN: 待办量, en: Task volume}
dataset: volume
type: bullet
encoding: {x: department, y: tasks}
options: {target: 40}
"""


def _draw_bullet(d: Drawing) -> dict[str, Any]:
    bars = d.base().mark_bar().encode(x=alt.X(d.encoding["x"], type="nominal"),
                                      y=alt.Y(d.encoding["y"], type="quantitative"))
    target = alt.Chart(alt.Data(values=[{"target": d.chart.options["target"]}])).mark_tick(
        thickness=3).encode(y="target:Q")
    return d.finish(alt.layer(bars, target))


BULLET = ChartType(name="bullet", title={"zh-CN": "子弹图", "en": "Bullet"}, draw=_draw_bullet,
                   channels=("x", "y"),
                   required={"y": {"zh-CN": "数值列", "en": "the value column"}},
                   options={"target": {"type": "number"}})


@pytest.fixture
def bullet() -> Iterator[None]:
    catalogue = loaded_registry().catalogue("report_chart_type")
    catalogue.register("bullet", BULLET)
    schema.kind_schema.cache_clear()
    schema._validator.cache_clear()
    yield
    del catalogue._items["bullet"]
    schema.kind_schema.cache_clear()
    schema._validator.cache_clear()


def _validate(tmp_path: Path, chart: str) -> tuple[int, str]:
    (tmp_path / "volume.yaml").write_text(DATASET, "utf-8")
    (tmp_path / "volume_bullet.yaml").write_text(chart, "utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    return result.exit_code, result.output


def test_a_registered_chart_type_validates_and_draws(bullet: None, tmp_path: Path) -> None:
    code, output = _validate(tmp_path, CHART)
    assert code == 0, output
    chart = ChartSpec(key="volume_bullet", title={"zh-CN": "待办量", "en": "Task volume"},
                      dataset="volume", type="bullet",
                      encoding={"x": "department", "y": "tasks"}, options={"target": 40})
    spec = vega_lite(chart, ResultTable(["department", "tasks"],
                                        [{"department": "心内科", "tasks": 12}]))
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "tick"]
    assert spec["layer"][1]["data"]["values"] == [{"target": 40}]
    assert spec["title"] == "待办量"


def test_its_options_and_channels_are_checked_located(bullet: None, tmp_path: Path) -> None:
    bad = CHART.replace("options: {target: 40}", "options: {taget: 40}").replace(
        "encoding: {x: department, y: tasks}", "encoding: {x: department}")
    code, output = _validate(tmp_path, bad)
    assert code == 1
    assert ("volume_bullet.yaml:6:11: chart.missing-channel at $.encoding — chart type 'bullet' "
            "needs encoding.y (the value column)") in output
    assert ("volume_bullet.yaml:7:11: chart.bad-option at $.options.taget — chart type 'bullet' "
            "has no option 'taget' (did you mean 'target'?)") in output


def test_the_word_cloud_owns_its_text_channel(tmp_path: Path) -> None:
    cloud = CHART.replace("type: bullet", "type: wordcloud").replace(
        "options: {target: 40}\n", "")
    code, output = _validate(tmp_path, cloud)
    assert code == 1
    # its text channel names a form field, not a dataset column: only the missing one is an error
    assert "chart.missing-channel at $.encoding — chart type 'wordcloud' needs encoding.text" \
        in output
    assert "chart.unknown-field" not in output


def test_the_builder_panel_comes_from_the_type() -> None:
    panel = chart_type("wordcloud").panel("zh-CN")
    assert panel == {"name": "wordcloud", "title": "词云", "channels": ["text"],
                     "required": ["text"], "options": {}}
    assert chart_type("bar").panel("en")["title"] == "Bar"
