"""Vega-Lite specs (through Altair) for every chart type, and a Vega word cloud.

The browser receives the spec with the *aggregated* rows inlined — never raw answers. Labels use
the CJK font registered for server-side export (:mod:`careloop.reports.export`) so Chinese text
renders the same on screen and in PNG/SVG/PDF.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Any

import altair

from careloop.engine.i18n import pick
from careloop.reports.query import ResultTable
from careloop.reports.spec import ChartSpec

# Altair's stubs disagree with its own runtime on several signatures (alt.Data is untyped, X and
# Y reject Optional); the module is used through ``Any`` rather than scattering ignores.
alt: Any = altair

FONT = "Noto Sans CJK SC"
_STOP = frozenset({
    "的", "了", "是", "我", "也", "和", "就", "都", "在", "很", "有", "不", "没", "太", "还", "又",
    "吧", "啊", "呢", "吗", "着", "给", "让", "这", "那", "一个", "我们", "他们", "你们", "非常",
    "比较", "但是", "因为", "所以", "the", "a", "an", "and", "or", "is", "are", "was", "to", "of",
    "in", "it"})


def _config(chart: Any, title: str) -> dict[str, Any]:
    spec: dict[str, Any] = chart.properties(title=title).configure(font=FONT).to_dict()
    return spec


def _encode_xy(base: Any, enc: dict[str, str], kind: str) -> Any:
    x, y = enc.get("x"), enc.get("y")
    channels: dict[str, Any] = {}
    if x:
        channels["x"] = alt.X(x, type="ordinal" if kind != "scatter" else "quantitative")
    if y:
        channels["y"] = alt.Y(y, type="quantitative")
    if enc.get("color"):
        channels["color"] = alt.Color(enc["color"], type="nominal")
    if kind == "grouped_bar" and enc.get("color"):
        channels["xOffset"] = alt.XOffset(enc["color"], type="nominal")
    if kind == "heatmap":
        channels = {"x": alt.X(x, type="ordinal"), "y": alt.Y(y, type="ordinal"),
                    "color": alt.Color(enc.get("color", y), type="quantitative")}
    quantitative = {enc.get("y")} if kind != "heatmap" else {enc.get("color", y)}
    if kind == "scatter":
        quantitative.add(x)
    channels["tooltip"] = [alt.Tooltip(v, type="quantitative" if v in quantitative else "nominal")
                           for v in dict.fromkeys(enc.values())]
    return base.encode(**channels)


def vega_lite(chart: ChartSpec, data: ResultTable, *, locale: str = "zh-CN",
              previous: ResultTable | None = None) -> dict[str, Any]:
    """The Vega-Lite spec of ``chart`` over ``data`` (a word cloud returns a Vega spec)."""
    title = pick(dict(chart.title), locale)
    enc = dict(chart.encoding)
    if chart.type == "wordcloud":
        return wordcloud_vega(data.rows, "word", "count", title)
    source = alt.Data(values=data.rows)
    base = alt.Chart(source)
    if chart.type == "kpi":
        return _config(_kpi(base, chart, data, previous), title)
    if chart.type in ("pie", "donut"):
        mark = base.mark_arc(innerRadius=60 if chart.type == "donut" else 0)
        return _config(mark.encode(theta=alt.Theta(enc.get("theta") or enc["y"],
                                                   type="quantitative"),
                                   color=alt.Color(enc.get("color") or enc["x"],
                                                   type="nominal")), title)
    if chart.type == "table":
        cols = list(dict.fromkeys(enc.values())) or data.columns
        rows = base.transform_window(row="row_number()").transform_fold(cols)
        text = rows.mark_text(align="left").encode(
            x=alt.X("key:N", title=None), y=alt.Y("row:O", axis=None), text="value:N")
        return _config(text, title)
    marks = {"bar": "mark_bar", "grouped_bar": "mark_bar", "stacked_bar": "mark_bar",
             "line": "mark_line", "area": "mark_area", "heatmap": "mark_rect",
             "scatter": "mark_point", "boxplot": "mark_boxplot"}
    drawn = _encode_xy(getattr(base, marks[chart.type])(), enc, chart.type)
    if chart.threshold is not None and enc.get("y"):
        rule = alt.Chart(alt.Data(values=[{"threshold": chart.threshold}])).mark_rule(
            color="#d62728", strokeDash=[4, 4]).encode(y="threshold:Q")
        return _config(alt.layer(drawn, rule), title)
    return _config(drawn, title)


def _kpi(base: Any, chart: ChartSpec, data: ResultTable,
         previous: ResultTable | None) -> Any:
    column = chart.encoding.get("value") or chart.encoding.get("y") or data.columns[-1]
    now = data.rows[0].get(column) if data.rows else None
    before = previous.rows[0].get(column) if previous and previous.rows else None
    change = None if now is None or before is None else round(float(now) - float(before), 1)
    text = "n/a" if now is None else f"{float(now):.1f}"
    delta = "" if change is None else f"{'▲' if change >= 0 else '▼'} {abs(change):.1f}"
    tile = alt.Chart(alt.Data(values=[{"value": text, "change": delta}]))
    return tile.mark_text(fontSize=36).encode(text="value:N").properties(
        width=160, height=80, description=delta or "no previous period")


@cache
def _jieba() -> Any:
    # jieba ships no type information; imported by name so the module stays typed as Any.
    jieba = importlib.import_module("jieba")
    jieba.setLogLevel(60)
    return jieba


# jieba's part-of-speech tags for person names (nr: Chinese name, nrt: transliterated, nrfg:
# others) and the common words it tags as names although they are not
_NAME_TAGS = frozenset({"nr", "nrt", "nrfg"})
_NOT_NAMES = frozenset({"谢谢", "感谢", "多谢", "辛苦", "耐心", "热心", "贴心", "细心"})


@cache
def _posseg() -> Any:
    _jieba()
    return importlib.import_module("jieba.posseg")


def names_pattern(names: Iterable[str | None]) -> re.Pattern[str] | None:
    """One pattern matching any of ``names`` (staff names, patients' names), longest first."""
    kept = sorted({n.strip() for n in names if n and len(n.strip()) >= 2}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, kept))) if kept else None


def word_counts(texts: Iterable[str | tuple[str, Iterable[str | None]]], top: int = 80,
                names: re.Pattern[str] | None = None) -> list[dict[str, Any]]:
    """Segment Chinese (and English) comments with jieba; drop stop words, digits, 1-char words
    and person names: the ``names`` given (staff), each comment's own names (a text may come
    with the names of its patient: ``(text, [name])``), and the words jieba tags as a person's
    name (``nr``) — a word cloud never shows who was written about.

    >>> word_counts(["护士态度很好，护士很耐心"])[0]
    {'word': '护士', 'count': 2}
    >>> [w["word"] for w in word_counts([("欧阳娜娜说李娜护士很耐心", ["欧阳娜娜"])])]
    ['护士', '耐心']
    """
    counts: Counter[str] = Counter()
    posseg = _posseg()
    for item in texts:
        text, own = (item, ()) if isinstance(item, str) or item is None else item
        text = text or ""
        if names is not None:
            text = names.sub(" ", text)
        own_pattern = names_pattern(own)
        if own_pattern is not None:
            text = own_pattern.sub(" ", text)
        for pair in posseg.lcut(text):
            word = pair.word.strip().lower()
            if pair.flag in _NAME_TAGS and word not in _NOT_NAMES:
                continue
            if len(word) < 2 or word in _STOP or not re.search(r"\w", word) or word.isdigit():
                continue
            counts[word] += 1
    return [{"word": w, "count": c} for w, c in counts.most_common(top)]


def wordcloud_vega(rows: list[dict[str, Any]], text: str, size: str,
                   title: str) -> dict[str, Any]:
    """A Vega spec with the wordcloud transform (Vega-Lite has none)."""
    return {
        "$schema": "https://vega.github.io/schema/vega/v5.json",
        "width": 500, "height": 300, "title": title, "config": {"text": {"font": FONT}},
        "data": [{"name": "words", "values": rows}],
        "scales": [{"name": "color", "type": "ordinal", "domain": {"data": "words",
                                                                   "field": text},
                    "range": {"scheme": "tableau10"}}],
        "marks": [{
            "type": "text", "from": {"data": "words"},
            "encode": {"enter": {"text": {"field": text}, "align": {"value": "center"},
                                 "baseline": {"value": "alphabetic"}, "font": {"value": FONT},
                                 "fill": {"scale": "color", "field": text}}},
            "transform": [{"type": "wordcloud", "size": [500, 300], "text": {"field": text},
                           "font": FONT, "fontSize": {"field": f"datum.{size}"},
                           "fontSizeRange": [12, 56], "padding": 2}],
        }],
    }


_DIMENSION_CHANNELS = ("x", "color", "column", "row", "text")


def sample_preview(chart: ChartSpec, locale: str = "zh-CN") -> dict[str, Any]:
    """A preview of ``chart`` on public sample data (vega-datasets' seattle-weather: mean
    precipitation per weather type), for a dataset that has no rows yet. Clearly marked as a
    sample in the title; never mixed with hospital data.
    """
    if chart.type == "wordcloud":
        rows = [{"word": w, "count": c} for w, c in (("sun", 714), ("fog", 101), ("rain", 641),
                                                     ("drizzle", 53), ("snow", 26))]
        return wordcloud_vega(rows, "word", "count", _sample_title(chart, locale))
    weather: dict[str, list[float]] = {}
    for day in _weather_rows():
        weather.setdefault(day["weather"], []).append(float(day["precipitation"]))
    enc = dict(chart.encoding)
    rows = []
    for name, values in sorted(weather.items()):
        row: dict[str, Any] = {}
        for channel, column in enc.items():
            row[column] = name if channel in _DIMENSION_CHANNELS else sum(values) / len(values)
        rows.append(row)
    sample = ResultTable(columns=list(dict.fromkeys(enc.values())), rows=rows)
    spec = vega_lite(chart, sample, locale=locale)
    spec["title"] = _sample_title(chart, locale)
    return spec


def _sample_title(chart: ChartSpec, locale: str) -> str:
    suffix = "（示例数据）" if locale == "zh-CN" else " (sample data)"
    return pick(dict(chart.title), locale) + suffix


def _weather_rows() -> list[dict[str, Any]]:
    import csv
    import io

    from vega_datasets import data as vega_data

    raw = vega_data.seattle_weather.raw()
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    return list(csv.DictReader(io.StringIO(text)))
