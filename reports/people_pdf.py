"""The monthly people report of one department as a PDF (fpdf2, the Noto Sans CJK SC face).

    pdf_bytes(report, "zh-CN")  ──▶  b"%PDF-1.4 …"   (A4: the doctors, the nursing groups,
                                                     the department comparison)

A person below the minimum sample has one line, their name and 样本不足: no figure of theirs is
drawn (:mod:`careloop.reports.people`).
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

from fpdf import FPDF

from careloop.engine.clock import now_utc, to_local
from careloop.engine.hospital import hospital_name
from careloop.engine.i18n import t
from careloop.reports.export import cjk_font_file
from careloop.reports.people import PeopleReport, PersonFigures

FAMILY = "NotoSansCJK"
SC_FACE = "Noto Sans CJK SC"
DASH = "—"
# column widths (mm) of the people tables: rank, name, answers, mean, top-box, NPS, complaints
WIDTHS = (14, 46, 22, 26, 26, 20, 26)


@cache
def sc_index(font: Path) -> int:
    """The face number of Noto Sans CJK SC in a font collection (``.ttc``; 0 for a single face),
    read with fontconfig's ``fc-query`` (2 in Debian's NotoSansCJK-Regular.ttc)."""
    if font.suffix.lower() != ".ttc":
        return 0
    try:
        found = subprocess.run(["fc-query", "-f", "%{index}\t%{fullname}\n", str(font)],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 2
    for line in found.stdout.splitlines():
        index, _, names = line.partition("\t")
        if SC_FACE in names.split(",") and index.isdigit():
            return int(index)
    return 2


def number(value: float | int | None, kind: str) -> str:
    """``4.666`` → ``4.67`` (mean); ``66.6`` → ``67%`` (share); ``None`` → ``—``."""
    if value is None:
        return DASH
    if kind == "mean":
        return f"{value:.2f}"
    if kind == "percent":
        return f"{value:.0f}%"
    return f"{value:.0f}"


def _row(p: PersonFigures, locale: str) -> list[str]:
    if not p.shown:
        return [DASH, p.name, t("people.insufficient", locale), "", "", "", ""]
    return [str(p.rank or DASH), p.name, str(p.responses), number(p.satisfaction_mean, "mean"),
            number(p.top_box, "percent"), number(p.nps, "int"), number(p.complaints, "int")]


def _table(pdf: FPDF, header: list[str], rows: list[list[str]], widths: tuple[int, ...],
           locale: str) -> None:
    pdf.set_font(FAMILY, size=9)
    pdf.set_fill_color(230, 236, 245)
    for text, width in zip(header, widths, strict=True):
        pdf.cell(width, 7, text, border=1, align="C", fill=True)
    pdf.ln()
    if not rows:
        pdf.cell(sum(widths), 7, t("people.none", locale), border=1, align="C")
        pdf.ln()
    for row in rows:
        for index, (text, width) in enumerate(zip(row, widths, strict=True)):
            pdf.cell(width, 7, text, border=1, align="L" if index == 1 else "C")
        pdf.ln()
    pdf.ln(4)


def _people_section(pdf: FPDF, title: str, who: str, people: list[PersonFigures],
                    locale: str) -> None:
    pdf.set_font(FAMILY, size=12)
    pdf.cell(0, 9, title)
    pdf.ln()
    header = [t("people.col.rank", locale), t(f"people.col.{who}", locale),
              t("people.col.responses", locale), t("people.col.mean", locale),
              t("people.col.top_box", locale), t("people.col.nps", locale),
              t("people.col.complaints", locale)]
    _table(pdf, header, [_row(p, locale) for p in people], WIDTHS, locale)


def _comparison(pdf: FPDF, report: PeopleReport, locale: str) -> None:
    pdf.set_font(FAMILY, size=12)
    pdf.cell(0, 9, t("people.section.departments", locale))
    pdf.ln()
    widths = (60, 30, 30, 30, 30)
    header = [t("people.col.department", locale), t("people.col.responses", locale),
              t("people.col.mean", locale), t("people.col.top_box", locale),
              t("people.col.nps", locale)]
    lines = [*report.departments, *([report.hospital] if report.hospital else [])]
    rows = []
    for p in lines:
        name = p.name or t("people.hospital", locale)
        rows.append([name, t("people.insufficient", locale), "", "", ""] if not p.shown else
                    [name, str(p.responses), number(p.satisfaction_mean, "mean"),
                     number(p.top_box, "percent"), number(p.nps, "int")])
    _table(pdf, header, rows, widths, locale)


def pdf_bytes(report: PeopleReport, locale: str = "zh-CN") -> bytes:
    """The report as an A4 PDF."""
    font = cjk_font_file()
    pdf = FPDF(format="A4")
    pdf.set_title(t("people.pdf.title", locale, department=report.department,
                    month=f"{report.date_from:%Y-%m}"))
    pdf.add_font(FAMILY, fname=str(font), collection_font_number=sc_index(font))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font(FAMILY, size=16)
    pdf.cell(0, 10, t("people.pdf.title", locale, department=report.department,
                      month=f"{report.date_from:%Y-%m}"), align="C")
    pdf.ln()
    pdf.set_font(FAMILY, size=9)
    pdf.multi_cell(0, 5, t("people.pdf.intro", locale, hospital=hospital_name(locale),
                           start=report.date_from.isoformat(), end=report.date_to.isoformat(),
                           minimum=report.min_sample))
    pdf.ln(3)
    _people_section(pdf, t("people.section.doctors", locale), "doctor", report.doctors, locale)
    _people_section(pdf, t("people.section.nursing", locale), "nursing_group", report.nursing,
                    locale)
    _comparison(pdf, report, locale)
    pdf.set_font(FAMILY, size=8)
    pdf.multi_cell(0, 5, t("people.pdf.footer", locale,
                           at=f"{to_local(now_utc()):%Y-%m-%d %H:%M}"))
    return bytes(pdf.output())
