"""Printable PDFs, built from a few shared blocks: the CJK font, a title, headings, paragraphs,
label/value pairs, tables and simple charts drawn with fpdf2's own lines and rectangles.

    doc = PdfReport("阶段健康总结", subtitle="心内科 · 2026-12-07",
                    footer="打印时间：2026-12-07 10:00")
    doc.heading("评分")
    doc.table(["时间", "问卷", "得分", "分级"], [["2026-12-01 09:00", "PHQ-9", "13", "中度"]])
    doc.line_chart([ChartSeries("PHQ-9", points)], x_label=lambda at: "12-01",
                   bands=[ChartBand("中度", 10, 14)])
    pdf_bytes = doc.output()

Every string a block receives is already in the reader's words and the hospital's local time:
the blocks know nothing of codes, locales or clocks. Text is set in Noto Sans CJK SC (the face of
``fonts-noto-cjk``'s collection :func:`careloop.reports.export.cjk_font_file` finds), so Chinese
prints as characters, never as boxes.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

from careloop.reports.export import CJK_FAMILY, cjk_font_file

FAMILY = "cjk"
SC_INDEX_FALLBACK = 2  # Noto Sans CJK's collection order is JP, KR, SC, TC, HK
INK = (33, 37, 41)
ACCENT = (31, 95, 168)
MUTED = (108, 117, 125)
RULE = (206, 212, 218)
PALETTE = ("#1f5fa8", "#2a9d8f", "#b5651d", "#6a4c93", "#c0392b", "#5d6d7e")
BAND_FILLS = ((232, 245, 233), (255, 249, 219), (255, 236, 217), (253, 226, 226),
              (240, 228, 247), (228, 238, 250))


@cache
def face_index(font: Path) -> int:
    """The index of "Noto Sans CJK SC" in a font collection (``fc-query``), else 2."""
    if font.suffix.lower() != ".ttc":
        return 0
    try:
        found = subprocess.run(["fc-query", "-f", "%{index}\t%{family}\n", str(font)],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return SC_INDEX_FALLBACK
    for line in found.stdout.splitlines():
        index, _, families = line.partition("\t")
        if CJK_FAMILY in families.split(",") and index.isdigit():
            return int(index)
    return SC_INDEX_FALLBACK


def _rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


@dataclass(frozen=True, slots=True)
class ChartSeries:
    """One line of a chart: its name in the legend, its points (when, value), its colour."""

    name: str
    points: Sequence[tuple[datetime, float]]
    color: str = ""


@dataclass(frozen=True, slots=True)
class ChartBand:
    """A shaded range behind a chart (a score's band, a target range), with its name."""

    name: str
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float


class _Document(FPDF):
    """fpdf2's document with the report's footer (page n / N and the footer text)."""

    footer_text: str = ""
    page_words: str = "{page} / {pages}"

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FAMILY, size=8)
        self.set_text_color(*MUTED)
        page = self.page_words.format(page=self.page_no(), pages="{nb}")
        self.cell(0, 6, f"{self.footer_text}    {page}", align="R")


@dataclass
class PdfReport:
    """An A4 report being written top to bottom; :meth:`output` gives the PDF bytes."""

    title: str
    subtitle: str = ""
    footer: str = ""
    page_words: str = "{page} / {pages}"
    _pdf: _Document = field(init=False, repr=False)

    def __post_init__(self) -> None:
        font = cjk_font_file()
        pdf = _Document(format="A4")
        pdf.footer_text = self.footer
        pdf.page_words = self.page_words
        pdf.set_title(self.title)
        pdf.set_creator("Careloop")
        # one face only: reading and subsetting a CJK face costs about a second each, so
        # headings stand out by size and colour rather than by a second (bold) face
        pdf.add_font(FAMILY, "", str(font), collection_font_number=face_index(font))
        pdf.set_auto_page_break(True, margin=18)
        pdf.set_margins(16, 16, 16)
        pdf.add_page()
        self._pdf = pdf
        pdf.set_text_color(*INK)
        pdf.set_font(FAMILY, "", 18)
        pdf.multi_cell(0, 10, self.title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if self.subtitle:
            pdf.set_font(FAMILY, size=10)
            pdf.set_text_color(*MUTED)
            pdf.multi_cell(0, 6, self.subtitle, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.set_text_color(*INK)
        self._rule()

    @property
    def width(self) -> float:
        return float(self._pdf.w - self._pdf.l_margin - self._pdf.r_margin)

    def _rule(self) -> None:
        pdf = self._pdf
        pdf.ln(2)
        pdf.set_draw_color(*RULE)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.ln(3)

    def _room(self, height: float) -> None:
        """Start a new page when ``height`` millimetres do not fit on this one."""
        pdf = self._pdf
        if pdf.get_y() + height > pdf.h - pdf.b_margin:
            pdf.add_page()

    def heading(self, text: str) -> None:
        self._room(20)
        pdf = self._pdf
        pdf.ln(2)
        pdf.set_font(FAMILY, "", 13)
        pdf.set_text_color(*ACCENT)
        pdf.multi_cell(0, 8, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(*INK)
        pdf.ln(1)

    def paragraph(self, text: str, *, muted: bool = False, size: float = 10) -> None:
        pdf = self._pdf
        pdf.set_font(FAMILY, size=size)
        pdf.set_text_color(*(MUTED if muted else INK))
        pdf.multi_cell(0, size * 0.6, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(*INK)
        pdf.ln(1)

    def key_values(self, pairs: Sequence[tuple[str, str]], *, columns: int = 2) -> None:
        """Label/value pairs in ``columns`` columns (the patient's card, a report's figures)."""
        pdf = self._pdf
        col = self.width / columns
        for i, (name, value) in enumerate(pairs):
            if i % columns == 0:
                self._room(7)
                x0 = pdf.l_margin
            pdf.set_xy(x0 + col * (i % columns), pdf.get_y())
            pdf.set_font(FAMILY, size=9)
            pdf.set_text_color(*MUTED)
            pdf.cell(col * 0.38, 7, name)
            pdf.set_font(FAMILY, "", 10)
            pdf.set_text_color(*INK)
            pdf.cell(col * 0.62, 7, value)
            if i % columns == columns - 1 or i == len(pairs) - 1:
                pdf.ln(7)
        pdf.ln(1)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], *,
              widths: Sequence[float] | None = None, empty: str = "") -> None:
        """A table with a shaded header row; ``widths`` are relative column widths."""
        pdf = self._pdf
        if not rows:
            if empty:
                self.paragraph(empty, muted=True)
            return
        pdf.set_font(FAMILY, size=9)
        pdf.set_draw_color(*RULE)
        pdf.set_fill_color(255, 255, 255)  # a chart's colour must not fill the rows
        pdf.set_text_color(*INK)
        with pdf.table(col_widths=tuple(widths) if widths else None, line_height=6,
                       headings_style=_heading_style(), text_align="LEFT",
                       first_row_as_headings=True) as table:
            for cells in [list(headers), *[list(r) for r in rows]]:
                row = table.row()
                for cell in cells:
                    row.cell(cell)
        pdf.ln(3)

    def line_chart(self, series: Sequence[ChartSeries], *, x_label: Callable[[datetime], str],
                   bands: Sequence[ChartBand] = (), unit: str = "", height: float = 55,
                   low: float | None = None, high: float | None = None,
                   title: str = "") -> None:
        """Lines over time with dots, y ticks, up to three date labels, shaded bands, a legend
        and (kept on the same page) a ``title`` above."""
        points = [p for s in series for p in s.points]
        if not points:
            return
        self._room(height + 22)
        if title:
            self.paragraph(title, size=9)
        pdf = self._pdf
        left, top = pdf.l_margin + 12, pdf.get_y() + (6 if unit else 2)
        width, plot_h = self.width - 14, height - 10
        values = [v for _, v in points] + [b for band in bands
                                           for b in (band.low, band.high) if b is not None]
        y_low = min(values) if low is None else min(low, min(values))
        y_high = max(values) if high is None else max(high, max(values))
        if y_high - y_low < 1e-9:
            y_low, y_high = y_low - 1, y_high + 1
        start, end = min(p[0] for p in points), max(p[0] for p in points)
        span = max((end - start).total_seconds(), 1.0)

        def x(at: datetime) -> float:
            if start == end:
                return left + width / 2
            return left + width * (at - start).total_seconds() / span

        def y(value: float) -> float:
            return top + plot_h * (1 - (value - y_low) / (y_high - y_low))

        pdf.set_font(FAMILY, size=7)
        for i, band in enumerate(bands):
            b_high = min(band.high if band.high is not None else y_high, y_high)
            b_low = max(band.low if band.low is not None else y_low, y_low)
            if b_high <= b_low:
                continue
            pdf.set_fill_color(*BAND_FILLS[i % len(BAND_FILLS)])
            pdf.rect(left, y(b_high), width, y(b_low) - y(b_high), style="F")
            pdf.set_text_color(*MUTED)
            pdf.set_xy(left + width - 40, y(b_high))
            pdf.cell(39, 4, band.name, align="R")
        pdf.set_draw_color(*RULE)
        pdf.set_text_color(*MUTED)
        for i in range(5):
            value = y_low + (y_high - y_low) * i / 4
            pdf.line(left, y(value), left + width, y(value))
            pdf.set_xy(pdf.l_margin - 2, y(value) - 2)
            pdf.cell(13, 4, f"{value:g}" if value == int(value) else f"{value:.1f}", align="R")
        dates = sorted({start, end, start + (end - start) / 2}) if start != end else [start]
        shown: set[str] = set()
        for at in dates:
            text = x_label(at)
            if text in shown:
                continue
            shown.add(text)
            pdf.set_xy(x(at) - 15, top + plot_h + 1)
            pdf.cell(30, 4, text, align="C")
        if unit:
            pdf.set_xy(pdf.l_margin - 2, top - 6)
            pdf.cell(20, 4, unit)
        for i, s in enumerate(series):
            color = _rgb(s.color or PALETTE[i % len(PALETTE)])
            pdf.set_draw_color(*color)
            pdf.set_fill_color(*color)
            pdf.set_line_width(0.5)
            ordered = sorted(s.points)
            for (a, va), (b, vb) in itertools.pairwise(ordered):
                pdf.line(x(a), y(va), x(b), y(vb))
            for at, value in ordered:
                pdf.ellipse(x(at) - 0.9, y(value) - 0.9, 1.8, 1.8, style="F")
        pdf.set_line_width(0.2)
        pdf.set_y(top + plot_h + 6)
        self._legend([(s.name, s.color or PALETTE[i % len(PALETTE)])
                      for i, s in enumerate(series)])

    def bar_chart(self, bars: Sequence[Bar], *, unit: str = "", height: float = 45,
                  color: str = PALETTE[0], title: str = "") -> None:
        """Vertical bars with their values above, their labels below, ``title`` above."""
        if not bars:
            return
        self._room(height + 18)
        if title:
            self.paragraph(title, size=9)
        pdf = self._pdf
        left, top = pdf.l_margin + 4, pdf.get_y() + 4
        width, plot_h = self.width - 8, height - 12
        peak = max(max(b.value for b in bars), 1e-9)
        slot = width / len(bars)
        pdf.set_font(FAMILY, size=7)
        pdf.set_text_color(*MUTED)
        if unit:
            pdf.set_xy(pdf.l_margin, top - 5)
            pdf.cell(30, 4, unit)
        pdf.set_fill_color(*_rgb(color))
        for i, bar in enumerate(bars):
            h = plot_h * max(bar.value, 0) / peak
            x0 = left + slot * i + slot * 0.2
            pdf.rect(x0, top + plot_h - h, slot * 0.6, h, style="F")
            pdf.set_xy(x0 - slot * 0.2, top + plot_h - h - 4)
            pdf.cell(slot, 4, f"{bar.value:g}", align="C")
            pdf.set_xy(x0 - slot * 0.2, top + plot_h + 1)
            pdf.cell(slot, 4, bar.label, align="C")
        pdf.set_draw_color(*RULE)
        pdf.line(left, top + plot_h, left + width, top + plot_h)
        pdf.set_text_color(*INK)
        pdf.set_y(top + plot_h + 8)

    def _legend(self, items: Sequence[tuple[str, str]]) -> None:
        pdf = self._pdf
        pdf.set_font(FAMILY, size=8)
        pdf.set_text_color(*INK)
        x = pdf.l_margin + 12
        for name, color in items:
            pdf.set_fill_color(*_rgb(color))
            pdf.rect(x, pdf.get_y() + 1.8, 6, 1.2, style="F")
            pdf.set_xy(x + 7, pdf.get_y())
            text_w = pdf.get_string_width(name) + 6
            pdf.cell(text_w, 5, name)
            x += 7 + text_w
        pdf.ln(7)

    def output(self) -> bytes:
        return bytes(self._pdf.output())


def _heading_style() -> FontFace:
    return FontFace(family=FAMILY, fill_color=(241, 243, 245))
