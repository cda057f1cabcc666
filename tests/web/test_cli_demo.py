"""``careloop user create-admin``, ``careloop demo seed``, ``careloop up --demo``; password
policy profiles; TOTP."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.clock import frozen_now, now_utc, wall_clock_utc
from careloop.engine.db import transaction
from careloop.engine.domain import (
    Department,
    Encounter,
    Patient,
    RoleGrant,
    Task,
    TaskHistory,
    User,
)
from careloop.engine.registry import loaded_registry
from careloop.forms.models import FormRequest, Submission
from careloop.web.cli import create_admin, demo_seed, up
from careloop.web.demo import DEMO_PASSWORD, chinese_name
from careloop.web.models import UserCredential
from careloop.web.passwords import check_password

from .conftest import PASSWORD, UserFactory, csrf_from, login


def test_create_admin_from_stdin_and_policy(engine: Engine) -> None:
    runner = CliRunner()
    weak = runner.invoke(create_admin, ["root", "--password-stdin"], input="password\n")
    assert weak.exit_code == 1 and "at least 12" in weak.output
    result = runner.invoke(create_admin, ["root", "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    with transaction() as session:
        user = session.scalars(select(User).where(User.username == "root")).one()
        roles = set(session.scalars(select(RoleGrant.role).where(
            RoleGrant.user_id == user.id)).all())
        cred = session.get(UserCredential, user.id)
        assert cred is not None and cred.password_hash.startswith("$argon2id$")
    assert roles == {"security_admin"}  # one administrative role per person


def test_up_without_users_says_how_to_create_the_administrator(engine: Engine,
                                                                tmp_path: object) -> None:
    result = CliRunner().invoke(up, ["--no-serve", "--bundles", "app_definitions"])
    assert result.exit_code == 0, result.output
    assert "careloop user create-admin" in result.output


def _counts() -> dict[str, int]:
    from careloop.engine.models import DomainEventRow
    from careloop.flows.models import FlowRun, OutboxMessage

    with transaction() as session:
        return {model.__name__: int(session.scalar(select(func.count()).select_from(model)) or 0)
                for model in (Patient, Encounter, DomainEventRow, Submission, FormRequest, Task,
                              FlowRun, OutboxMessage, User)}


def test_up_demo_is_produced_through_the_public_paths(engine: Engine) -> None:
    """One demo (``careloop up --demo``), then everything a first login relies on."""
    result = CliRunner().invoke(up, ["--no-serve", "--demo", "--patients", "40"])
    assert result.exit_code == 0, result.output
    assert DEMO_PASSWORD in result.output and "cardiology_head_nurse" in result.output
    assert "demo:" not in result.output  # no action of the demo was refused
    first = _counts()
    assert first["Patient"] == 40
    with transaction() as session:
        roles = set(session.scalars(select(RoleGrant.role)).all())
    assert roles == set(loaded_registry().catalogue("role").names())
    assert {"domain", "forms", "flows", "complaint_handling"} <= set(
        loaded_registry().catalogue("demo_seeder").names())
    now = now_utc()
    _patients_came_from_the_his()
    _people_match_their_records(now)
    _answers_come_from_links_that_were_sent()
    _touchpoint_answers_came_from_scans()
    _tasks_come_from_rules_flows_and_people()
    _first_login_finds_work()
    # idempotent: a second start does not seed; seeding again changes nothing (stable event ids)
    again = CliRunner().invoke(up, ["--no-serve", "--demo", "--patients", "40"])
    assert again.exit_code == 0 and DEMO_PASSWORD not in again.output
    reseed = CliRunner().invoke(demo_seed, ["--patients", "40"])
    assert reseed.exit_code == 0, reseed.output
    assert _counts() == first


def _patients_came_from_the_his() -> None:
    from careloop.engine.models import DomainEventRow

    with transaction() as session:
        events = session.scalars(select(DomainEventRow)).all()
        patients = set(session.scalars(select(Patient.id)).all())
        encounters = session.scalars(select(Encounter)).all()
        departments = {d.id: d for d in session.scalars(select(Department)).all()}
    upserted = {e.payload["patient_id"] for e in events if e.type == "patient.upserted"}
    discharged = {e.payload["encounter_id"] for e in events if e.type == "encounter.discharged"}
    assert upserted == patients and all(e.source == "his" for e in events
                                        if e.type.startswith(("patient.", "encounter.")))
    assert all(e.id in discharged for e in encounters if e.type == "inpatient")
    assert {"surgery.scheduled", "appointment.booked"} <= {e.type for e in events}
    # departments were set up by IT (names, kinds), never auto-created from an event
    assert all(d.name["zh-CN"] != d.id for d in departments.values())
    assert {e.department_id for e in encounters} | {e.ward_id for e in encounters
                                                    if e.ward_id} <= set(departments)
    span = [e.discharged_at for e in encounters if e.discharged_at]
    assert max(span) - min(span) > timedelta(days=90)


def _people_match_their_records(now: object) -> None:
    from careloop.web.demo import GIVEN_FEMALE, GIVEN_MALE

    with transaction() as session:
        rows = session.execute(select(Patient, Encounter).join(
            Encounter, Encounter.patient_id == Patient.id)).all()
    for patient, encounter in rows:
        given = patient.name[1:]
        assert given in (GIVEN_FEMALE if patient.gender == "female" else GIVEN_MALE), \
            patient.id
        assert patient.birth_date is not None
        at = (encounter.discharged_at or encounter.admitted_at)
        assert at is not None
        age = (at.date() - patient.birth_date).days // 365
        if encounter.department_id == "obstetrics":
            assert patient.gender == "female" and 18 <= age <= 45, (patient.id, age)
        if "PCI" in encounter.procedures.get("codes", []):
            assert age >= 40, (patient.id, age)
        assert 16 <= age <= 95
        # the national ID number carries the birth date and the gender
        assert patient.id_number is not None
        assert patient.id_number[6:14] == f"{patient.birth_date:%Y%m%d}"
        assert int(patient.id_number[16]) % 2 == (0 if patient.gender == "female" else 1)


def _answers_come_from_links_that_were_sent() -> None:
    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import message_text
    from careloop.forms.demo import DELIVERED, LINK
    from careloop.forms.requests import hash_token

    with transaction() as session:
        submissions = session.scalars(select(Submission)).all()
        requests = {r.id: r for r in session.scalars(select(FormRequest)).all()}
        sent = session.scalars(select(OutboxMessage).where(
            OutboxMessage.status.in_(DELIVERED))).all()
        texts = {m.id: message_text(session, m)[1] for m in sent}
    links: dict[str, OutboxMessage] = {}
    for message in sorted(sent, key=lambda m: m.id):
        match = LINK.search(texts[message.id])
        if match:
            links.setdefault(hash_token(match.group(1)), message)
    forms = {s.form_key for s in submissions}
    assert {"discharge_day3", "cardiac_stent_followup", "home_bp", "complaint",
            "inpatient_satisfaction", "outpatient_satisfaction"} <= forms
    for sub in submissions:
        if sub.touchpoint_key is not None:  # a QR scan at a place: anonymous, no link
            assert sub.patient_id is None and sub.request_id is None and sub.channel == "qr"
            continue
        assert sub.request_id is not None
        request = requests[sub.request_id]
        if sub.form_key == "complaint":  # taken by the PX office through the intake
            assert sub.entered_by == "px"
            continue
        message = links.get(request.token_hash)
        assert message is not None, f"submission {sub.id}: its link was never sent"
        assert message.patient_id == sub.patient_id and sub.entered_by is None
        assert (message.sent_at or message.next_attempt_at) <= sub.submitted_at
    day3 = [s for s in submissions if s.form_key == "discharge_day3"]
    satisfied = [s for s in day3 if int(s.answers["overall"]) >= 4]
    unhappy = [s for s in day3 if int(s.answers["overall"]) < 3]
    assert len(satisfied) > len(day3) / 2 and unhappy
    assert any("用药指导不清楚" in str(s.answers.get("comment", "")) for s in unhappy)
    assert {"pending_dissatisfied", "archived"} <= {s.status for s in day3}
    # the satisfaction surveys (inpatient day 14, outpatient the next day): answered through
    # the links the satisfaction app's flows sent, NPS from detractors to promoters, the unhappy
    # reaching the head nurse (pending, or resolved by the staff who called them)
    survey = [s for s in submissions if s.form_key.endswith("_satisfaction")]
    states = {s.status for s in survey}
    assert "archived" in states and states & {"pending_dissatisfied", "resolved"}, states
    nps = {int(s.answers["nps"]) for s in survey}
    assert min(nps) <= 6 and max(nps) >= 9
    assert all(s.answers.get("low_reasons") for s in survey if int(s.answers["overall"]) <= 2)
    # some patients never answer
    assert any(r.status in ("sent", "expired") for r in requests.values())


def _touchpoint_answers_came_from_scans() -> None:
    """Every touchpoint answer went through the QR page (its device visit is recorded), and a
    low score reached the place's owner as a task."""
    from careloop.forms.models import TouchpointVisit

    with transaction() as session:
        answers = session.scalars(select(Submission).where(
            Submission.touchpoint_key.is_not(None))).all()
        visits = {v.submission_id for v in session.scalars(select(TouchpointVisit)).all()}
        low = [s for s in answers if int(s.answers["rating"]) <= 2]
        tasks = session.scalars(select(Task).where(Task.source_type == "rule")).all()
    assert len({s.touchpoint_key for s in answers}) >= 5
    assert {s.id for s in answers} == visits
    tasked = {t.details.get("submission_id") for t in tasks}
    assert low and all(s.id in tasked for s in low)


def _tasks_come_from_rules_flows_and_people() -> None:
    with transaction() as session:
        tasks = session.scalars(select(Task)).all()
        history = session.scalars(select(TaskHistory).order_by(TaskHistory.id)).all()
        staff = set(session.scalars(select(User.username)).all())
    created = {h.task_id: h for h in reversed(history) if h.action == "created"}
    for task in tasks:
        entry = created.get(task.id)
        assert entry is not None, f"task {task.id} has no creating action"
        assert task.source_type in ("flow", "rule")
        assert entry.actor in ("flows", "system") or entry.actor.startswith("rule:")
    completed = [h for h in history if h.action == "completed"]
    assert completed and all(h.actor in staff for h in completed)
    outcomes = {t.outcome for t in tasks if t.status == "done"}
    assert "reached_ok" in outcomes and len(outcomes) >= 3
    assert "rejectd" not in outcomes  # an approval rejected is recorded as "rejected"
    assert any(h.action == "escalated" for h in history)
    assert any(h.action == "retry_scheduled" for h in history) or "not_reached" not in outcomes


def _first_login_finds_work() -> None:
    from careloop.web import console
    from careloop.web.permissions import load_principal

    with transaction() as session:
        def principal(username: str) -> object:
            user = session.scalars(select(User).where(User.username == username)).one()
            return load_principal(session, user)

        head = principal("cardiology_head_nurse")
        tasks = console.inbox(session, head, "department")  # type: ignore[arg-type]
        mine = console.inbox(session, head, "mine")  # type: ignore[arg-type]
        pharmacy = console.inbox(session, principal("pharmacy_head"), "mine")  # type: ignore[arg-type]
        overdue = console.counts(session, head)["overdue"]  # type: ignore[arg-type]
    assert any(t["priority"] == "urgent" for t in mine)
    assert overdue > 0
    states = {t["sla"] for t in tasks}
    assert "overdue" in states and states - {"overdue"}, states  # and some still on time
    urgent_on_time = [t for t in mine if t["priority"] == "urgent" and t["sla"] != "overdue"]
    assert urgent_on_time and "不满意" in urgent_on_time[0]["title"]
    assert any(t["kind"] == "cc" for t in pharmacy)


def test_demo_staff_can_sign_in(client: TestClient) -> None:
    CliRunner().invoke(demo_seed, ["--patients", "10"])
    login(client, "cardio_w1_nurse", DEMO_PASSWORD)
    assert client.get("/inbox").status_code == 200


def test_chinese_names_follow_the_gender() -> None:
    import random

    from careloop.web.demo import GIVEN_FEMALE, GIVEN_MALE

    assert not set(GIVEN_MALE) & set(GIVEN_FEMALE)
    rng = random.Random(1)
    women = {chinese_name(rng, "female") for _ in range(60)}
    men = {chinese_name(rng, "male") for _ in range(60)}
    assert len(women) > 40 and len(men) > 40
    assert all(n[1:] in GIVEN_FEMALE for n in women) and all(n[1:] in GIVEN_MALE for n in men)


@pytest.mark.parametrize(("password", "policy", "codes"), [
    ("Kq7#mPz2vL", "mlps3", []),
    ("Abc12345", "mlps3", ["web.password.breached", "web.password.weak_common"]),
    ("abcdefgh", "mlps3", ["web.password.classes", "web.password.breached",
                           "web.password.weak_sequence"]),
    ("Ab1", "mlps3", ["web.password.too_short", "web.password.common_word",
                      "web.password.weak"]),
    ("a long passphrase", "asvs", []),
    ("password1234", "asvs", ["web.password.breached", "web.password.weak_common"]),
    ("Password@2024", "asvs", ["web.password.breached", "web.password.weak_common"]),
    ("Abc12345", "asvs", ["web.password.too_short", "web.password.breached",
                          "web.password.weak_common"]),
])
def test_password_profiles(password: str, policy: str, codes: list[str]) -> None:
    assert [p.code for p in check_password(password, policy)] == codes


def test_mlps3_rotation_forces_a_password_change(client: TestClient, user_factory: UserFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_PASSWORD_POLICY", "mlps3")
    user_factory("nurse", "nurse", None)
    with frozen_now(now_utc() + timedelta(days=91)):
        page = client.get("/login")
        response = client.post("/login", data={"username": "nurse", "password": PASSWORD,
                                               "csrf_token": csrf_from(page.text)},
                               follow_redirects=False)
        assert response.headers["location"] == "/account/password"
        assert client.get("/inbox", follow_redirects=False).headers["location"] == \
            "/account/password"
        form = client.get("/account/password")
        changed = client.post("/account/password", data={
            "current_password": PASSWORD, "new_password": "Newer-Pass-42",
            "csrf_token": csrf_from(form.text)})
        assert changed.status_code == 200
        assert client.get("/inbox").status_code == 200


def test_totp_second_factor(client: TestClient, user_factory: UserFactory) -> None:
    user_factory("doc", "doctor", None)
    login(client, "doc")
    page = client.get("/account/totp")
    assert 'name="secret"' not in page.text  # the server keeps the secret, the form posts none
    secret = page.text.split('id="totp-secret">')[1].split("<")[0]
    assert "<svg" in page.text  # the QR code, drawn locally
    wrong = client.post("/account/totp", data={"current_password": PASSWORD, "code": "000000",
                                               "csrf_token": csrf_from(page.text)})
    assert wrong.status_code == 400
    totp = pyotp.TOTP(secret)
    ok = client.post("/account/totp", data={"current_password": PASSWORD, "code": totp.now(),
                                            "csrf_token": csrf_from(page.text)})
    assert ok.status_code == 200 and 'id="totp-enabled"' in ok.text
    client.cookies.clear()
    login_page = client.get("/login")
    response = client.post("/login", data={"username": "doc", "password": PASSWORD,
                                           "csrf_token": csrf_from(login_page.text)},
                           follow_redirects=False)
    assert response.headers["location"] == "/login/totp"
    assert client.get("/api/v1/me").status_code == 401  # not signed in yet
    form = client.get("/login/totp")
    assert client.post("/login/totp", data={"code": "123456",
                                            "csrf_token": csrf_from(form.text)}).status_code \
        in (401,)
    # the enrolment's code was used; the next 30-second step's code signs in
    done = client.post("/login/totp", data={"code": totp.at(wall_clock_utc() + timedelta(
        seconds=30)), "csrf_token": csrf_from(form.text)}, follow_redirects=False)
    assert done.status_code == 303
    assert client.get("/api/v1/me").status_code == 200


def test_demo_complaints_centre_and_dashboard_agree_on_fcr(engine: Engine,
                                                          client: TestClient) -> None:
    """One first-contact-resolution meaning on the demo data: the centre's KPI is the
    dashboard's hospital-level figure, and the demo has both kinds of resolution."""
    import re

    result = CliRunner().invoke(up, ["--no-serve", "--demo", "--patients", "150"])
    assert result.exit_code == 0, result.output
    with transaction() as session:
        outcomes = set(session.scalars(select(Task.outcome).where(
            Task.kind == "complaint_response", Task.status == "done")).all())
    assert {"resolved", "approved"} <= outcomes
    login(client, "px", DEMO_PASSWORD)
    total = client.get("/api/v1/reports/dashboards/complaints_overview/drill/"
                       "complaint_handling").json()
    figure = total["rows"][0]["first_contact_resolution"]
    assert 0 < figure < 100
    match = re.search(r'id="fcr-rate">(\d+)%', client.get("/complaints").text)
    assert match and int(match.group(1)) == round(figure)
