"""The engines' sections of the patient 360 page and their JSON read-backs.

Each ``*_json`` function reads one patient's rows of one engine (submissions with scores, home
blood-pressure readings, messages and their delivery status, flow runs, rule traces); the
``panel_*`` functions render them as escaped HTML for ``registry.catalogue("patient_panel")``.
The caller (a ``@patient_level`` route) has already checked the patient is in the user's scope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.domain import Task
from careloop.engine.i18n import t
from careloop.engine.registry import Registry
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
             "scores": s.scores, "bands": s.bands, "submitted_at": _iso(s.submitted_at)}
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


def _scores(values: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((values or {}).items()))


def panel_submissions(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    rows: list[list[Markup | str]] = [
        [(s["submitted_at"] or "")[:16].replace("T", " "),
         Markup('<a href="/submissions/{}" class="submission-link">{} v{}</a>').format(
             s["id"], s["form"], s["form_version"]),
         t("web.channel." + s["channel"], locale) if s["channel"] in CHANNELS else s["channel"],
         Markup('<span class="scores">{}</span>').format(_scores(s["scores"])),
         _scores(s["bands"]), s["status"]]
        for s in submissions_json(session, patient_id, hidden_stays(session, me, patient_id))]
    return _table([t("web.sub.at", locale), t("web.sub.form", locale),
                   t("web.sub.channel", locale), t("web.sub.scores", locale),
                   t("web.sub.bands", locale), t("web.sub.status", locale)], rows, locale)


CHANNELS = ("web", "phone", "sms", "wechat", "kiosk", "import")


def bp_svg(readings: list[dict[str, Any]], locale: str) -> Markup:
    """A small server-rendered line chart (systolic and diastolic) — no script needed."""
    if not readings:
        return Markup('<p class="empty">{}</p>').format(t("web.none", locale))
    width, height, pad = 600, 200, 30
    low, high = 40.0, 200.0
    n = len(readings)

    def xy(i: int, value: float) -> str:
        x = pad + (width - 2 * pad) * (i / max(n - 1, 1))
        y = height - pad - (height - 2 * pad) * ((min(max(value, low), high) - low) / (high - low))
        return f"{x:.1f},{y:.1f}"

    sys_points = " ".join(xy(i, r["systolic"]) for i, r in enumerate(readings))
    dia_points = " ".join(xy(i, r["diastolic"]) for i, r in enumerate(readings))
    limit_y = xy(0, 140.0).split(",")[1]
    last = readings[-1]
    return Markup(
        '<svg class="bp-chart" role="img" viewBox="0 0 {w} {h}" width="100%" '
        'aria-label="{label}"><line x1="{p}" x2="{xe}" y1="{ly}" y2="{ly}" stroke="#c00" '
        'stroke-dasharray="4"/><polyline fill="none" stroke="#1f5fa8" stroke-width="2" '
        'points="{s}"/><polyline fill="none" stroke="#2a9d8f" stroke-width="2" points="{d}"/>'
        '</svg><p>{latest}: {sv:.0f}/{dv:.0f} mmHg ({count})</p>').format(
        w=width, h=height, p=pad, xe=width - pad, ly=limit_y, s=sys_points, d=dia_points,
        label=t("web.bp.title", locale), latest=t("web.bp.latest", locale),
        sv=last["systolic"], dv=last["diastolic"], count=n)


def panel_bp(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    return bp_svg(bp_readings(session, patient_id, hidden_stays(session, me, patient_id)), locale)


def panel_messages(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    from careloop.engine.clock import to_local

    def local(value: str | None) -> str:  # hospital time, never UTC
        return to_local(datetime.fromisoformat(value)).strftime("%Y-%m-%d %H:%M") if value else ""

    # the status in words: "logged" (log channel) must not read as delivered
    rows: list[list[Markup | str]] = [
        [local(m["created_at"]), m["template"], m["channel"],
         Markup('<span class="badge msg-{0}">{1}</span>').format(
             m["status"], t(f"web.outbox.status.{m['status']}", locale)),
         local(m["sent_at"])]
        for m in messages_json(session, patient_id)]
    return _table([t("web.msg.created", locale), t("web.msg.template", locale),
                   t("web.msg.channel", locale), t("web.msg.status", locale),
                   t("web.msg.sent", locale)], rows, locale)


def panel_flow_runs(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    rows: list[list[Markup | str]] = [
        [str(r["id"]), f"{r['flow']} v{r['version']}", r["status"],
         (r["started_at"] or "")[:16].replace("T", " ")]
        for r in flow_runs_json(session, patient_id, hidden_stays(session, me, patient_id))]
    return _table(["#", t("web.run.flow", locale), t("web.run.status", locale),
                   t("web.run.started", locale)], rows, locale)


def panel_rule_traces(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    rows: list[list[Markup | str]] = [
        [r["created_at"][:16].replace("T", " "), f"{r['ruleset']} v{r['version']}",
         r["event_type"], ", ".join(str(m) for m in (r["matched"] or [])),
         ", ".join(str(a.get("action", a)) if isinstance(a, dict) else str(a)
                   for a in (r["actions"] or [])) if isinstance(r["actions"], list)
         else str(r["actions"] or ""), r["error"] or ""]
        for r in rule_traces_json(session, patient_id, hidden_stays(session, me, patient_id))[:30]]
    return _table([t("web.trace.at", locale), t("web.trace.ruleset", locale),
                   t("web.trace.event", locale), t("web.trace.matched", locale),
                   t("web.trace.actions", locale), t("web.trace.error", locale)], rows, locale)


def register(registry: Registry) -> None:
    panels = registry.catalogue("patient_panel")
    for name, title, order, fn in (
        ("submissions", {"zh-CN": "问卷与评分", "en": "Submissions and scores"}, 20,
         panel_submissions),
        ("bp", {"zh-CN": "家庭血压", "en": "Home blood pressure"}, 25, panel_bp),
        ("messages", {"zh-CN": "消息与送达状态", "en": "Messages and delivery"}, 40,
         panel_messages),
        ("flow_runs", {"zh-CN": "流程运行", "en": "Flow runs"}, 45, panel_flow_runs),
        ("rule_traces", {"zh-CN": "规则追踪", "en": "Rule traces"}, 50, panel_rule_traces),
    ):
        panels.register(name, PatientPanel(title=title, order=order, render=fn))
