"""Demo patients answer the links they were actually sent (the ``forms`` demo seeder).

After every scheduler sweep of the demo's timeline (:mod:`careloop.web.demo`), this actor reads
the messages the outbox just delivered, takes the form link from each body (``/f/<token>``) and
decides whether and when the patient answers: most answer within a day, some only after the
reminder, some never. An answer goes through the patient page's handler
(:func:`careloop.forms.patient.post_page`, what ``POST /f/{token}`` calls), page by page, so the
form's validation, the rules (dissatisfied → urgent task, 用药指导不清楚 → a copy for the
pharmacy, home-BP crisis → task) and the flows waiting for the answer react as in production.
A patient's mood (drawn once) decides how they answer; everything is synthetic.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import hospital_tz
from careloop.forms.models import FormRequest

LINK = re.compile(r"/f/([A-Za-z0-9_-]{16,128})")
#: outbox statuses that mean the patient has the message
DELIVERED = ("sent", "logged", "delivered")

Fields = dict[str, list[str]]

SYMPTOMS = ("头晕，血压偏高。", "伤口有点疼，晚上睡不好。", "走路多了胸闷。", "食欲差，乏力。")
NEGATIVE = (
    "用药指导不清楚，回家后不知道药怎么吃。",
    "出院时护士没有讲清楚用药指导，降压药的服用时间没人说明。",
    "病房晚上太吵，睡不好。",
    "出院结算排队太久，收费不透明。",
    "医生查房时间短，病情解释不清楚。",
)
POSITIVE = (
    "护士非常细心，出院指导讲得很清楚，谢谢！",
    "医生技术好，态度和蔼。",
    "整个住院过程很顺利，感谢医护人员。",
)


def fill_pages(request: FormRequest, fields: Fields, post: Callable[[Fields], bool],
               pages: int = 12) -> bool:
    """Post ``fields`` page by page (the page the draft is on, then the next …) until ``post``
    says the form was submitted; False when a page keeps being refused."""
    last = -1
    for _ in range(pages):
        page = int((request.draft or {}).get("page", 0))
        if post({**fields, "_page": [str(page)], "_action": ["next"]}):
            return True
        now_on = int((request.draft or {}).get("page", 0))
        if now_on == page == last:
            return False
        last = page
    return False


def _yes(value: bool) -> list[str]:
    return ["yes" if value else "no"]


def day3_answers(rng: random.Random, mood: float, showcase: bool) -> Fields:
    """The day-3 care form: most patients are well and satisfied, some are not."""
    if showcase:
        return {"recovery": ["poor"], "symptoms": ["头晕，血压偏高。"],
                "medication_clear": ["no"], "overall": ["2"],
                "comment": ["用药指导不清楚，不知道降压药什么时候吃。"]}
    if mood > 0.86:
        overall = rng.choice((1, 2))
        unclear = rng.random() < 0.5
        out = {"recovery": [rng.choice(("poor", "fair"))], "medication_clear": _yes(not unclear),
               "overall": [str(overall)],
               "comment": [NEGATIVE[0] if unclear else rng.choice(NEGATIVE[2:])]}
    elif mood > 0.72:
        out = {"recovery": ["fair"], "medication_clear": _yes(rng.random() < 0.8),
               "overall": ["3"]}
        if rng.random() < 0.5:
            out["comment"] = [rng.choice(NEGATIVE[1:])]
    else:
        out = {"recovery": ["good"], "medication_clear": ["yes"],
               "overall": [rng.choice(("4", "5", "5"))]}
        if rng.random() < 0.3:
            out["comment"] = [rng.choice(POSITIVE)]
    if out["recovery"] == ["poor"]:
        out["symptoms"] = [rng.choice(SYMPTOMS)]
    return out


def stent_answers(rng: random.Random, mood: float) -> Fields:
    pain = rng.random() < 0.1 + 0.2 * mood
    out = {"chest_pain": _yes(pain), "taking_antiplatelet": _yes(rng.random() < 0.92),
           "symptoms": ["none"] if rng.random() < 0.75 else [rng.choice(
               ("breathless", "palpitations", "ankle_swelling"))],
           "overall": [str(5 if mood < 0.5 else 4 if mood < 0.85 else 3)]}
    if pain:
        out["chest_pain_score"] = [str(rng.randint(1, 5))]
    return out


def bp_answers(rng: random.Random, mood: float, at: datetime) -> Fields:
    systolic = round(rng.gauss(138 + 12 * mood, 10))
    diastolic = round(rng.gauss(86 + 6 * mood, 6))
    measured = (at - timedelta(minutes=rng.randint(10, 90))).astimezone(hospital_tz())
    out = {"bp.systolic": [str(max(95, min(200, systolic)))],
           "bp.diastolic": [str(max(55, min(120, diastolic)))],
           "pulse": [str(rng.randint(60, 92))],
           "measured_at": [measured.strftime("%Y-%m-%dT%H:%M")],
           "took_medicine": _yes(rng.random() < 0.88),
           "symptoms": ["none"] if rng.random() < 0.8 else [rng.choice(("headache",
                                                                        "dizziness"))]}
    return out


TOUCHPOINTS = {
    "inpatient_satisfaction": ("admission", "nursing", "doctor_explanation", "food",
                               "environment", "discharge"),
    "outpatient_satisfaction": ("registration", "waiting", "doctor_explanation", "payment",
                                "pharmacy")}
LOW_REASONS = ("waiting", "attitude", "explanation", "cost")


def satisfaction_answers(form_key: str, rng: random.Random, mood: float) -> Fields:
    """A satisfaction survey (inpatient, day 14; outpatient, the day after the visit): overall,
    NPS and each part of the stay or visit, following the patient's mood; the unhappy give
    reasons and a comment."""
    if mood > 0.86:
        overall, nps = rng.choice((1, 2)), rng.randint(0, 5)
    elif mood > 0.72:
        overall, nps = 3, rng.randint(5, 8)
    else:
        overall, nps = rng.choice((4, 5, 5)), rng.choice((8, 9, 10, 10))
    out: Fields = {"overall": [str(overall)], "nps": [str(nps)]}
    if overall <= 2:
        out["low_reasons"] = rng.sample(LOW_REASONS, rng.randint(1, 2))
        out["comment"] = [rng.choice(NEGATIVE)]
    elif overall >= 4 and rng.random() < 0.3:
        out["comment"] = [rng.choice(POSITIVE)]
    for row in TOUCHPOINTS[form_key]:
        if rng.random() < 0.9:  # a part of the stay a patient has no view on stays empty
            score = max(1, min(5, overall + rng.choice((-1, 0, 0, 1))))
            out[f"touchpoints.{row}"] = [str(score)]
    return out


def answers_for(form_key: str, rng: random.Random, mood: float, showcase: bool,
                at: datetime) -> Fields | None:
    if form_key == "discharge_day3":
        return day3_answers(rng, mood, showcase)
    if form_key == "cardiac_stent_followup":
        return stent_answers(rng, mood)
    if form_key == "home_bp":
        return bp_answers(rng, mood, at)
    if form_key in TOUCHPOINTS:
        return satisfaction_answers(form_key, rng, mood)
    return None


def _answer(token: str, fields_of: Callable[[datetime], Fields | None]) -> Callable[[Session],
                                                                                    None]:
    def act(session: Session) -> None:
        from careloop.engine.clock import now_utc
        from careloop.engine.errors import NotFound
        from careloop.forms.patient import post_page
        from careloop.forms.requests import RequestUnavailable, by_token

        try:
            request = by_token(session, token)
        except (NotFound, RequestUnavailable):
            return  # answered already, or too late: the link says so
        fields = fields_of(now_utc())
        if fields is None:
            return
        url = f"/f/{token}"
        if not fill_pages(request, fields, lambda posted: post_page(
                session, token, posted, {}, url).status == 200
                and request.status == "answered"):
            raise RuntimeError(f"{request.form_key}: the patient page refused the answers")
    return act


def patient_actor(session: Session, rng: random.Random, context: dict[str, Any],
                  at: datetime) -> None:
    """Plan the answers to the form links the last sweep delivered."""
    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import message_text
    from careloop.web.demo import timeline

    line = timeline(context)
    planned: dict[str, Any] = context.get("planned", {})
    handled: set[str] = context.setdefault("tokens_handled", set())
    low = int(context.get("messages_low", 0))
    rows = session.scalars(select(OutboxMessage).where(OutboxMessage.id > low)
                           .order_by(OutboxMessage.id)).all()
    waiting = [m.id for m in rows if m.status in ("pending", "sending")]
    context["messages_low"] = (min(waiting) - 1) if waiting else (rows[-1].id if rows else low)
    seen: set[int] = context.setdefault("messages_seen", set())
    # each message's decisions from its own generator (the demo's seed and the message's id):
    # what patients answer does not shift with how much the staff actors drew meanwhile
    base = context.setdefault("patients_seed", rng.random())
    for message in rows:
        if message.status not in DELIVERED or message.id in seen:
            continue
        seen.add(message.id)
        match = LINK.search(message_text(session, message)[1])
        patient = planned.get(message.patient_id or "")
        if match is None or patient is None:
            continue
        token = match.group(1)
        mine = random.Random(f"{base}:{message.id}")
        reminder = token in handled
        handled.add(token)
        chance = patient.responsive * (0.5 if reminder else 1.0)
        if mine.random() >= chance:
            continue
        when = at + (timedelta(minutes=30) if patient.showcase else
                     timedelta(minutes=mine.randint(20, 60 * 30)))
        if patient.showcase == "on_time":  # answered in the last hours before "now"
            when = max(when, context["now"] - timedelta(hours=6))
        request = _request_of(session, token)
        if request is None:
            continue
        form_key = request.form_key
        answer_rng = random.Random(mine.random())

        def fields_of(when: datetime, form_key: str = form_key, mood: float = patient.mood,
                      showcase: bool = bool(patient.showcase),
                      answer_rng: random.Random = answer_rng) -> Fields | None:
            return answers_for(form_key, answer_rng, mood, showcase, when)

        line.at(when, f"answer {form_key}", _answer(token, fields_of))


def _request_of(session: Session, token: str) -> FormRequest | None:
    from careloop.forms.requests import hash_token

    return session.scalars(select(FormRequest).where(
        FormRequest.token_hash == hash_token(token))).first()


def seed_forms(session: Session, rng: random.Random, context: dict[str, Any]) -> None:
    """Register the patients: they answer what they are sent."""
    from careloop.web.demo import add_actor

    add_actor(context, "patients", patient_actor)
