"""Synthetic demo data, produced through the same public paths as real data.

``careloop demo seed`` and ``careloop up --demo`` build a hospital the way one is built in
production, then let a few months pass:

1. **Reference data, set up by IT** — departments, wards and staff with their role grants,
   through the functions the admin pages use (:mod:`careloop.web.admin`). Departments exist
   before any HIS event names them.
2. **HIS events** — every patient arrives as ``patient.upserted``, then
   ``encounter.admitted`` / ``encounter.discharged`` (and ``surgery.scheduled``,
   ``appointment.booked``, outpatient hypertension visits) through the events ingestion that
   ``POST /api/v1/events`` calls (:func:`careloop.flows.ingest.ingest`), each at its own moment
   with the engine clock frozen there. Event ids are stable, so seeding twice duplicates nothing.
3. **Time passes** — the scheduler's own sweep (:func:`careloop.flows.scheduler.run_due`) runs
   twice a day (10:30 and 17:00 hospital time) from the first event to now: flows send their
   messages and forms, create phone tasks, overdue tasks escalate.
4. **People act** — after each sweep the registered *actors* look at what happened and plan what
   people do next: patients answer the form links actually sent to them, through the patient
   page's handler (or never do); staff record outcomes through the console's functions, decide
   approvals, take complaints through the complaint intake and resolve them. What is planned
   after "now" never happens, so the first login finds open work, some on time, some overdue.

Seeders are registered in ``registry.catalogue("demo_seeder")`` as ``fn(session, rng, context)``;
``domain`` (this module) runs first and plans the hospital; the others add actors with
:func:`add_actor`. Everything is synthetic and deterministic (one seeded RNG).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from careloop.engine.clock import frozen_now, hospital_tz, now_utc
from careloop.engine.db import default_engine, transaction
from careloop.engine.domain import Department, RoleGrant, Task, User
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.web import admin
from careloop.web.passwords import hash_password

DEMO_PASSWORD = "Careloop-Demo-2026!"
#: how far back the demo's history starts
HISTORY_DAYS = 120
#: sweeps per day, in hospital-local wall time (after the 09:00/09:30 flow timers)
SWEEP_TIMES = (time(10, 30), time(17, 0))

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯"
)
# given names typical of men and of women (one or two characters)
GIVEN_MALE = ("伟", "强", "磊", "军", "勇", "杰", "涛", "明", "超", "刚", "斌", "辉", "峰",
              "建国", "志强", "海涛", "文博", "浩然", "宇轩", "思远", "晨阳", "俊杰", "晓东",
              "卫东", "德明", "振华", "国庆", "建华", "立新", "永刚", "志刚", "子豪")
GIVEN_FEMALE = ("芳", "娜", "敏", "静", "丽", "艳", "娟", "霞", "红", "慧", "琳", "颖", "萍",
                "秀英", "秀兰", "桂英", "玉兰", "春梅", "海燕", "欣怡", "梓萱", "佳琪", "雨桐",
                "嘉怡", "婷婷", "丽华", "淑珍", "桂芝", "凤英", "晓燕", "雅琴", "美玲")


@dataclass(frozen=True, slots=True)
class Profile:
    """Who is treated in a department: ages, share of women, stay, diagnoses."""

    code: str
    zh: str
    en: str
    wards: tuple[str, ...]
    weight: float
    ages: tuple[int, int]
    female: float
    stay: tuple[int, int]


DEPARTMENTS = (
    Profile("cardiology", "心内科", "Cardiology", ("cardio_w1", "cardio_w2"), 0.32, (48, 88),
            0.38, (3, 8)),
    Profile("orthopedics", "骨科", "Orthopedics", ("ortho_w1",), 0.18, (45, 84), 0.6, (5, 10)),
    Profile("obstetrics", "产科", "Obstetrics", ("obs_w1",), 0.18, (22, 40), 1.0, (2, 5)),
    Profile("endocrinology", "内分泌科", "Endocrinology", ("endo_w1",), 0.17, (35, 80), 0.5,
            (5, 10)),
    Profile("psychiatry", "精神心理科", "Psychiatry", ("psy_w1",), 0.15, (18, 65), 0.55,
            (14, 28)),
)
# departments without wards or patients of their own
SERVICES = (("pharmacy", "药剂科", "Pharmacy"), ("px_office", "患者体验办公室",
                                                 "Patient-experience office"),
            ("outpatient_office", "门诊部", "Outpatient office"))  # the windows' touchpoints

Action = Callable[[Session], None]
Actor = Callable[[Session, random.Random, dict[str, Any], datetime], None]


def chinese_name(rng: random.Random, gender: str) -> str:
    """A locally generated name whose given name is typical of ``gender`` (male | female)."""
    pool = GIVEN_FEMALE if gender == "female" else GIVEN_MALE
    return rng.choice(SURNAMES) + rng.choice(pool)


def _id_number(rng: random.Random, birth: date, female: bool) -> str:
    seq = rng.randrange(0, 500) * 2 + (0 if female else 1)
    body = f"110101{birth:%Y%m%d}{seq:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    return body + check


# -- the timeline ----------------------------------------------------------------------------


@dataclass
class Timeline:
    """Planned actions (each at its own instant) and the actors that plan them."""

    start: datetime
    now: datetime
    queue: list[tuple[datetime, int, str, Action]] = field(default_factory=list)
    actors: list[tuple[str, Actor]] = field(default_factory=list)
    counter: int = 0

    def at(self, when: datetime, label: str, action: Action) -> None:
        """Plan ``action`` at ``when``; what falls after "now" never happens."""
        if when > self.now:
            return
        self.counter += 1
        heapq.heappush(self.queue, (when, self.counter, label, action))

    def due(self, until: datetime) -> list[tuple[datetime, str, Action]]:
        out = []
        while self.queue and self.queue[0][0] <= until:
            when, _n, label, action = heapq.heappop(self.queue)
            out.append((when, label, action))
        return out


def timeline(context: dict[str, Any]) -> Timeline:
    found = context.get("timeline")
    assert isinstance(found, Timeline), "the domain seeder runs first"
    return found


def add_actor(context: dict[str, Any], name: str, actor: Actor) -> None:
    """Register ``actor(session, rng, context, at)``, called after every sweep to plan what
    people do next (with :meth:`Timeline.at`)."""
    timeline(context).actors.append((name, actor))


def sweep_instants(start: datetime, now: datetime) -> list[datetime]:
    tz = hospital_tz()
    day = start.astimezone(tz).date()
    out: list[datetime] = []
    while True:
        for moment in SWEEP_TIMES:
            at = datetime.combine(day, moment, tzinfo=tz).astimezone(UTC)
            if start < at < now:
                out.append(at)
        if datetime.combine(day, time(0), tzinfo=tz) > now:
            break
        day += timedelta(days=1)
    return [*out, now]


# -- reference data --------------------------------------------------------------------------


def _reference_data(session: Session, context: dict[str, Any]) -> None:
    """Departments, wards and staff, as IT sets them up in the admin pages."""
    for dept in DEPARTMENTS:
        if session.get(Department, dept.code) is None:
            admin.create_department(session, id=dept.code, name_zh=dept.zh, name_en=dept.en,
                                    parent_id=None)
        for i, ward in enumerate(dept.wards, 1):
            if session.get(Department, ward) is None:
                admin.create_department(session, id=ward, name_zh=f"{dept.zh}{i}病区",
                                        name_en=f"{dept.en} ward {i}", parent_id=dept.code)
    for code, zh, en in SERVICES:
        if session.get(Department, code) is None:
            admin.create_department(session, id=code, name_zh=zh, name_en=en, parent_id=None)
    context["departments"] = [d.code for d in DEPARTMENTS] + [s[0] for s in SERVICES]
    context["wards"] = {d.code: list(d.wards) for d in DEPARTMENTS}
    users: dict[str, int] = context.setdefault("users", {})
    hashed = context.setdefault("password_hash", hash_password(DEMO_PASSWORD))

    def add(username: str, display: str, role: str, department: str | None) -> None:
        user = session.scalars(select(User).where(User.username == username)).first()
        if user is None:
            user = admin.create_user(session, username=username, display_name=display,
                                     password=DEMO_PASSWORD, check=False,
                                     password_hash=hashed)
        users[username] = user.id
        admin.grant(session, user, role, department)

    add("admin", "系统管理员", "system_admin", None)
    add("security", "安全管理员", "security_admin", None)
    add("auditor", "审计员", "auditor", None)
    add("leader", "院长", "leadership", None)
    add("px", "患者体验办", "px_office", None)
    add("px", "患者体验办", "px_office", "px_office")
    add("agent", "随访专员", "followup_agent", None)
    add("pharmacy_head", "药剂科主任", "pharmacy_head", "pharmacy")
    add("pharmacist", "药师", "pharmacist", "pharmacy")
    add("outpatient_director", "门诊部主任", "dept_director", "outpatient_office")
    add("ortho_health_manager", "骨科健康管理师", "health_manager", "orthopedics")  # consults
    for dept in DEPARTMENTS:
        add(f"{dept.code}_director", f"{dept.zh}主任", "dept_director", dept.code)
        add(f"{dept.code}_head_nurse", f"{dept.zh}护士长", "head_nurse", dept.code)
        add(f"{dept.code}_doctor", f"{dept.zh}医生", "doctor", dept.code)
        for i, ward in enumerate(dept.wards, 1):
            add(f"{ward}_nurse", f"{dept.zh}{i}病区护士", "nurse", ward)


# -- HIS events ------------------------------------------------------------------------------


@dataclass(slots=True)
class PlannedPatient:
    """One synthetic patient and their stay (what the HIS will tell Careloop)."""

    pid: str
    dept: Profile
    gender: str
    age: int
    discharged_at: datetime
    admitted_at: datetime
    diagnoses: list[str]
    procedures: list[str]
    tags: list[str]
    mood: float  # 0 happy … 1 unhappy: how this patient answers
    responsive: float  # chance of answering a form link
    showcase: str = ""


def _diagnoses(rng: random.Random, dept: str) -> tuple[list[str], list[str], list[str]]:
    if dept == "cardiology":
        if rng.random() < 0.55:
            dx = ["I25.1", *(["I10"] if rng.random() < 0.5 else [])]
            return dx, ["PCI"], ["after_pci", *(["chronic_path"] if "I10" in dx else [])]
        dx = rng.choice((["I10"], ["I50.9", "I10"], ["I48.0"]))
        return dx, [], ["chronic_path"] if "I10" in dx else []
    if dept == "orthopedics":
        return ["M17.1"], ["TKA"], ["joint_replacement"]
    if dept == "obstetrics":
        return ["O80"], ["delivery"], ["postpartum"]
    if dept == "endocrinology":
        return ["E11.9", *(["I10"] if rng.random() < 0.4 else [])], [], ["diabetes",
                                                                         "chronic_path"]
    return ["F32.1"], [], ["depression"]


def _plan_patients(rng: random.Random, count: int, start: datetime,
                   now: datetime) -> list[PlannedPatient]:
    out: list[PlannedPatient] = []
    weights = [d.weight for d in DEPARTMENTS]
    span = (now - start).total_seconds() - 2 * 86400
    for n in range(1, count + 1):
        dept = rng.choices(DEPARTMENTS, weights)[0]
        gender = "female" if rng.random() < dept.female else "male"
        low, high = dept.ages
        if dept.code == "cardiology" or dept.code == "orthopedics":
            age = min(high, max(low, round(rng.gauss((low + high) / 2 + 4, 9))))
        else:
            age = rng.randint(low, high)
        # discharges spread over the history, a few more in the last weeks (recent work)
        offset = span * (1 - rng.random() ** 1.3)
        discharged = (start + timedelta(days=1, seconds=offset)).replace(microsecond=0)
        local = discharged.astimezone(hospital_tz())
        discharged = local.replace(hour=rng.randint(9, 16), minute=rng.choice((0, 15, 30, 45)),
                                   second=0).astimezone(UTC)
        admitted = discharged - timedelta(days=rng.randint(*dept.stay), hours=rng.randint(0, 6))
        dx, procedures, tags = _diagnoses(rng, dept.code)
        if age >= 70:
            tags.append("aged_70_plus")
        out.append(PlannedPatient(f"P{n:06d}", dept, gender, age, discharged, admitted, dx,
                                  procedures, tags, mood=rng.random(),
                                  responsive=rng.choice((0.9, 0.8, 0.7, 0.5, 0.1))))
    _showcase(out, now)
    return out


def _showcase(patients: list[PlannedPatient], now: datetime) -> None:
    """Two cardiology patients whose day-3 answers arrive before "now": one within the last
    day (an urgent task still on time), one five days earlier and left untouched (it escalated
    to the director, then the PX office, and is overdue again). Both say the medication guidance was
    unclear (a copy for the pharmacy)."""
    if len(patients) < 10:
        return
    tz = hospital_tz()
    local_now = now.astimezone(tz)
    # the latest 09:30 day-3 send at least 2 hours before now (the 10:30 sweep sends it, the
    # patient answers half an hour later, the urgent task is due 24 hours after that)
    send = datetime.combine(local_now.date(), time(9, 30), tzinfo=tz)
    while send > local_now - timedelta(hours=2):
        send -= timedelta(days=1)
    cardiology = DEPARTMENTS[0]
    for slot, (days_back, name) in enumerate(((0, "on_time"), (5, "overdue"))):
        discharged = (send - timedelta(days=3 + days_back)).replace(hour=14, minute=0)
        patient = patients[-1 - slot]
        patient.dept, patient.showcase = cardiology, name
        patient.gender, patient.age = ("male", 72) if slot == 0 else ("female", 67)
        patient.discharged_at = discharged.astimezone(UTC)
        patient.admitted_at = patient.discharged_at - timedelta(days=5)
        patient.diagnoses, patient.procedures = ["I10", "I25.1"], []
        patient.tags = ["chronic_path", *(["aged_70_plus"] if patient.age >= 70 else [])]
        patient.mood, patient.responsive = 1.0, 1.0


def _birth(rng: random.Random, age: int, at: datetime) -> date:
    day = at.astimezone(hospital_tz()).date()
    born = date(day.year - age, 1, 1) - timedelta(days=rng.randint(1, 360))
    return born if born.year >= day.year - age - 1 else date(day.year - age - 1, 6, 1)


def _his(kind: str, event_id: str, at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "occurred_at": at.isoformat(),
            "payload": payload}


def _events_of(rng: random.Random, p: PlannedPatient,
               n: int) -> list[tuple[datetime, dict[str, Any]]]:
    """What the HIS sends about one patient, in order, each with its moment."""
    ward = rng.choice(p.dept.wards)
    birth = _birth(rng, p.age, p.admitted_at)
    female = p.gender == "female"
    booked = p.admitted_at - timedelta(days=6)
    registered = (booked if p.dept.code == "orthopedics" else p.admitted_at) \
        - timedelta(hours=2)
    base = f"demo-{p.pid}"
    events = [(registered, _his("patient.upserted", f"{base}-patient", registered, {
        "patient_id": p.pid, "mrn": f"MRN{n:07d}", "name": chinese_name(rng, p.gender),
        "gender": p.gender, "birth_date": birth.isoformat(),
        "phone": f"1{rng.choice('3578')}{rng.randrange(10**9):09d}",
        "id_number": _id_number(rng, birth, female), "locale": "zh-CN",
        "attributes": {"insurance": rng.choice(["urban_employee", "urban_rural", "self_pay"])},
        "consents": {"sms": True, "wechat": rng.random() < 0.7}, "tags": p.tags}))]
    stay = {"encounter_id": f"E{p.pid[1:]}-1", "patient_id": p.pid, "type": "inpatient",
            "department_id": p.dept.code, "ward_id": ward,
            "attending_doctor": f"{p.dept.code}_doctor", "responsible_nurse": f"{ward}_nurse",
            "admitted_at": p.admitted_at.isoformat(), "diagnoses": p.diagnoses,
            "procedures": p.procedures}
    if p.dept.code == "orthopedics":
        surgery = p.admitted_at + timedelta(days=1)
        events.append((booked, _his("surgery.scheduled", f"{base}-surgery", booked, {
            "surgery_id": f"S{p.pid[1:]}", "patient_id": p.pid, "department_id": p.dept.code,
            "scheduled_at": surgery.isoformat(), "procedure": "TKA"})))
    events.append((p.admitted_at, _his("encounter.admitted", f"{base}-admitted", p.admitted_at,
                                       stay)))
    events.append((p.discharged_at, _his(
        "encounter.discharged", f"{base}-discharged", p.discharged_at,
        {**stay, "discharged_at": p.discharged_at.isoformat()})))
    if p.dept.code == "orthopedics":
        revisit = (p.discharged_at + timedelta(days=14)).replace(hour=1, minute=30)
        events.append((p.discharged_at, _his(
            "appointment.booked", f"{base}-revisit", p.discharged_at, {
                "appointment_id": f"A{p.pid[1:]}", "patient_id": p.pid,
                "department_id": p.dept.code, "scheduled_at": revisit.isoformat(),
                "kind": "revisit"})))
    if "I10" in p.diagnoses and not p.showcase and rng.random() < 0.45:
        visit = p.discharged_at + timedelta(days=rng.randint(10, 30), hours=-4)
        events.append((visit, _his("encounter.admitted", f"{base}-clinic", visit, {
            "encounter_id": f"E{p.pid[1:]}-2", "patient_id": p.pid, "type": "outpatient",
            "department_id": p.dept.code, "attending_doctor": f"{p.dept.code}_doctor",
            "admitted_at": visit.isoformat(), "diagnoses": ["I10"]})))
    return events


def _ingest_action(event: dict[str, Any]) -> Action:
    def act(session: Session) -> None:
        from careloop.flows.ingest import ingest

        status, body = ingest(session, event, source="his")
        if status != 200:
            raise RuntimeError(f"demo event {event['event_id']} refused: {body}")
    return act


def seed_domain(session: Session, rng: random.Random, context: dict[str, Any]) -> None:
    """Reference data now; patients and their stays planned as HIS events on the timeline."""
    now: datetime = context["now"]
    line = Timeline(start=now - timedelta(days=HISTORY_DAYS), now=now)
    context["timeline"] = line
    _reference_data(session, context)
    planned = _plan_patients(rng, int(context.get("patient_count", 200)), line.start, now)
    context["planned"] = {p.pid: p for p in planned}
    context["patients"] = [p.pid for p in planned]
    context["encounters"] = [f"E{p.pid[1:]}-1" for p in planned]
    known = set(session.scalars(select(DomainEventRow.event_id).where(
        DomainEventRow.event_id.like("demo-%"))).all())
    fresh = 0
    newcomers: set[str] = context.setdefault("new_patients", set())
    for n, patient in enumerate(planned, 1):
        for at, event in _events_of(rng, patient, n):
            if event["event_id"] in known:
                continue
            fresh += 1
            newcomers.add(patient.pid)
            line.at(at, event["type"], _ingest_action(event))
    context["his_events"] = fresh
    add_actor(context, "staff", staff_actor)


# -- staff at work ---------------------------------------------------------------------------


def _principal_for(session: Session, task: Task) -> Any:
    from careloop.web.permissions import load_principal

    user = session.get(User, task.assignee_user_id) if task.assignee_user_id else None
    if user is None and task.assignee_role:
        query = select(RoleGrant.user_id).where(RoleGrant.role == task.assignee_role)
        if task.department_id:
            query = query.where(RoleGrant.department_id == task.department_id)
        user_id = session.scalars(query.order_by(RoleGrant.user_id)).first()
        user = session.get(User, user_id) if user_id else None
    return load_principal(session, user) if user is not None else None


def _work_on(task_id: int, outcome: str, note: str, decision: str | None) -> Action:
    def act(session: Session) -> None:
        from careloop.web import console

        task = session.get(Task, task_id)
        if task is None or task.status not in ("open", "in_progress"):
            return
        principal = _principal_for(session, task)
        if principal is None:
            return
        from careloop.flows.approvals import decide, is_approval

        if is_approval(session, task):
            decide(session, task.id, decision or "approve", actor=principal.username,
                   notes=note)
        elif task.kind == "phone_followup":
            _log_demo_call(session, task, principal.username, outcome, note)
        else:
            console.complete(session, task, principal, outcome, note)
    return act


def _log_demo_call(session: Session, task: Task, username: str, outcome: str,
                   note: str) -> None:
    """The nurse logs the call she just made (what the task page's call form stores) and closes
    the task with its outcome; an unanswered call rings for less than a minute."""
    from careloop.flows import calls

    seconds = 40 if outcome == "not_reached" else 90 + (task.id * 37) % 360
    call = calls.CallInput(started_at=now_utc() - timedelta(seconds=seconds + 120),
                           duration_seconds=seconds, outcome=outcome, notes=note)
    calls.log_call(session, task, call, caller=username, complete=True)


NOTES = {
    "reached_ok": "已电话联系患者，恢复良好，已做健康宣教。",
    "reached_problem": "已联系患者，反映的问题已转相关科室处理并向患者解释。",
    "not_reached": "电话无人接听，明日再拨。",
    "approve": "科室已核实情况并向患者说明，同意结案。",
    "reject": "回复不充分，请科室补充整改措施。",
}


def staff_actor(session: Session, rng: random.Random, context: dict[str, Any],
                at: datetime) -> None:
    """New tasks since the last sweep: most are done within hours by the person they are
    assigned to, some are left (they go overdue and escalate); outcomes are realistic."""
    from careloop.flows.approvals import is_approval

    line = timeline(context)
    seen = int(context.get("tasks_seen", 0))
    planned: dict[str, PlannedPatient] = context.get("planned", {})
    tasks = session.scalars(select(Task).where(Task.id > seen).order_by(Task.id)).all()
    for task in tasks:
        seen = task.id
        patient = planned.get(task.patient_id or "")
        if patient is not None and patient.showcase:
            continue  # left as it is: the first login's urgent work
        decision = None
        if task.kind == "complaint_response":
            continue  # the complaint actors reply to and resolve complaints
        if is_approval(session, task):
            if rng.random() < 0.12:
                continue
            decision = "reject" if rng.random() < 0.15 else "approve"
            delay = timedelta(hours=rng.randint(3, 30))
            outcome = decision
        else:
            if rng.random() < 0.12:
                continue
            outcome = rng.choices(("reached_ok", "reached_problem", "not_reached"),
                                  (0.72, 0.13, 0.15))[0]
            if task.priority == "urgent":
                outcome = "reached_problem"
            delay = timedelta(hours=rng.randint(2, 40))
        line.at(max(at, task.created_at) + delay, "task", _work_on(task.id, outcome,
                                                                    NOTES[outcome], decision))
    context["tasks_seen"] = seen


# -- running it ------------------------------------------------------------------------------


def seed(*, patients: int = 120, seed_value: int = 20261124, now: datetime | None = None,
         engine: Engine | None = None) -> dict[str, Any]:
    """Run every registered demo seeder, then let the planned months pass: HIS events,
    scheduler sweeps and what people do, each in its own transaction. Returns the context."""
    engine = engine or default_engine()
    rng = random.Random(seed_value)
    moment = (now or now_utc()).replace(microsecond=0)
    context: dict[str, Any] = {"patient_count": patients, "now": moment,
                               "password": DEMO_PASSWORD, "problems": []}
    seeders = list(loaded_registry().catalogue("demo_seeder").items())
    with transaction(engine) as session:
        # the domain (departments, staff, patients) first, whatever order the plugins loaded in
        for _name, seeder in sorted(seeders, key=lambda item: item[0] != "domain"):
            seeder(session, rng, context)
    line = timeline(context)
    if not context.get("his_events"):
        context["skipped_timeline"] = "already seeded"
        return context
    sweep: Callable[[Engine, datetime], Any] | None = context.get("sweep")
    for instant in sweep_instants(line.start, moment):
        with transaction(engine) as session:
            for when, label, action in line.due(instant):
                with frozen_now(when):
                    try:
                        with session.begin_nested():
                            action(session)
                    except Exception as exc:  # a refused action is reported, the demo goes on
                        context["problems"].append(f"{when:%Y-%m-%d %H:%M} {label}: {exc}")
        if sweep is not None:
            sweep(engine, instant)
        with transaction(engine) as session, frozen_now(instant):
            for _name, actor in line.actors:
                actor(session, rng, context, instant)
    return context


def seed_complaint_handling(session: Session, rng: random.Random,
                            context: dict[str, Any]) -> None:
    """Complaints taken by the PX office through the complaint intake (the console's staff
    entry) some days after a stay; most resolved later, some at first contact."""
    from careloop.engine.models import DefinitionRow

    if session.scalars(select(DefinitionRow.id).where(
            DefinitionRow.kind == "form", DefinitionRow.key == "complaint")).first() is None:
        context.setdefault("skipped", []).append("complaints: bundles not imported")
        return
    line = timeline(context)
    planned: dict[str, PlannedPatient] = context.get("planned", {})
    newcomers: set[str] = context.get("new_patients", set())
    for patient in planned.values():
        if patient.showcase or rng.random() >= 0.08 or patient.pid not in newcomers:
            continue
        at = patient.discharged_at + timedelta(days=rng.randint(1, 20),
                                               hours=rng.randint(0, 8))
        category, text = rng.choice(COMPLAINTS)
        line.at(at, "complaint", _complaint_intake(patient, category, text,
                                                   rng.random() < 0.7))
    context["complaints_planned"] = True
    add_actor(context, "complaint_resolution", _resolution_actor)


COMPLAINTS = (
    ("attitude", "护士在输液时态度恶劣，对家属大声呵斥。"),
    ("waiting", "预约的检查等了三个小时，没有任何解释。"),
    ("billing", "出院结算发现重复收费，要求退还。"),
    ("medical", "术后伤口疼痛加重，医生没有及时处理。"),
    ("environment", "病房空调坏了三天没有人修。"),
    ("attitude", "挂号窗口工作人员服务态度差。"),
    ("suggestion", "建议增加周末门诊，方便上班族就医。"),
)


def _complaint_intake(patient: PlannedPatient, category: str, text: str,
                      wants_contact: bool) -> Action:
    def act(session: Session) -> None:
        from careloop.engine.domain import Patient
        from careloop.forms.demo import fill_pages
        from careloop.web.staffentry import draft_request, post_entry

        px = session.scalars(select(User).where(User.username == "px")).one()
        record = session.get(Patient, patient.pid)
        if record is None:
            return
        entry = draft_request(session, form_key="complaint", patient_id=patient.pid,
                              encounter_id=None, source_ref=f"intake:{px.id}:{patient.pid}")
        fields = {"channel_of_complaint": ["phone"], "category": [category],
                  "department": [patient.dept.code], "description": [text],
                  "wants_contact": ["yes" if wants_contact and record.phone else "no"]}
        if wants_contact and record.phone:
            fields["contact_phone"] = [record.phone]
        url = f"/patients/{patient.pid}/complaint"
        fill_pages(entry, fields, lambda posted: post_entry(
            session, entry, posted, url=url, csrf="", locale="zh-CN",
            username=px.username).submission is not None)
    return act


def _resolution_actor(session: Session, rng: random.Random, context: dict[str, Any],
                      at: datetime) -> None:
    from careloop.forms.models import Submission

    line = timeline(context)
    seen = int(context.get("complaints_seen", 0))
    rows = session.scalars(select(Submission).where(
        Submission.form_key == "complaint", Submission.id > seen)
        .order_by(Submission.id)).all()
    for sub in rows:
        seen = sub.id
        if rng.random() >= 0.75:
            continue
        fcr = rng.random() < 0.4
        delay = timedelta(hours=rng.randint(2, 20) if fcr else rng.randint(30, 140))
        if not fcr:  # the department replied first: not resolved at first contact
            line.at(sub.submitted_at + delay / 2, "complaint.reply", _reply(sub.id))
        line.at(sub.submitted_at + delay, "complaint.resolve", _resolve(sub.id))
    context["complaints_seen"] = seen


def _reply(submission_id: int) -> Action:
    """The department's reply to a complaint: its first-response approval, approved."""
    def act(session: Session) -> None:
        from careloop.flows.approvals import approval_of, decide
        from careloop.web import complaints

        policy = complaints.policy(session)
        for task in complaints.handling(session, submission_id).tasks:
            if task.kind in policy.kinds and task.status == "open" and approval_of(session, task):
                who = _principal_for(session, task)
                if who is not None:
                    decide(session, task.id, "approve", actor=who.username,
                           notes="科室已回复患者")
                return
    return act


def _resolve(submission_id: int) -> Action:
    def act(session: Session) -> None:
        from careloop.forms.models import Submission
        from careloop.web import complaints
        from careloop.web.permissions import load_principal

        sub = session.get(Submission, submission_id)
        px = session.scalars(select(User).where(User.username == "px")).one()
        if sub is None or sub.status == "resolved":
            return
        complaints.resolve(session, sub, load_principal(session, px),
                           notes="已电话回访患者并致歉，问题已处理。")
    return act
