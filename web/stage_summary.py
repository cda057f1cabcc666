"""The patient's stage summary (阶段健康总结) as a printable PDF.

    patient 360 ──"打印阶段总结"──▶ GET /patients/{id}/summary.pdf  (staff copy, audited)
    patient 360 ──"发送给患者"──▶ POST /patients/{id}/summary/send ──▶ flows.summaries.send
                                   (the patient's copy, name masked, kept with its link)

:func:`gather` reads what the viewer may see of one patient over a period (stays in sensitive
departments that are not the viewer's are left out, as on patient 360); :func:`render` writes it
with the shared blocks of :mod:`careloop.reports.pdf`:

* scores over time — each instrument score with its band in words, and a chart per score drawn
  against its bands;
* blood pressure and glucose — the HIS's and the patient's own readings, charted against the
  targets patient 360 uses, and the laboratory results with their flags in words;
* follow-ups done — forms answered and tasks completed (calls) with their outcome in words;
* advice given — the notes staff recorded with each completed follow-up.

Every label comes from the definitions (form titles, score and band labels) or the catalogue;
every time is the hospital's local time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.domain import Encounter, Patient, Task
from careloop.engine.hospital import hospital_name
from careloop.engine.i18n import pick, t
from careloop.engine.privacy import mask_id_number, mask_in_text, mask_phone
from careloop.reports.pdf import ChartBand, ChartSeries, PdfReport
from careloop.web.display import Display, local_time, number
from careloop.web.patient360 import GLUCOSE_TARGET, readings
from careloop.web.permissions import HiddenStays

DEFAULT_MONTHS = 6
LIMIT = 200


def mask_name(name: str | None) -> str:
    """The patient's name as a copy that may travel shows it: the family name, the rest masked.

        >>> mask_name("张三丰")
        '张**'
        >>> mask_name("Eve Everywoman")
        'E*************'
    """
    text = (name or "").strip()
    return text[:1] + "*" * (len(text) - 1) if text else ""


@dataclass(frozen=True, slots=True)
class ScoreRow:
    at: datetime
    form: str
    version: int | None
    key: str
    value: float
    band: str | None


@dataclass
class Summary:
    """What one viewer may see of one patient over ``since`` .. ``until`` (UTC instants)."""

    patient: Patient
    since: datetime
    until: datetime
    departments: list[str] = field(default_factory=list)
    scores: list[ScoreRow] = field(default_factory=list)
    bp: list[tuple[datetime, float, float]] = field(default_factory=list)
    glucose: list[tuple[datetime, float]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)  # flows.results.Result
    forms_answered: list[tuple[datetime, str, str]] = field(default_factory=list)
    calls: list[tuple[datetime, str, str | None, str | None]] = field(default_factory=list)


def period_start(until: datetime, months: int) -> datetime:
    """``months`` back from ``until`` (30-day months; 0 = everything)."""
    return datetime(2000, 1, 1, tzinfo=until.tzinfo) if months <= 0 \
        else until - timedelta(days=30 * months)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def gather(session: Session, patient: Patient, hidden: HiddenStays, *, since: datetime,
           until: datetime | None = None) -> Summary:
    """The rows of the summary, oldest first, each already checked against ``hidden``."""
    from careloop.flows.results import results_for
    from careloop.forms.models import FormRequest, Submission

    until = until or now_utc()
    s = Summary(patient=patient, since=since, until=until)
    stays = session.scalars(select(Encounter).where(Encounter.patient_id == patient.id)).all()
    s.departments = sorted({e.department_id for e in stays
                            if e.department_id and not hidden.hides(e.id, e.department_id)})
    subs = session.scalars(select(Submission).where(
        Submission.patient_id == patient.id, Submission.submitted_at >= since,
        Submission.submitted_at <= until).order_by(Submission.submitted_at, Submission.id)
        .limit(LIMIT)).all()
    for sub in subs:
        if hidden.hides(sub.encounter_id, sub.department_id):
            continue
        for key, value in (sub.scores or {}).items():
            if (v := _number(value)) is not None:
                s.scores.append(ScoreRow(sub.submitted_at, sub.form_key, sub.form_version, key,
                                         v, (sub.bands or {}).get(key)))
    for r in readings(session, patient.id, "blood_pressure", hidden):
        value = r["value"] if isinstance(r["value"], dict) else {}
        sys_, dia = _number(value.get("systolic")), _number(value.get("diastolic"))
        if since <= r["at"] <= until and sys_ is not None and dia is not None:
            s.bp.append((r["at"], sys_, dia))
    for r in readings(session, patient.id, "glucose", hidden):
        value = r["value"].get("value") if isinstance(r["value"], dict) else r["value"]
        if since <= r["at"] <= until and (v := _number(value)) is not None:
            s.glucose.append((r["at"], v))
    s.results = [r for r in results_for(session, patient.id)
                 if since <= r.observed_at <= until and not hidden.hides(r.encounter_id)][::-1]
    answered = session.scalars(select(FormRequest).where(
        FormRequest.patient_id == patient.id, FormRequest.answered_at.is_not(None),
        FormRequest.answered_at >= since, FormRequest.answered_at <= until)
        .order_by(FormRequest.answered_at).limit(LIMIT)).all()
    s.forms_answered = [(r.answered_at, r.form_key, r.channel) for r in answered
                        if r.answered_at is not None and not hidden.hides(r.encounter_id)]
    done = session.scalars(select(Task).where(
        Task.patient_id == patient.id, Task.status == "done", Task.completed_at.is_not(None),
        Task.completed_at >= since, Task.completed_at <= until)
        .order_by(Task.completed_at).limit(LIMIT)).all()
    s.calls = [(task.completed_at, task.title, task.outcome, task.notes) for task in done
               if task.completed_at is not None
               and not hidden.hides(task.encounter_id, task.department_id)]
    return s


def render(session: Session, s: Summary, locale: str, *, for_patient: bool = False) -> bytes:
    """The summary as PDF bytes in ``locale``; ``for_patient`` masks the name (a sent copy)."""
    d = Display(locale, session)
    printed = local_time(now_utc())
    doc = PdfReport(t("pdf.summary.title", locale),
                    subtitle=t("pdf.summary.subtitle", locale, hospital=hospital_name(locale),
                               start=local_time(s.since, "date"),
                               end=local_time(s.until, "date")),
                    footer=t("pdf.printed_at", locale, at=printed),
                    page_words=t("pdf.page", locale))
    _card(doc, d, s, for_patient)
    _scores(doc, d, s)
    _readings(doc, d, s)
    _followups(doc, d, s)
    _advice(doc, d, s)
    doc.paragraph(t("pdf.summary.note", locale), muted=True, size=8)
    return doc.output()


def _card(doc: PdfReport, d: Display, s: Summary, for_patient: bool) -> None:
    p, loc = s.patient, d.locale
    name = mask_name(p.name) if for_patient else (p.name or "")
    age = ""
    if p.birth_date is not None:
        today = date.fromisoformat(local_time(s.until, "date"))
        years = today.year - p.birth_date.year - (
            (today.month, today.day) < (p.birth_date.month, p.birth_date.day))
        age = t("pdf.summary.years", loc, n=years)
    pairs = [(t("pdf.summary.name", loc), name),
             (t("pdf.summary.mrn", loc), p.mrn or ""),
             (t("pdf.summary.gender", loc), d.label("gender", p.gender) if p.gender else ""),
             (t("pdf.summary.age", loc), age),
             (t("pdf.summary.phone", loc), mask_phone(p.phone) or ""),
             (t("pdf.summary.id_number", loc), mask_id_number(p.id_number) or ""),
             (t("pdf.summary.departments", loc),
              "、".join(d.label("department", x) for x in s.departments))]
    doc.key_values([(k, v or t("pdf.none_short", loc)) for k, v in pairs])


def _scores(doc: PdfReport, d: Display, s: Summary) -> None:
    loc = d.locale
    doc.heading(t("pdf.summary.scores", loc))
    rows = [[local_time(r.at), d.label("form", r.form),
             d.label("score", r.key, form=r.form, version=r.version),
             d.score(r.form, r.key, r.value, r.version),
             d.label("band", r.band, form=r.form, version=r.version, score=r.key)
             if r.band else ""] for r in s.scores]
    doc.table([t("pdf.when", loc), t("pdf.summary.form", loc), t("pdf.summary.score", loc),
               t("pdf.summary.value", loc), t("pdf.summary.band", loc)], rows,
              widths=(22, 30, 18, 10, 20), empty=t("pdf.summary.no_scores", loc))
    series: dict[tuple[str, str], list[ScoreRow]] = {}
    for r in s.scores:
        series.setdefault((r.form, r.key), []).append(r)
    for (form, key), found in series.items():
        if len(found) < 2:
            continue  # one answer is a row, not a trend
        spec = d.spec("form", form)
        score = next((x for x in getattr(spec, "scores", ()) if x.key == key), None)
        if score is None or not score.bands:
            continue  # a trend is read against its bands (as on patient 360)
        bands = [ChartBand(pick(b.label, loc), b.min, b.max) for b in score.bands]
        doc.line_chart([ChartSeries(d.label("score", key, form=form),
                                    [(r.at, r.value) for r in found])],
                       x_label=lambda at: local_time(at, "date"), bands=bands,
                       title=f"{d.label('form', form)} · {d.label('score', key, form=form)}")


def _readings(doc: PdfReport, d: Display, s: Summary) -> None:
    from careloop.flows import results as lab

    loc = d.locale
    doc.heading(t("pdf.summary.vitals", loc))
    if s.bp:
        doc.line_chart([ChartSeries(t("web.pages.systolic", loc), [(a, v) for a, v, _ in s.bp],
                                    "#1f5fa8"),
                        ChartSeries(t("web.pages.diastolic", loc),
                                    [(a, v) for a, _, v in s.bp], "#2a9d8f")],
                       x_label=lambda at: local_time(at, "date"), unit="mmHg", low=60, high=160,
                       bands=[ChartBand(t("pdf.summary.target_range", loc), 90, 140)],
                       title=t("web.pages.bp", loc))
        doc.table([t("pdf.when", loc), t("web.pages.bp", loc)],
                  [[local_time(a), f"{number(x)}/{number(y)} mmHg"] for a, x, y in s.bp[-10:]],
                  widths=(1, 1))
    if s.glucose:
        doc.line_chart([ChartSeries(t("web.pages.glucose", loc), s.glucose, "#b5651d")],
                       x_label=lambda at: local_time(at, "date"), unit="mmol/L", low=3,
                       high=10, bands=[ChartBand(t("pdf.summary.target_range", loc),
                                                 GLUCOSE_TARGET["low"], GLUCOSE_TARGET["high"])],
                       title=t("web.pages.glucose", loc))
        doc.table([t("pdf.when", loc), t("web.pages.glucose", loc)],
                  [[local_time(a), f"{number(v)} mmol/L"] for a, v in s.glucose[-10:]],
                  widths=(1, 1))
    if s.results:
        doc.paragraph(t("pdf.summary.lab", loc), size=9)
        doc.table([t("lis.when", loc), t("lis.item", loc), t("lis.value", loc),
                   t("lis.range", loc), t("lis.flag", loc)],
                  [[local_time(r.observed_at), lab.label(r, loc), lab.value_text(r),
                    r.reference_range or "", lab.flag_words(r.flag, loc)] for r in s.results],
                  widths=(22, 30, 16, 16, 12))
    if not (s.bp or s.glucose or s.results):
        doc.paragraph(t("pdf.summary.no_vitals", loc), muted=True)


def _followups(doc: PdfReport, d: Display, s: Summary) -> None:
    loc = d.locale
    doc.heading(t("pdf.summary.followups", loc))
    rows = [(at, d.label("form", form), t("pdf.summary.answered_by", loc,
                                           channel=d.label("channel", channel)))
            for at, form, channel in s.forms_answered]
    rows += [(at, title, d.label("outcome", outcome) if outcome else t("pdf.summary.done", loc))
             for at, title, outcome, _ in s.calls]
    rows.sort(key=lambda r: r[0])
    doc.table([t("pdf.when", loc), t("pdf.summary.followup", loc),
               t("pdf.summary.outcome", loc)],
              [[local_time(at), what, outcome] for at, what, outcome in rows],
              widths=(22, 40, 30), empty=t("pdf.summary.no_followups", loc))


def _advice(doc: PdfReport, d: Display, s: Summary) -> None:
    loc = d.locale
    doc.heading(t("pdf.summary.advice", loc))
    rows = [[local_time(at), title, mask_in_text(notes)[0]]
            for at, title, _, notes in s.calls if notes and notes.strip()]
    doc.table([t("pdf.when", loc), t("pdf.summary.followup", loc),
               t("pdf.summary.advice_text", loc)], rows, widths=(22, 28, 50),
              empty=t("pdf.summary.no_advice", loc))
