"""Synthetic demo data: departments and wards, staff of every role, patients with locally
generated Chinese names, 12 months of encounters and discharges, and follow-up tasks.

``careloop demo seed`` runs every seeder in ``registry.catalogue("demo_seeder")`` in registration
order, in one transaction: ``fn(session, rng, context)``. The web runtime's ``domain`` seeder runs
first and fills ``context`` (``departments``, ``wards``, ``users`` username → id, ``patients``,
``encounters``, ``now``); the engines add theirs (submissions, complaints, flow runs…) after it.
Everything is synthetic; nothing resembles a real person except by chance.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Encounter, Patient, PatientTag, User
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import Assignee, complete_task, create_task
from careloop.web import admin
from careloop.web.passwords import hash_password

DEMO_PASSWORD = "Careloop-Demo-2026!"

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯"
    "龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉兰红建国志强春梅海燕文博"
    "子涵浩然欣怡梓萱宇轩思远佳琪雨桐晨阳嘉怡俊杰婷婷晓东丽华卫东淑珍桂芝凤英德明振华"
)

# id, zh-CN, en, wards
DEPARTMENTS = (
    ("cardiology", "心内科", "Cardiology", ("cardio_w1", "cardio_w2")),
    ("orthopedics", "骨科", "Orthopedics", ("ortho_w1",)),
    ("obstetrics", "产科", "Obstetrics", ("obs_w1",)),
    ("endocrinology", "内分泌科", "Endocrinology", ("endo_w1",)),
    ("psychiatry", "精神心理科", "Psychiatry", ("psy_w1",)),
    ("pharmacy", "药剂科", "Pharmacy", ()),
)
DIAGNOSES = {
    "cardiology": (["I25.1"], ["PCI"], ["after_pci"]),
    "orthopedics": (["M17.1"], ["TKA"], ["joint_replacement"]),
    "obstetrics": (["O80"], ["delivery"], ["postpartum"]),
    "endocrinology": (["E11.9"], [], ["diabetes"]),
    "psychiatry": (["F32.1"], [], ["depression"]),
}


def chinese_name(rng: random.Random) -> str:
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
    return rng.choice(SURNAMES) + given


def _id_number(rng: random.Random, birth: date, female: bool) -> str:
    seq = rng.randrange(0, 500) * 2 + (0 if female else 1)
    body = f"110101{birth:%Y%m%d}{seq:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    return body + check


def _staff(session: Session, context: dict[str, Any]) -> None:
    users: dict[str, int] = context["users"]
    hashed = context.setdefault("password_hash", hash_password(DEMO_PASSWORD))

    def add(username: str, display: str, role: str, department: str | None) -> None:
        if username not in users:
            user = admin.create_user(session, username=username, display_name=display,
                                     password=DEMO_PASSWORD, check=False,
                                     password_hash=hashed)
            users[username] = user.id
        found = session.get(User, users[username])
        assert found is not None
        admin.grant(session, found, role, department)

    add("admin", "系统管理员", "system_admin", None)
    add("security", "安全管理员", "security_admin", None)
    add("auditor", "审计员", "auditor", None)
    add("leader", "院长", "leadership", None)
    add("px", "患者体验办", "px_office", None)
    add("agent", "随访专员", "followup_agent", None)
    add("pharmacy_head", "药剂科主任", "pharmacy_head", "pharmacy")
    add("pharmacist", "药师", "pharmacist", "pharmacy")
    for dept, _zh, _en, wards in DEPARTMENTS[:-1]:
        add(f"{dept}_director", f"{_zh}主任", "dept_director", dept)
        add(f"{dept}_head_nurse", f"{_zh}护士长", "head_nurse", dept)
        add(f"{dept}_doctor", f"{_zh}医生", "doctor", dept)
        for ward in wards:
            add(f"{ward}_nurse", f"{ward} 护士", "nurse", ward)


def seed_domain(session: Session, rng: random.Random, context: dict[str, Any]) -> None:
    """Departments, wards, staff, patients, encounters over 12 months, tags and tasks."""
    now: datetime = context.setdefault("now", now_utc())
    context.setdefault("users", {})
    for dept, zh, en, wards in DEPARTMENTS:
        if session.get(Department, dept) is None:
            session.add(Department(id=dept, name={"zh-CN": zh, "en": en}, kind="department"))
        for i, ward in enumerate(wards, 1):
            if session.get(Department, ward) is None:
                session.add(Department(id=ward, name={"zh-CN": f"{zh}{i}病区",
                                                      "en": f"{en} ward {i}"},
                                       kind="ward", parent_id=dept))
    session.flush()
    context["departments"] = [d[0] for d in DEPARTMENTS]
    context["wards"] = {d[0]: list(d[3]) for d in DEPARTMENTS}
    _staff(session, context)
    users = context["users"]
    patients: list[str] = context.setdefault("patients", [])
    encounters: list[str] = context.setdefault("encounters", [])
    start = len(session.scalars(select(Patient.id)).all())
    for n in range(start + 1, start + int(context.get("patient_count", 200)) + 1):
        female = rng.random() < 0.5
        birth = date(rng.randint(1940, 2004), rng.randint(1, 12), rng.randint(1, 28))
        pid = f"P{n:06d}"
        session.add(Patient(
            id=pid, mrn=f"MRN{n:07d}", name=chinese_name(rng), gender="F" if female else "M",
            birth_date=birth, phone=f"1{rng.choice('3578')}{rng.randrange(10**9):09d}",
            id_number=_id_number(rng, birth, female), locale="zh-CN",
            attributes={"insurance": rng.choice(["urban_employee", "urban_rural", "self_pay"])},
            consents={"sms": True, "wechat": rng.random() < 0.7}, created_at=now,
            updated_at=now))
        patients.append(pid)
        session.flush()
        for k in range(rng.choice((1, 1, 2))):
            encounters.append(_encounter(session, rng, context, pid, k, birth, now, users))
    session.flush()


def _encounter(session: Session, rng: random.Random, context: dict[str, Any], pid: str,
               k: int, birth: date, now: datetime, users: dict[str, int]) -> str:
    dept, _zh, _en, wards = rng.choice(DEPARTMENTS[:-1])
    ward = rng.choice(wards)
    discharged = now - timedelta(days=rng.randint(0, 364), hours=rng.randint(0, 23))
    admitted = discharged - timedelta(days=rng.randint(2, 12))
    diagnoses, procedures, tags = DIAGNOSES[dept]
    eid = f"E{pid[1:]}-{k + 1}"
    session.add(Encounter(
        id=eid, patient_id=pid, type="inpatient", department_id=dept, ward_id=ward,
        attending_doctor_id=users[f"{dept}_doctor"], responsible_nurse_id=users[f"{ward}_nurse"],
        status="discharged", admitted_at=admitted, discharged_at=discharged,
        diagnoses={"codes": diagnoses}, procedures={"codes": procedures}, created_at=admitted))
    session.flush()
    for tag in [*tags, *(["aged_70_plus"] if now.year - birth.year >= 70 else [])]:
        if session.scalars(select(PatientTag).where(PatientTag.patient_id == pid,
                                                    PatientTag.tag == tag)).first() is None:
            session.add(PatientTag(patient_id=pid, tag=tag, source="demo", created_at=now))
    age_days = (now - discharged).days
    if age_days <= 30:
        assignee = Assignee(users[f"{ward}_nurse"] if rng.random() < 0.6 else None,
                            "followup_agent" if rng.random() < 0.3 else "nurse", ward)
        task, _ = create_task(
            session, title=f"出院第3天电话随访 / Day-3 phone follow-up ({eid})", assignee=assignee,
            actor="demo", patient_id=pid, encounter_id=eid, kind="phone_followup",
            priority="urgent" if rng.random() < 0.1 else "normal",
            due_at=discharged + timedelta(days=3), source_type="flow",
            source_ref="demo:discharge_day3", idempotency_key=f"demo:{eid}:day3",
            form_key="discharge_day3")
        if age_days > 10 and rng.random() < 0.7:
            complete_task(session, task, actor="demo", outcome="reached_ok", notes=None)
    return eid


def seed(session: Session, *, patients: int = 200, seed_value: int = 20261124,
         now: datetime | None = None) -> dict[str, Any]:
    """Run every registered demo seeder once; returns the shared context."""
    rng = random.Random(seed_value)
    context: dict[str, Any] = {"patient_count": patients, "now": now or now_utc(),
                               "password": DEMO_PASSWORD}
    seeders = list(loaded_registry().catalogue("demo_seeder").items())
    # the domain (departments, staff, patients) first, whatever order the plugins loaded in
    for _name, seeder in sorted(seeders, key=lambda item: item[0] != "domain"):
        seeder(session, rng, context)
    return context


def seed_complaint_handling(session: Session, rng: random.Random,
                            context: dict[str, Any]) -> None:
    """Resolve most older demo complaints (some at first contact), at plausible moments."""
    from careloop.engine.clock import frozen_now
    from careloop.forms.models import Submission
    from careloop.web import complaints
    from careloop.web.permissions import load_principal

    now: datetime = context["now"]
    px = context.get("users", {}).get("px")
    if px is None:
        return
    user = session.get(User, px)
    if user is None:
        return
    principal = load_principal(session, user)
    rows = session.scalars(select(Submission).where(
        Submission.form_key == complaints.FORM,
        Submission.submitted_at < now - timedelta(days=2)).order_by(Submission.id)).all()
    for sub in rows:
        if rng.random() >= 0.75:
            continue
        at = sub.submitted_at + timedelta(hours=rng.choice((2, 6, 12, 20, 30, 50)))
        if rng.random() < 0.5:  # the department replied first: not resolved at first contact
            _reply(session, sub.id, sub.submitted_at + (at - sub.submitted_at) / 2)
        with frozen_now(at):
            complaints.resolve(session, sub, principal,
                               notes="已电话回访患者并致歉，问题已处理。")


def _reply(session: Session, submission_id: int, at: datetime) -> None:
    """The department's reply to a demo complaint (its first-response approval, approved)."""
    from careloop.engine.clock import frozen_now
    from careloop.flows.approvals import approval_of, decide
    from careloop.web import complaints

    pol = complaints.policy(session)
    for task in complaints.handling(session, submission_id).tasks:
        if task.kind in pol.kinds and task.status == "open" and approval_of(session, task):
            with frozen_now(at):
                decide(session, task.id, "approve", actor="demo", notes="科室已回复患者")
