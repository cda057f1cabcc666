"""The chart-type contract and the built-in chart types.

A :class:`ChartType` owns everything about one type of chart: its label in the builder
(zh-CN/en), the encoding channels its panel offers and those it needs, which channels name a
dataset column, the JSON Schema of its own ``options:`` (checked at compile time, located), how
it draws (``draw``: a Vega-Lite or Vega spec from :class:`careloop.reports.charts.Drawing`),
where its rows come from when not from the dataset (a word cloud counts words), what its empty
state says, and whether a click or the before/after view applies to it. Nothing outside the type
asks for its name.

Built-ins register in the ``report_chart_type`` catalogue from :mod:`careloop.reports.plugin`,
the way an extension does::

    registry.catalogue("report_chart_type").register("bullet", ChartType(
        name="bullet", title={"zh-CN": "子弹图", "en": "Bullet"}, draw=draw_bullet,
        channels=("x", "y"), required={"y": {"zh-CN": "数值列", "en": "the value column"}}))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from careloop.engine.i18n import pick
from careloop.engine.registry import loaded_registry
from careloop.reports import charts as c
from careloop.reports.dialect import ReportError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from careloop.reports.query import Filters, ResultTable, Scope
    from careloop.reports.spec import ChartSpec, DatasetSpec

ChartDraw = Callable[[c.Drawing], dict[str, Any]]
ChartRows = Callable[["Session", "DatasetSpec", "ChartSpec", "Filters", "Scope"], "ResultTable"]

CHANNELS = ("x", "y", "color", "theta", "size", "text", "value", "column", "row")


@dataclass(frozen=True)
class ChartType:
    """One chart type.

    ``required`` maps a channel that must be given to what it holds, in words (the compile
    error's hint); ``column_channels`` are the channels naming a dataset column (``None``: all
    of them). ``rows`` replaces the dataset's rows (``None``: the dataset's); ``empty_topic``
    picks the empty-state sentence ``reports.empty.<topic>`` (``None``: the dataset's source).
    """

    name: str
    title: Mapping[str, str]
    draw: ChartDraw
    channels: tuple[str, ...] = ("x", "y", "color")
    required: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    column_channels: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    rows: ChartRows | None = None
    empty_topic: str | None = None
    clickable: bool = True  # a click on a mark selects the dimension under it
    comparable: bool = True  # drawn in the dashboard's before/after view

    @cached_property
    def validator(self) -> Draft202012Validator:
        return Draft202012Validator({"type": "object", "properties": dict(self.options),
                                     "additionalProperties": False})

    def names_column(self, channel: str) -> bool:
        return self.column_channels is None or channel in self.column_channels

    def panel(self, locale: str) -> dict[str, Any]:
        """What the builder's chart designer shows for this type (its label and channels)."""
        return {"name": self.name, "title": pick(dict(self.title), locale),
                "channels": list(self.channels), "required": list(self.required),
                "options": dict(self.options)}

    def __hash__(self) -> int:
        return hash(self.name)


def chart_type(name: str) -> ChartType:
    """The registered chart type ``name``.

    Raises:
        ReportError: when no such type is registered (a stored chart of a removed plugin).
    """
    found: ChartType | None = loaded_registry().catalogue("report_chart_type").get(name)
    if found is None:
        raise ReportError(f"unknown chart type {name!r}")
    return found


def _word_rows(session: Session, dataset: DatasetSpec, chart: ChartSpec, filters: Filters,
               scope: Scope) -> ResultTable:
    from careloop.reports.runtime import comment_words

    return comment_words(session, dataset, chart.encoding["text"], filters, scope)


def _t(zh: str, en: str) -> dict[str, str]:
    return {"zh-CN": zh, "en": en}


_XY = ("x", "y", "color")
CHART_TYPES = (
    ChartType("bar", _t("柱状图", "Bar"), c.draw_xy("mark_bar")),
    ChartType("grouped_bar", _t("分组柱状图", "Grouped bar"),
              c.draw_xy("mark_bar", offset_by_color=True)),
    ChartType("stacked_bar", _t("堆积柱状图", "Stacked bar"), c.draw_xy("mark_bar")),
    ChartType("line", _t("折线图", "Line"), c.draw_xy("mark_line")),
    ChartType("area", _t("面积图", "Area"), c.draw_xy("mark_area")),
    ChartType("pie", _t("饼图", "Pie"), c.draw_arc(0), ("theta", "color", "x", "y")),
    ChartType("donut", _t("环形图", "Donut"), c.draw_arc(60), ("theta", "color", "x", "y")),
    ChartType("heatmap", _t("热力图", "Heatmap"), c.draw_xy("mark_rect", heat=True)),
    ChartType("scatter", _t("散点图", "Scatter"), c.draw_xy("mark_point", x_quantitative=True)),
    ChartType("boxplot", _t("箱线图", "Box plot"), c.draw_xy("mark_boxplot")),
    ChartType("table", _t("表格", "Table"), c.draw_table, CHANNELS, clickable=False),
    ChartType("kpi", _t("指标卡", "KPI"), c.draw_kpi, ("value", "y"), clickable=False),
    ChartType("wordcloud", _t("词云", "Word cloud"), c.draw_wordcloud, ("text",),
              required={"text": _t("要统计词语的文本题", "the text field whose words are counted")},
              column_channels=(), rows=_word_rows, empty_topic="wordcloud", clickable=False,
              comparable=False),
)
