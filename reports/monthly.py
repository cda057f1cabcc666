"""The department monthly report (科室月报) as a PDF, from the report engine's own datasets.

    figures(session, "cardiology", date(2026, 12, 1), scope)
      followup_reach        (form_requests)  sent · response rate · completion rate
      satisfaction_kpis     (submissions)    responses · NPS · CSAT
      satisfaction_trend_month               average overall score per month, six months
      complaint_deadlines   (tasks)          complaints · on-time replies · still overdue · hours
    render(figures, "zh-CN", "心内科") ──▶ PDF bytes

Every dataset runs with the department as its filter *and* the reader's scope, so a department
head asking for another department's report gets :class:`ReportError`, never its figures.
Aggregates only: the report names no patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.hospital import hospital_name
from careloop.engine.i18n import t
from careloop.reports.dialect import ReportError
from careloop.reports.pdf import Bar, ChartSeries, PdfReport
from careloop.reports.query import Filters, Scope
from careloop.reports.runtime import load_spec, run_cached
from careloop.reports.spec import DatasetSpec

TREND_MONTHS = 6
DATASETS = ("followup_reach", "satisfaction_kpis", "satisfaction_trend_month",
            "complaint_deadlines")


class OutOfScope(ReportError):
    """Raised when the reader may not see the department asked for."""


@dataclass
class Figures:
    """One department's month in numbers (``None``: no data, or too few answers to show)."""

    department: str
    month: date
    sent: float | None = None
    response_rate: float | None = None
    completion_rate: float | None = None
    responses: float | None = None
    nps: float | None = None
    csat: float | None = None
    trend: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    complaints: float | None = None
    on_time_rate: float | None = None
    overdue: float | None = None
    mean_response_hours: float | None = None


def parse_month(text: str) -> date:
    """``"2026-12"`` → 2026-12-01.

    Raises:
        ReportError: naming the field ``month`` for anything else.
    """
    try:
        year, month = text.split("-")
        return date(int(year), int(month), 1)
    except ValueError as exc:
        raise ReportError(f"month: expected YYYY-MM, got {text[:20]!r}") from exc


def month_end(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _months_back(first: date, n: int) -> date:
    year, month = first.year, first.month - n
    while month <= 0:
        year, month = year - 1, month + 12
    return date(year, month, 1)


def _first(session: Session, key: str, filters: Filters, scope: Scope) -> dict[str, Any]:
    spec = load_spec(session, "dataset", key, DatasetSpec)
    result = run_cached(session, spec, filters=filters, scope=scope, dimensions=())
    return result.rows[0] if result.rows else {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def figures(session: Session, department: str, month: date, scope: Scope) -> Figures:
    """The month's figures of one department the reader may see.

    Raises:
        OutOfScope: when ``department`` is outside ``scope``.
        ReportError: when a dataset is not stored (its bundle not imported).
    """
    if scope is not None and department not in scope:
        raise OutOfScope(f"department: {department!r} is not one you may see")
    f = Filters(date_from=month, date_to=month_end(month), departments=(department,))
    out = Figures(department=department, month=month)
    reach = _first(session, "followup_reach", f, scope)
    out.sent, out.response_rate, out.completion_rate = (
        _num(reach.get("sent")), _num(reach.get("response_rate")),
        _num(reach.get("completion_rate")))
    kpis = _first(session, "satisfaction_kpis", f, scope)
    out.responses, out.nps, out.csat = (_num(kpis.get("responses")), _num(kpis.get("nps")),
                                        _num(kpis.get("csat")))
    complaints = _first(session, "complaint_deadlines", f, scope)
    out.complaints, out.on_time_rate, out.overdue, out.mean_response_hours = (
        _num(complaints.get("complaints")), _num(complaints.get("on_time_rate")),
        _num(complaints.get("overdue")), _num(complaints.get("mean_response_hours")))
    trend_spec = load_spec(session, "dataset", "satisfaction_trend_month", DatasetSpec)
    trend = run_cached(session, trend_spec, scope=scope, filters=Filters(
        date_from=_months_back(month, TREND_MONTHS - 1), date_to=month_end(month),
        departments=(department,)))
    out.trend = sorted((str(r.get("month")), _num(r.get("avg_overall")), _num(r.get("nps")))
                       for r in trend.rows if r.get("month"))
    return out


def _pct(value: float | None, locale: str) -> str:
    return t("pdf.no_data", locale) if value is None else f"{value:.1f}%"


def _count(value: float | None, locale: str) -> str:
    return "0" if value is None else f"{value:g}"


def _plain(value: float | None, locale: str, digits: int = 1) -> str:
    return t("pdf.no_data", locale) if value is None else f"{value:.{digits}f}"


def render(fig: Figures, locale: str, department_name: str, printed_at: str) -> bytes:
    """The report as PDF bytes; ``printed_at`` is the hospital's local time of printing."""
    month = f"{fig.month.year}-{fig.month.month:02d}"
    doc = PdfReport(t("pdf.monthly.title", locale, department=department_name, month=month),
                    subtitle=t("pdf.monthly.subtitle", locale, hospital=hospital_name(locale),
                               start=fig.month.isoformat(), end=month_end(fig.month).isoformat()),
                    footer=t("pdf.printed_at", locale, at=printed_at),
                    page_words=t("pdf.page", locale))
    doc.heading(t("pdf.monthly.volumes", locale))
    doc.key_values([
        (t("pdf.monthly.sent", locale), _count(fig.sent, locale)),
        (t("pdf.monthly.response_rate", locale), _pct(fig.response_rate, locale)),
        (t("pdf.monthly.completion_rate", locale), _pct(fig.completion_rate, locale)),
        (t("pdf.monthly.responses", locale), _count(fig.responses, locale))])
    doc.heading(t("pdf.monthly.satisfaction", locale))
    doc.key_values([(t("pdf.monthly.nps", locale), _plain(fig.nps, locale)),
                    (t("pdf.monthly.csat", locale), _pct(fig.csat, locale))])
    points = [(datetime.combine(parse_month(m), datetime.min.time()), v)
              for m, v, _ in fig.trend if v is not None]
    if len(points) >= 2:
        doc.line_chart([ChartSeries(t("pdf.monthly.avg_overall", locale), points)],
                       x_label=lambda at: at.strftime("%Y-%m"), low=1, high=5,
                       title=t("pdf.monthly.trend", locale))
    elif points:
        doc.bar_chart([Bar(m, v) for m, v, _ in fig.trend if v is not None],
                      title=t("pdf.monthly.trend", locale))
    doc.table([t("pdf.monthly.month", locale), t("pdf.monthly.avg_overall", locale),
               t("pdf.monthly.nps", locale)],
              [[m, _plain(v, locale, 2), _plain(n, locale)] for m, v, n in fig.trend],
              widths=(1, 1, 1), empty=t("pdf.monthly.no_trend", locale))
    doc.heading(t("pdf.monthly.complaints", locale))
    doc.key_values([
        (t("pdf.monthly.complaint_count", locale), _count(fig.complaints, locale)),
        (t("pdf.monthly.on_time", locale), _pct(fig.on_time_rate, locale)),
        (t("pdf.monthly.overdue", locale), _count(fig.overdue, locale)),
        (t("pdf.monthly.hours", locale), _plain(fig.mean_response_hours, locale))])
    doc.paragraph(t("pdf.monthly.note", locale), muted=True, size=8)
    return doc.output()


def default_month(now: datetime | None = None) -> date:
    """The last whole month, on the hospital's calendar."""
    first = (now or now_utc()).astimezone(hospital_tz()).date().replace(day=1)
    return _months_back(first, 1)
