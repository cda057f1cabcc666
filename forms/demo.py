"""Demo submissions (``careloop demo seed`` / ``careloop up --demo``), registered as the
``forms`` demo seeder after the web runtime's ``domain`` seeder.

Every submission goes through :func:`careloop.forms.runtime.submit` at its own moment
(``clock.frozen_now``), so the rules fire as in production: pending-dissatisfied statuses,
urgent tasks for the head nurse, tags, text classification. Inpatient satisfaction is sent as a
form request (response rates), answered by about 60 % of patients; outpatient satisfaction,
PHQ-9, home blood pressure and complaints come on their own. Distributions differ per
department; free-text comments are Chinese, with the usual complaints (用药指导, 等候时间,
服务态度, 饭菜, 环境, 收费). Everything is synthetic.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import frozen_now
from careloop.engine.domain import Encounter, Patient
from careloop.engine.models import DefinitionRow
from careloop.forms.models import FormRequest
from careloop.forms.requests import create_request
from careloop.forms.runtime import submit

# mean overall satisfaction (1–5) per department
QUALITY = {"cardiology": 4.3, "orthopedics": 3.9, "obstetrics": 4.5, "endocrinology": 4.0,
           "psychiatry": 4.1}
WEAK_ROWS = {"food": -0.7, "environment": -0.3, "waiting": -0.8, "payment": -0.4}

NEGATIVE = (
    "出院时护士没有讲清楚用药指导，回家后不知道药怎么吃。",
    "用药指导太简单了，降压药和降糖药的服用时间没人说明。",
    "门诊等候时间太长，排队两个多小时才看上病。",
    "检查等候时间长，预约要等一周。",
    "个别护士服务态度不好，问问题时很不耐烦。",
    "医生查房时间短，服务态度冷淡，病情解释不清楚。",
    "医院的饭菜太咸，而且送到病房时已经凉了。",
    "饭菜品种少，不适合糖尿病人吃。",
    "病房环境嘈杂，晚上走廊声音很大睡不好。",
    "卫生间不够干净，环境需要改善。",
    "收费不透明，出院结算时多收了一项检查费。",
    "收费窗口排队久，医保报销流程太复杂。",
)
MIXED = (
    "医生很负责，但是等候时间有点长。",
    "护理很好，就是饭菜一般。",
    "总体还可以，停车不方便。",
)
POSITIVE = (
    "护士非常细心，出院指导讲得很清楚，谢谢！",
    "医生技术好，态度和蔼，病情解释很耐心。",
    "病房干净整洁，服务很周到。",
    "整个住院过程很顺利，感谢医护人员。",
    "护理服务很好，出院后还有电话随访，很贴心。",
)
COMPLAINTS = (
    ("attitude", "护士在输液时态度恶劣，对家属大声呵斥。"),
    ("waiting", "预约的检查等了三个小时，没有任何解释。"),
    ("billing", "出院结算发现重复收费，要求退还。"),
    ("medical", "术后伤口疼痛加重，医生没有及时处理。"),
    ("environment", "病房空调坏了三天没有人修。"),
    ("attitude", "挂号窗口工作人员服务态度差。"),
    ("suggestion", "建议增加周末门诊，方便上班族就医。"),
)


def _has(session: Session, key: str) -> bool:
    return session.scalars(select(DefinitionRow.id).where(
        DefinitionRow.kind == "form", DefinitionRow.key == key).limit(1)).first() is not None


def _clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


def satisfaction(rng: random.Random, department: str, rows: tuple[str, ...]) -> dict[str, Any]:
    """One plausible satisfaction answer set for ``department``."""
    overall = _clamp(rng.gauss(QUALITY.get(department, 4.0), 0.95), 1, 5)
    answers: dict[str, Any] = {
        "overall": overall,
        "nps": _clamp(overall * 2 + rng.gauss(0.2, 1.3), 0, 10),
        "touchpoints": {r: str(_clamp(overall + WEAK_ROWS.get(r, 0) + rng.gauss(0, 0.7), 1, 5))
                        for r in rows},
    }
    if overall <= 2:
        answers["low_reasons"] = rng.sample(["waiting", "attitude", "explanation", "cost"],
                                            rng.randint(1, 2))
        answers["comment"] = rng.choice(NEGATIVE)
    elif overall == 3:
        if rng.random() < 0.7:
            answers["comment"] = rng.choice(NEGATIVE + MIXED)
    elif rng.random() < 0.35:
        answers["comment"] = rng.choice(POSITIVE + MIXED)
    return answers


INPATIENT_ROWS = ("admission", "nursing", "doctor_explanation", "food", "environment",
                  "discharge")
OUTPATIENT_ROWS = ("registration", "waiting", "doctor_explanation", "payment", "pharmacy")


def _submit(session: Session, at: datetime, **kwargs: Any) -> None:
    with frozen_now(at):
        submit(session, **kwargs)


def seed_forms(session: Session, rng: random.Random, context: dict[str, Any]) -> None:
    """Satisfaction (with requests), outpatient surveys, PHQ-9, home BP and complaints."""
    now: datetime = context["now"]
    ids: list[str] = context.get("encounters", [])
    if not ids or not _has(session, "inpatient_satisfaction"):
        context.setdefault("skipped", []).append("forms: bundles not imported")
        return
    encounters = session.scalars(select(Encounter).where(Encounter.id.in_(ids))
                                 .order_by(Encounter.id)).all()
    counts = {"requests": 0, "submissions": 0, "complaints": 0}
    for enc in encounters:
        assert enc.discharged_at is not None
        sent = enc.discharged_at + timedelta(days=1, hours=rng.randint(0, 6))
        if sent >= now:
            continue
        with frozen_now(sent):
            made = create_request(session, form_key="inpatient_satisfaction",
                                  patient_id=enc.patient_id, encounter_id=enc.id,
                                  channel=rng.choice(("sms", "wechat", "wechat")),
                                  expires_at=sent + timedelta(days=14),
                                  source_ref="demo:satisfaction")
        counts["requests"] += 1
        answered = sent + timedelta(hours=rng.randint(1, 96))
        if rng.random() < 0.6 and answered < now:
            _submit(session, answered, form_key="inpatient_satisfaction",
                    answers=satisfaction(rng, enc.department_id or "", INPATIENT_ROWS),
                    patient_id=enc.patient_id, encounter_id=enc.id,
                    channel=rng.choice(("sms", "wechat")), request_id=made["request_id"])
            counts["submissions"] += 1
        elif answered < now - timedelta(days=14):
            request = session.get(FormRequest, made["request_id"])
            if request is not None:
                request.status = "expired"
    patients: list[str] = context.get("patients", [])
    departments = [d for d in context.get("departments", []) if d in QUALITY]
    for pid in patients:
        if rng.random() < 0.3 and departments:
            dept = rng.choice(departments)
            at = now - timedelta(days=rng.randint(1, 364), hours=rng.randint(0, 10))
            _submit(session, at, form_key="outpatient_satisfaction",
                    answers=satisfaction(rng, dept, OUTPATIENT_ROWS), patient_id=pid,
                    channel=rng.choice(("wechat", "kiosk", "sms")), department_id=dept)
            counts["submissions"] += 1
    _chronic(session, rng, context, encounters, counts)
    _complaints(session, rng, context, patients, counts)
    context["forms"] = counts


def _phq9(rng: random.Random, level: float) -> dict[str, Any]:
    return {f"q{i}": str(_clamp(rng.gauss(level, 0.8), 0, 3)) for i in range(1, 10)}


def _chronic(session: Session, rng: random.Random, context: dict[str, Any],
             encounters: Any, counts: dict[str, int]) -> None:
    now: datetime = context["now"]
    have_phq9, have_bp = _has(session, "phq9"), _has(session, "home_bp")
    for enc in encounters:
        assert enc.discharged_at is not None
        if enc.department_id == "psychiatry" and have_phq9:
            level = rng.uniform(0.6, 2.2)
            for k in range(rng.randint(1, 3)):
                at = enc.discharged_at + timedelta(days=14 + 28 * k)
                if at >= now:
                    break
                _submit(session, at, form_key="phq9", answers=_phq9(rng, level),
                        patient_id=enc.patient_id, encounter_id=enc.id, channel="wechat")
                counts["submissions"] += 1
                level = max(0.2, level - rng.uniform(0, 0.5))
        elif enc.department_id in ("cardiology", "endocrinology") and have_bp \
                and rng.random() < 0.35:
            systolic, diastolic = rng.gauss(148, 12), rng.gauss(92, 8)
            for k in range(rng.randint(4, 8)):
                at = enc.discharged_at + timedelta(days=2 + 3 * k, hours=rng.randint(0, 3))
                if at >= now:
                    break
                reading = {"systolic": _clamp(systolic + rng.gauss(0, 6), 90, 200),
                           "diastolic": _clamp(diastolic + rng.gauss(0, 4), 50, 120)}
                _submit(session, at, form_key="home_bp",
                        answers={"bp": reading, "measured_at": at.isoformat(),
                                 "took_medicine": rng.random() < 0.85},
                        patient_id=enc.patient_id, encounter_id=enc.id, channel="wechat")
                counts["submissions"] += 1
                systolic -= rng.uniform(0, 2.5)
                diastolic -= rng.uniform(0, 1.5)


def _complaints(session: Session, rng: random.Random, context: dict[str, Any],
                patients: list[str], counts: dict[str, int]) -> None:
    if not _has(session, "complaint"):
        return
    now: datetime = context["now"]
    departments = [d for d in context.get("departments", []) if d in QUALITY]
    users = context.get("users", {})
    for pid in patients:
        if rng.random() >= 0.06 or not departments:
            continue
        category, text = rng.choice(COMPLAINTS)
        channel = rng.choice(("online", "phone", "in_person", "letter"))
        at = now - timedelta(days=rng.randint(0, 200), hours=rng.randint(0, 20))
        answers: dict[str, Any] = {"channel_of_complaint": channel, "category": category,
                                   "description": text, "department": rng.choice(departments),
                                   "wants_contact": rng.random() < 0.7}
        patient = session.get(Patient, pid)
        if answers["wants_contact"] and patient is not None and patient.phone:
            answers["contact_phone"] = patient.phone
        else:
            answers["wants_contact"] = False
        staff = channel != "online"
        _submit(session, at, form_key="complaint", answers=answers, patient_id=pid,
                channel="phone" if staff else "web",
                entered_by="px" if staff and "px" in users else None)
        counts["complaints"] += 1
