"""Vega-Lite specs (through Altair) drawn for the chart types (:mod:`careloop.reports.chart_types`
owns which type draws how), and a Vega word cloud.

The browser receives the spec with the *aggregated* rows inlined — never raw answers. Labels use
the CJK font registered for server-side export (:mod:`careloop.reports.export`) so Chinese text
renders the same on screen and in PNG/SVG/PDF.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
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


def _config(chart: Any, title: str, responsive: bool = False) -> dict[str, Any]:
    if responsive:  # fill the tile: as wide as its card, redrawn when the card resizes
        chart = chart.properties(width="container")
    spec: dict[str, Any] = chart.properties(title=title).configure(font=FONT).to_dict()
    if responsive:
        spec["autosize"] = {"type": "fit-x", "contains": "padding", "resize": True}
    return spec


def _t(titles: Mapping[str, str], column: str | None) -> Any:
    return titles.get(column or "", alt.Undefined)


def _encode_xy(base: Any, enc: dict[str, str], titles: Mapping[str, str], *,
               x_quantitative: bool = False, offset_by_color: bool = False,
               heat: bool = False) -> Any:
    """x/y/colour channels of the cartesian chart types (how each type draws them is its own
    choice: a scatter's x is a quantity, a grouped bar offsets by colour, a heatmap colours by
    value)."""
    x, y = enc.get("x"), enc.get("y")
    channels: dict[str, Any] = {}
    if x:
        channels["x"] = alt.X(x, type="quantitative" if x_quantitative else "ordinal",
                              title=_t(titles, x))
    if y:
        channels["y"] = alt.Y(y, type="quantitative", title=_t(titles, y))
    if enc.get("color"):
        channels["color"] = alt.Color(enc["color"], type="nominal",
                                      title=_t(titles, enc["color"]))
    if offset_by_color and enc.get("color"):
        channels["xOffset"] = alt.XOffset(enc["color"], type="nominal")
    if heat:
        channels = {"x": alt.X(x, type="ordinal", title=_t(titles, x)),
                    "y": alt.Y(y, type="ordinal", title=_t(titles, y)),
                    "color": alt.Color(enc.get("color", y), type="quantitative",
                                       title=_t(titles, enc.get("color", y)))}
    quantitative = {enc.get("color", y)} if heat else {enc.get("y")}
    if x_quantitative:
        quantitative.add(x)
    channels["tooltip"] = [alt.Tooltip(v, type="quantitative" if v in quantitative else "nominal",
                                       title=_t(titles, v))
                           for v in dict.fromkeys(enc.values())]
    return base.encode(**channels)


@dataclass(frozen=True, slots=True)
class Drawing:
    """What a chart type draws from: the chart, its (labelled, aggregated) rows, the previous
    period's rows (KPI change), column titles, the title, and whether it fills its tile."""

    chart: ChartSpec
    data: ResultTable
    previous: ResultTable | None
    titles: Mapping[str, str]
    title: str
    responsive: bool

    @property
    def encoding(self) -> dict[str, str]:
        return dict(self.chart.encoding)

    def base(self) -> Any:
        return alt.Chart(alt.Data(values=self.data.rows))

    def finish(self, chart: Any) -> dict[str, Any]:
        return _config(chart, self.title, self.responsive)


def vega_lite(chart: ChartSpec, data: ResultTable, *, locale: str = "zh-CN",
              previous: ResultTable | None = None,
              titles: Mapping[str, str] = MappingProxyType({}), title: str | None = None,
              responsive: bool = False) -> dict[str, Any]:
    """The Vega-Lite spec of ``chart`` over ``data``, drawn by its chart type (a word cloud
    returns a Vega spec).

    ``titles`` name the columns on axes, legends and tooltips (科室, 净推荐值 — not the
    dataset's keys); ``responsive`` makes the chart as wide as its tile (``width:
    "container"``) for the page — exports keep a fixed size.
    """
    from careloop.reports.chart_types import chart_type

    title = title if title is not None else pick(dict(chart.title), locale)
    return chart_type(chart.type).draw(Drawing(chart, data, previous, titles, title,
                                               responsive))


def draw_xy(mark: str, **how: bool) -> Any:
    """A cartesian chart type's draw: ``mark`` (``mark_bar``, ``mark_line`` …), the encoding,
    and the chart's ``threshold`` as a dashed rule."""
    def draw(d: Drawing) -> dict[str, Any]:
        drawn = _encode_xy(getattr(d.base(), mark)(), d.encoding, d.titles, **how)
        if d.chart.threshold is not None and d.encoding.get("y"):
            rule = alt.Chart(alt.Data(values=[{"threshold": d.chart.threshold}])).mark_rule(
                color="#d62728", strokeDash=[4, 4]).encode(y="threshold:Q")
            return d.finish(alt.layer(drawn, rule))
        return d.finish(drawn)
    return draw


def draw_arc(inner_radius: int) -> Any:
    """Pie (``0``) and donut: slices sized by ``theta`` (else ``y``), coloured by ``color``
    (else ``x``)."""
    def draw(d: Drawing) -> dict[str, Any]:
        enc, titles = d.encoding, d.titles
        theta, color = enc.get("theta") or enc["y"], enc.get("color") or enc["x"]
        return d.finish(d.base().mark_arc(innerRadius=inner_radius).encode(
            theta=alt.Theta(theta, type="quantitative", title=_t(titles, theta)),
            color=alt.Color(color, type="nominal", title=_t(titles, color)),
            tooltip=[alt.Tooltip(color, type="nominal", title=_t(titles, color)),
                     alt.Tooltip(theta, type="quantitative", title=_t(titles, theta))]))
    return draw


def draw_table(d: Drawing) -> dict[str, Any]:
    """The encoded columns (all when none is named) as a text table with their titles."""
    titles = d.titles
    cols = list(dict.fromkeys(d.encoding.values())) or d.data.columns
    named = [{**r, **{titles.get(c, c): r.get(c) for c in cols}} for r in d.data.rows]
    heads = [titles.get(c, c) for c in cols]
    rows = alt.Chart(alt.Data(values=named)).transform_window(
        row="row_number()").transform_fold(heads)
    text = rows.mark_text(align="left").encode(
        x=alt.X("key:N", title=None, sort=heads), y=alt.Y("row:O", axis=None),
        text="value:N")
    return d.finish(text)


def draw_kpi(d: Drawing) -> dict[str, Any]:
    return d.finish(_kpi(d.base(), d.chart, d.data, d.previous))


def draw_wordcloud(d: Drawing) -> dict[str, Any]:
    return wordcloud_vega(d.data.rows, "word", "count", d.title)


def before_after_vega_lite(chart: ChartSpec, before: ResultTable, after: ResultTable, *,
                           labels: tuple[str, str], titles: Mapping[str, str],
                           title: str, responsive: bool = False) -> dict[str, Any]:
    """Before/after a dashboard's split date drawn as two series: per category of the chart's
    ``x`` (or one pair for a KPI) a bar before and a bar after, side by side."""
    enc = dict(chart.encoding)
    measure = (enc.get("y") or enc.get("value") or enc.get("theta")
               or next((c for c in after.columns if c not in enc.values()), after.columns[-1]))
    x = enc.get("x") or enc.get("color")
    if x == measure:
        x = None
    rows = []
    for label, table in zip(labels, (before, after), strict=True):
        for row in table.rows:
            value = row.get(measure)
            group = str(row.get(x, "")) if x else label
            # every bar's text alternative (axe svg-img-alt): "心内科 · 之前：8.5"
            rows.append({"period": label, "group": group, "value": value,
                         "label": f"{group} · {label}: {_one_decimal(value)}"})
    period = titles.get("period", "")
    base = alt.Chart(alt.Data(values=rows)).mark_bar()
    drawn = base.encode(
        description=alt.Description("label:N"),
        x=alt.X("group:N", title=_t(titles, x) if x else None),
        xOffset=alt.XOffset("period:N", sort=list(labels)),
        y=alt.Y("value:Q", title=_t(titles, measure)),
        color=alt.Color("period:N", sort=list(labels), title=period or None),
        tooltip=[alt.Tooltip("group:N", title=_t(titles, x) if x else period or None),
                 alt.Tooltip("period:N", title=period or None),
                 alt.Tooltip("value:Q", title=_t(titles, measure), format=".1f")])
    return _config(drawn, title, responsive)


def _one_decimal(value: Any) -> str:
    """A bar's value in its text alternative; none (below the minimum sample) as a dash."""
    if value is None:
        return "—"
    return f"{value:.1f}" if isinstance(value, int | float) else str(value)


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


WORDCLOUD_SIZE = (500, 300)


def wordcloud_layout(rows: list[dict[str, Any]], text: str, size: str,
                     font_file: str | None) -> list[dict[str, Any]]:
    """Place the words (the ``wordcloud`` library's collision-free spiral layout, measured with
    the CJK font itself): ``{text, size, x, y, fontSize}`` per word that fits."""
    freqs = {str(r[text]): float(r[size]) for r in rows if r.get(text) and r.get(size)}
    if not freqs:
        return []
    from wordcloud import WordCloud

    width, height = WORDCLOUD_SIZE
    cloud = WordCloud(font_path=font_file, width=width, height=height, prefer_horizontal=1.0,
                      max_words=len(freqs), min_font_size=12, max_font_size=56,
                      random_state=7, margin=4, mode="RGBA", background_color=None)
    cloud.generate_from_frequencies(freqs)
    return [{text: word, size: rows_count, "x": int(pos[1]), "y": int(pos[0]),
             "fontSize": int(font_size)}
            for (word, rows_count), font_size, pos, _orient, _colour in cloud.layout_]


def wordcloud_vega(rows: list[dict[str, Any]], text: str, size: str,
                   title: str) -> dict[str, Any]:
    """A Vega spec of positioned text marks: the layout is computed here, not by Vega's
    ``wordcloud`` transform, which needs a browser canvas — server-side (PNG/PDF exports) it
    drew nothing. The same picture is drawn on screen and in every export."""
    from careloop.reports.export import cjk_font_file

    placed = wordcloud_layout(rows, text, size, str(cjk_font_file()))
    width, height = WORDCLOUD_SIZE
    return {
        "$schema": "https://vega.github.io/schema/vega/v5.json",
        "width": width, "height": height, "padding": 5, "title": title,
        "config": {"text": {"font": FONT}, "title": {"font": FONT}},
        "data": [{"name": "words", "values": placed}],
        "scales": [{"name": "color", "type": "ordinal", "domain": {"data": "words",
                                                                   "field": text},
                    "range": {"scheme": "tableau10"}}],
        "marks": [{
            "type": "text", "from": {"data": "words"},
            "encode": {"enter": {
                "text": {"field": text}, "x": {"field": "x"}, "y": {"field": "y"},
                "fontSize": {"field": "fontSize"}, "align": {"value": "left"},
                "baseline": {"value": "top"}, "font": {"value": FONT},
                "fill": {"scale": "color", "field": text},
                "tooltip": {"signal": f"datum.{text} + ': ' + datum.{size}"}}},
        }],
    }

