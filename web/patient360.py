"""The engines' sections of the patient 360 page and their JSON read-backs.

Each ``*_json`` function reads one patient's rows of one engine (submissions with scores, home
blood-pressure readings, messages and their delivery status, flow runs, rule traces); the
``panel_*`` functions render them as escaped HTML for ``registry.catalogue("patient_panel")``.
The caller (a ``@patient_level`` route) has already checked the patient is in the user's scope.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session

from careloop.engine.domain import Task
from careloop.engine.i18n import pick, t
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import Registry
from careloop.web.display import Display, as_instant, local_time, number, trace_sentences
from careloop.web.permissions import HiddenStays, Principal, hidden_stays
from careloop.web.render import PatientPanel

LIMIT = 100


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


NOTHING_HIDDEN = HiddenStays()


def submissions_json(session: Session, patient_id: str,
                     hidden: HiddenStays = NOTHING_HIDDEN) -> list[dict[str, Any]]:
    """The patient's submissions, newest first, with scores and bands (no answers); those of
    ``hidden`` (sensitive) stays are left out."""
    from careloop.forms.models import Submission

    rows = [s for s in session.scalars(
        select(Submission).where(Submission.patient_id == patient_id)
        .order_by(Submission.submitted_at.desc(), Submission.id.desc()).limit(LIMIT)).all()
        if not hidden.hides(s.encounter_id, s.department_id)]
    return [{"id": s.id, "form": s.form_key, "form_version": s.form_version,
             "channel": s.channel, "entered_by": s.entered_by, "status": s.status,
             "scores": s.scores, "bands": s.bands, "submitted_at": _iso(s.submitted_at),
             "proxy_relation": s.proxy_relation}
            for s in rows]


def bp_readings(session: Session, patient_id: str,
                hidden: HiddenStays = NOTHING_HIDDEN) -> list[dict[str, Any]]:
    """Home blood-pressure readings (``chronic_care/forms/home_bp``), oldest first."""
    from careloop.forms.models import Submission

    rows = session.scalars(select(Submission).where(
        Submission.patient_id == patient_id, Submission.form_key == "home_bp")
        .order_by(Submission.submitted_at).limit(365)).all()
    out = []
    for s in rows:
        if hidden.hides(s.encounter_id, s.department_id):
            continue
        bp = (s.answers or {}).get("bp")
        if isinstance(bp, dict) and isinstance(bp.get("systolic"), int | float) \
                and isinstance(bp.get("diastolic"), int | float):
            out.append({"at": _iso(s.submitted_at), "systolic": float(bp["systolic"]),
                        "diastolic": float(bp["diastolic"])})
    return out


def messages_json(session: Session, patient_id: str,
                  hidden: HiddenStays = NOTHING_HIDDEN) -> list[dict[str, Any]]:
    from careloop.flows.models import OutboxMessage

    rows = session.scalars(select(OutboxMessage).where(OutboxMessage.patient_id == patient_id)
                           .order_by(OutboxMessage.id.desc()).limit(LIMIT)).all()
    return [{"id": m.id, "template": m.template_key, "channel": m.channel, "status": m.status,
             "attempts": m.attempts, "created_at": _iso(m.created_at),
             "sent_at": _iso(m.sent_at)} for m in rows]


def flow_runs_json(session: Session, patient_id: str,
                   hidden: HiddenStays = NOTHING_HIDDEN) -> list[dict[str, Any]]:
    from careloop.flows.views import runs_json

    return [r for r in runs_json(session, patient_id=patient_id, limit=LIMIT)
            if not hidden.hides(r.get("encounter_id"))]


def rule_traces_json(session: Session, patient_id: str,
                     hidden: HiddenStays = NOTHING_HIDDEN) -> list[dict[str, Any]]:
    """The patient's rule evaluations, newest first; those about a hidden stay's submission or
    task are left out."""
    from careloop.forms.models import Submission
    from careloop.rules.runtime import trace_for_patient

    rows = trace_for_patient(session, patient_id)[-LIMIT:][::-1]
    if not hidden:
        return rows
    subs = {s.id for s in session.scalars(select(Submission).where(
        Submission.patient_id == patient_id)).all()
        if hidden.hides(s.encounter_id, s.department_id)}
    tasks = {t.id for t in session.scalars(select(Task).where(Task.patient_id == patient_id))
             .all() if hidden.hides(t.encounter_id, t.department_id)}
    return [r for r in rows if r.get("submission_id") not in subs
            and r.get("task_id") not in tasks]


def _table(headers: list[str], rows: list[list[Markup | str]], locale: str) -> Markup:
    if not rows:
        return Markup('<p class="empty">{}</p>').format(t("web.none", locale))
    head = Markup("").join(Markup("<th>{}</th>").format(h) for h in headers)
    body = Markup("").join(
        Markup("<tr>{}</tr>").format(Markup("").join(Markup("<td>{}</td>").format(c) for c in r))
        for r in rows)
    return Markup('<table class="list"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>'
                  ).format(head, body)


def _scores(d: Display, s: dict[str, Any]) -> Markup:
    """Each score as its label, its value at the declared precision and its band's label."""
    parts = []
    for key, value in (s["scores"] or {}).items():
        band = (s["bands"] or {}).get(key)
        parts.append(Markup('<span class="score">{} <b>{}</b>{}</span>').format(
            d.label("score", key, form=s["form"], version=s["form_version"]),
            d.score(s["form"], key, value, s["form_version"]),
            Markup(' <span class="badge band">{}</span>').format(
                d.label("band", band, form=s["form"], version=s["form_version"], score=key))
            if band else ""))
    return Markup(" ").join(parts)


def panel_submissions(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    d = Display(locale, session)
    rows: list[list[Markup | str]] = [
        [local_time(s["submitted_at"]),
         Markup('<a href="/submissions/{}" class="submission-link">{}</a>').format(
             s["id"], d.label("form", s["form"])),
         d.label("channel", s["channel"]) + (
             Markup(' <span class="badge proxy">{}</span>').format(t(
                 "tp.proxy.answered_by", locale,
                 relation=d.label("proxy_relation", s["proxy_relation"])))
             if s.get("proxy_relation") else ""),
         Markup('<span class="scores">{}</span>').format(_scores(d, s)),
         d.label("status", s["status"])]
        for s in submissions_json(session, patient_id, hidden_stays(session, me, patient_id))]
    return _table([t("web.sub.at", locale), t("web.sub.form", locale),
                   t("web.sub.channel", locale), t("web.sub.scores", locale),
                   t("web.sub.status", locale)], rows, locale)


CHANNELS = ("web", "phone", "sms", "wechat", "kiosk", "import")


def readings(session: Session, patient_id: str, reading_type: str,
             hidden: HiddenStays = NOTHING_HIDDEN) -> list[dict[str, Any]]:
    """Every reading of one type for the patient, oldest first: the HIS's and the patient's own
    (both stored as ``reading.recorded`` events), each with its ``source``."""
    return readings_by_type(session, patient_id, (reading_type,), hidden)[reading_type]


READINGS_PER_TYPE = 730


def _readings_statement() -> Select[Any]:
    kind = DomainEventRow.payload["type"].as_string()
    ranked = select(
        DomainEventRow.occurred_at, DomainEventRow.payload, kind.label("kind"),
        func.row_number().over(partition_by=kind, order_by=(
            DomainEventRow.occurred_at, DomainEventRow.id)).label("n")).where(
        DomainEventRow.type == "reading.recorded",
        DomainEventRow.payload["patient_id"].as_string() == bindparam("patient_id"),
        kind.in_(bindparam("kinds", expanding=True))).subquery()
    return (select(ranked).where(ranked.c.n <= bindparam("per_type"))
            .order_by(ranked.c.kind, ranked.c.n))


# Built once: the page reads it for every patient, and a statement built anew is most of what
# reading it costs (the cache key SQLAlchemy computes for it, too, is kept with the object).
_READINGS = _readings_statement()


def readings_by_type(session: Session, patient_id: str, reading_types: tuple[str, ...],
                     hidden: HiddenStays = NOTHING_HIDDEN) -> dict[str, list[dict[str, Any]]]:
    """:func:`readings` of several types in one statement (the first
    :data:`READINGS_PER_TYPE` of each type, as one statement per type would read them)."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in reading_types}
    for occurred_at, payload, name, _n in session.execute(_READINGS, {
            "patient_id": patient_id, "kinds": list(reading_types),
            "per_type": READINGS_PER_TYPE}).all():
        payload = payload or {}
        if hidden and hidden.hides(payload.get("encounter_id"), payload.get("department_id")):
            continue
        at = as_instant(payload.get("measured_at")) or occurred_at
        out[name].append({"at": at, "value": payload.get("value"),
                          "source": "patient_form" if payload.get("source") == "patient_form"
                          else "his"})
    for found in out.values():
        found.sort(key=lambda r: r["at"])
    return out


Point = tuple[datetime, float, str]  # when, value, source (his | patient_form)


def line_chart(series: list[tuple[str, str, list[Point]]], *, title: str, unit: str,
               low: float, high: float, targets: list[tuple[str, float]], d: Display,
               kind: str = "trend",
               bands: list[tuple[str, float | None, float | None]] | None = None) -> Markup:
    """A line chart drawn on the server (no script, no CDN): a y axis with ticks and the unit,
    dates on the x axis, dashed target lines, shaded bands, a legend; HIS readings as filled
    dots, patient-reported ones hollow; every dot has its date, value and source as a tooltip."""
    points = [p for _, _, pts in series for p in pts]
    if not points:
        return Markup('<p class="empty">{}</p>').format(t("web.none", d.locale))
    width, height, left, right, top, bottom = 640, 240, 48, 16, 16, 40
    values = [p[1] for p in points] + [v for _, v in targets]
    low = min(low, min(values))
    high = max(high, max(values))
    start, end = min(p[0] for p in points), max(p[0] for p in points)
    span = max((end - start).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        if start == end:
            return left + (width - left - right) / 2
        return left + (width - left - right) * (at - start).total_seconds() / span

    def y(value: float) -> float:
        return top + (height - top - bottom) * (1 - (value - low) / max(high - low, 1e-9))

    parts: list[Markup] = []
    for name, b_low, b_high in bands or []:
        y1 = y(min(b_high if b_high is not None else high, high))
        y2 = y(max(b_low if b_low is not None else low, low))
        if y2 > y1:
            parts.append(Markup('<rect class="band" x="{}" y="{:.1f}" width="{}" height="{:.1f}">'
                                '<title>{}</title></rect><text class="band-label" x="{}" '
                                'y="{:.1f}">{}</text>').format(
                left, y1, width - left - right, y2 - y1, name, width - right - 4, y1 + 11,
                name))
    ticks = 5
    for i in range(ticks + 1):
        value = low + (high - low) * i / ticks
        parts.append(Markup('<line class="grid" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/>'
                            '<text class="tick" x="{}" y="{:.1f}">{}</text>').format(
            left, width - right, y(value), y(value), left - 4, y(value) + 4, number(value)))
    dates = sorted({start, end, start + (end - start) / 2}) if start != end else [start]
    for at in dates:
        parts.append(Markup('<text class="tick date" x="{:.1f}" y="{}">{}</text>').format(
            x(at), height - bottom + 16, local_time(at, "date")))
    parts.append(Markup('<line class="axis" x1="{l}" x2="{l}" y1="{t}" y2="{b}"/>'
                        '<line class="axis" x1="{l}" x2="{r}" y1="{b}" y2="{b}"/>'
                        '<text class="unit" x="4" y="{t}">{u}</text>').format(
        l=left, r=width - right, t=top, b=height - bottom, u=unit))
    for name, value in targets:
        parts.append(Markup('<line class="target" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/>'
                            '<text class="target-label" x="{}" y="{:.1f}">{} {}</text>').format(
            left, width - right, y(value), y(value), left + 4, y(value) - 3, name,
            number(value)))
    legend: list[Markup] = []
    for name, color, pts in series:
        if not pts:
            continue
        line = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v, _ in pts)
        parts.append(Markup('<polyline class="series" fill="none" stroke="{}" stroke-width="2" '
                            'points="{}"/>').format(color, line))
        for at, value, source in pts:
            parts.append(Markup('<circle class="dot {src}" cx="{cx:.1f}" cy="{cy:.1f}" r="4" '
                                'stroke="{c}" fill="{f}"><title>{when} {name} {v} {u}（{s}）'
                                '</title></circle>').format(
                src="his" if source == "his" else "self", cx=x(at), cy=y(value), c=color,
                f=color if source == "his" else "#fff", when=local_time(at), name=name,
                v=number(value), u=unit, s=d.label("reading_source", source)))
        # an SVG swatch: its colour is an attribute, which the pages' CSP (style-src 'self')
        # allows, where an inline style="" is refused
        legend.append(Markup('<li><svg class="swatch" viewBox="0 0 14 3" aria-hidden="true">'
                             '<rect width="14" height="3" fill="{}"/></svg>{}</li>'
                             ).format(color, name))
    sources = {p[2] for p in points}
    legend += [Markup('<li><span class="dot-key {}"></span>{}</li>').format(
        "his" if s == "his" else "self", d.label("reading_source", s)) for s in sorted(sources)]
    return Markup('<figure class="chart"><svg class="{kind}-chart" role="img" '
                  'viewBox="0 0 {w} {h}" width="100%" aria-label="{title}">{body}</svg>'
                  '<figcaption><ul class="legend">{legend}</ul></figcaption></figure>').format(
        kind=kind, w=width, h=height, title=title, body=Markup("").join(parts),
        legend=Markup("").join(legend))


def _value(value: Any, key: str) -> float | None:
    if isinstance(value, dict):
        value = value.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def bp_chart(session: Session, patient_id: str, d: Display,
             hidden: HiddenStays = NOTHING_HIDDEN,
             found: list[dict[str, Any]] | None = None) -> Markup:
    """Systolic and diastolic over time from every source, with the patient's targets
    (``found``: the blood-pressure :func:`readings` when already read)."""
    from careloop.engine.domain import Patient
    from careloop.rules.runtime import DEFAULT_BP_TARGET

    if found is None:
        found = readings(session, patient_id, "blood_pressure", hidden)
    systolic = [(r["at"], v, r["source"]) for r in found
                if (v := _value(r["value"], "systolic")) is not None]
    diastolic = [(r["at"], v, r["source"]) for r in found
                 if (v := _value(r["value"], "diastolic")) is not None]
    patient = session.get(Patient, patient_id)
    target = ((patient.attributes or {}).get("bp_target") if patient else None) \
        or DEFAULT_BP_TARGET
    label_target = t("web.pages.target", d.locale)
    chart = line_chart(
        [(t("web.pages.systolic", d.locale), "#1f5fa8", systolic),
         (t("web.pages.diastolic", d.locale), "#2a9d8f", diastolic)],
        title=t("web.pages.bp", d.locale), unit="mmHg", low=60.0, high=180.0,
        targets=[(label_target, float(target["systolic"])),
                 (label_target, float(target["diastolic"]))], d=d, kind="bp")
    if not systolic:
        return chart
    last = found[-1]
    return chart + Markup('<p class="latest">{}: {}/{} mmHg · {} · {}</p>').format(
        t("web.pages.latest", d.locale), number(_value(last["value"], "systolic")),
        number(_value(last["value"], "diastolic")), local_time(last["at"]),
        d.label("reading_source", last["source"]))


GLUCOSE_TARGET = {"low": 4.4, "high": 7.0}  # fasting, mmol/L


def glucose_chart(session: Session, patient_id: str, d: Display,
                  hidden: HiddenStays = NOTHING_HIDDEN,
                  found: list[dict[str, Any]] | None = None) -> Markup:
    """Blood glucose (mmol/L) over time from every source, with the fasting target range."""
    if found is None:
        found = readings(session, patient_id, "glucose", hidden)
    values = [(r["at"], v, r["source"]) for r in found
              if (v := _value(r["value"], "value")) is not None]
    label_target = t("web.pages.target", d.locale)
    return line_chart([(t("web.pages.glucose", d.locale), "#b5651d", values)],
                      title=t("web.pages.glucose", d.locale), unit="mmol/L", low=3.0,
                      high=12.0, targets=[(label_target, GLUCOSE_TARGET["low"]),
                                          (label_target, GLUCOSE_TARGET["high"])], d=d,
                      kind="glucose")


def panel_bp(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    d = Display(locale, session)
    hide = hidden_stays(session, me, patient_id)
    found = readings_by_type(session, patient_id,
                             ("blood_pressure", "glucose", *OTHER_READINGS), hide)
    return Markup('<h3>{}</h3>{}<h3>{}</h3>{}{}').format(
        t("web.pages.bp", locale),
        bp_chart(session, patient_id, d, hide, found["blood_pressure"]),
        t("web.pages.glucose", locale),
        glucose_chart(session, patient_id, d, hide, found["glucose"]),
        other_readings(session, patient_id, d, hide, found))


OTHER_READINGS = {"weight": "kg", "heart_rate": "次/分", "spo2": "%"}


def other_readings(session: Session, patient_id: str, d: Display,
                   hidden: HiddenStays = NOTHING_HIDDEN,
                   by_type: dict[str, list[dict[str, Any]]] | None = None) -> Markup:
    """Weight, heart rate and SpO2 (the HIS's, a FHIR Observation's, the patient's own), newest
    first; nothing when there are none (``by_type``: their :func:`readings_by_type`)."""
    if by_type is None:
        by_type = readings_by_type(session, patient_id, tuple(OTHER_READINGS), hidden)
    found = [(r, kind) for kind in OTHER_READINGS for r in by_type[kind]
             if _value(r["value"], "value") is not None]
    if not found:
        return Markup("")
    found.sort(key=lambda it: it[0]["at"], reverse=True)
    rows = Markup("").join(
        Markup("<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>").format(
            local_time(r["at"]), d.label("reading_type", kind),
            number(_value(r["value"], "value")),
            OTHER_READINGS[kind] if d.locale == "zh-CN" or kind != "heart_rate" else "/min",
            d.label("reading_source", r["source"]))
        for r, kind in found[:20])
    return Markup('<h3>{}</h3><table class="list" id="other-readings"><thead><tr><th>{}</th>'
                  '<th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>'
                  ).format(t("fhirin.other_readings", d.locale), t("fhirin.when", d.locale),
                           t("fhirin.item", d.locale), t("fhirin.value", d.locale),
                           t("fhirin.source", d.locale), rows)


def panel_trends(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    """One chart per instrument and score answered at least once, with the score's bands."""
    from careloop.forms.models import Submission

    d = Display(locale, session)
    rows = session.scalars(select(Submission).where(Submission.patient_id == patient_id)
                           .order_by(Submission.submitted_at, Submission.id).limit(500)).all()
    series: dict[tuple[str, str], list[Point]] = {}
    hide = hidden_stays(session, me, patient_id)
    for s in rows:
        if hide.hides(s.encounter_id, s.department_id):
            continue
        for key, value in (s.scores or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                series.setdefault((s.form_key, key), []).append(
                    (s.submitted_at, float(value), "patient_form" if s.entered_by is None
                     else "his"))
    charts = []
    for (form, key), pts in series.items():
        spec = d.spec("form", form)
        score = next((x for x in getattr(spec, "scores", ()) if x.key == key), None)
        if score is None or not score.bands:
            continue  # a trend is read against its bands
        bands = [(pick(b.label, locale), b.min, b.max) for b in score.bands]
        lows = [b.min for b in score.bands if b.min is not None] + [p[1] for p in pts]
        highs = [b.max for b in score.bands if b.max is not None] + [p[1] for p in pts]
        name = f"{d.label('form', form)} · {d.label('score', key, form=form)}"
        latest = pts[-1]
        charts.append(Markup('<h3>{}</h3>{}<p class="latest">{}: {} · {}</p>').format(
            name, line_chart([(d.label("score", key, form=form), "#6a4c93", pts)],
                             title=name, unit="", low=min(lows), high=max(highs), targets=[],
                             d=d, bands=bands),
            t("web.pages.latest", locale), d.score(form, key, latest[1]),
            local_time(latest[0])))
    if not charts:
        return Markup('<p class="empty">{}</p>').format(t("web.none", locale))
    return Markup("").join(charts)


def panel_messages(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    from careloop.engine.links import staff_text
    from careloop.flows.models import OutboxMessage

    d = Display(locale, session)
    rows_ = session.scalars(select(OutboxMessage).where(OutboxMessage.patient_id == patient_id)
                            .order_by(OutboxMessage.id.desc()).limit(LIMIT)).all()
    # the status in words: "logged" (log channel) must not read as delivered
    rows: list[list[Markup | str]] = [
        [local_time(m.created_at), d.label("template", m.template_key),
         d.label("channel", m.channel),
         Markup('<span class="badge msg-{0}">{1}</span>').format(
             m.status, t(f"web.outbox.status.{m.status}", locale)),
         local_time(m.sent_at),
         _message_text(staff_text(session, m.subject), staff_text(session, m.body) or "")]
        for m in rows_]
    return _table([t("web.msg.created", locale), t("web.msg.template", locale),
                   t("web.msg.channel", locale), t("web.msg.status", locale),
                   t("web.msg.sent", locale), t("web.pages.message_text", locale)], rows, locale)


_LINK = re.compile(r"https?://[^\s<>\"'…]+…?")


def _message_text(subject: str | None, body: str) -> Markup:
    """The message as sent, shortened to 400 characters: a link clickable, except a patient's
    link, whose token a staff page shows only in part ("…/f/Zx9y…": it opens nothing)."""
    text = ((subject + "：") if subject else "") + body
    if len(text) > 400:
        text = text[:399] + "…"
    out: list[Markup] = []
    last = 0
    for found in _LINK.finditer(text):
        out.append(Markup("{}").format(text[last:found.start()]))
        out.append(Markup("{}").format(found.group(0)) if found.group(0).endswith("…") else
                   Markup('<a href="{0}" rel="noopener noreferrer" class="message-link">{0}</a>'
                          ).format(found.group(0)))
        last = found.end()
    out.append(Markup("{}").format(text[last:]))
    return Markup('<span class="message-text">{}</span>').format(Markup("").join(out))


def panel_flow_runs(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    d = Display(locale, session)
    items = [Markup("<li>{}</li>").format(t(
        "web.pages.run_words", locale, flow=d.label("flow", r["flow"]),
        status=d.label("run_status", r["status"]), started=local_time(r["started_at"])))
        for r in flow_runs_json(session, patient_id, hidden_stays(session, me, patient_id))]
    if not items:
        return Markup('<p class="empty">{}</p>').format(t("web.none", locale))
    return Markup('<ul class="runs">{}</ul>').format(Markup("").join(items))


def panel_rule_traces(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    d = Display(locale, session)
    rows: list[list[Markup | str]] = [
        [local_time(r["created_at"]), d.label("ruleset", r["ruleset"]),
         d.label("event", r["event_type"]),
         Markup("<br>").join(trace_sentences(d, r))]
        for r in rule_traces_json(session, patient_id, hidden_stays(session, me, patient_id))[:30]]
    return _table([t("web.trace.at", locale), t("web.trace.ruleset", locale),
                   t("web.trace.event", locale), t("web.pages.trace_words", locale)],
                  rows, locale)


def register(registry: Registry) -> None:
    panels = registry.catalogue("patient_panel")
    for name, title, order, fn in (
        ("submissions", {"zh-CN": "问卷与评分", "en": "Submissions and scores"}, 20,
         panel_submissions),
        ("trends", {"zh-CN": "评分趋势", "en": "Score trends"}, 22, panel_trends),
        ("bp", {"zh-CN": "血压与血糖", "en": "Blood pressure and glucose"}, 25, panel_bp),
        ("messages", {"zh-CN": "消息与送达状态", "en": "Messages and delivery"}, 40,
         panel_messages),
        ("flow_runs", {"zh-CN": "流程运行", "en": "Flow runs"}, 45, panel_flow_runs),
        ("rule_traces", {"zh-CN": "规则追踪", "en": "Rule traces"}, 50, panel_rule_traces),
    ):
        panels.register(name, PatientPanel(title=title, order=order, render=fn))
