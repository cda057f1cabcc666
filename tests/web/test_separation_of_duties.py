"""Separation of duties (三权分立) through the users page, as the attacks were reproduced on main:
the security administrator granting itself px_office / auditor / system_admin and then revealing
a patient's phone and reading the audit log; deactivating the only auditor alone; grant forms
defaulting to 系统管理员 / 全院; complaints resolved without ``complaints.manage`` or by the staff
member they name."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, RoleGrant, User
from careloop.engine.models import AuditRow
from careloop.web import admin
from careloop.web.app import create_app
from careloop.web.models import AdminRequest

from .conftest import UserFactory, csrf_from, get_user, login


def _as(username: str) -> tuple[TestClient, str]:
    client = TestClient(create_app())
    login(client, username)
    return client, csrf_from(client.get("/admin/users").text) \
        if client.get("/admin/users").status_code == 200 else ""


def _roles(username: str) -> set[str]:
    user = get_user(username)
    with transaction() as session:
        return set(session.scalars(select(RoleGrant.role).where(RoleGrant.user_id == user.id)))


def _patient(engine: Engine) -> None:
    with transaction(engine) as session:
        session.add(Department(id="psychiatry", name={"zh-CN": "精神心理科", "en": "Psychiatry"}))
        session.add(Patient(id="P1", mrn="M1", name="测试患者", phone="13812345678",
                            id_number="110101199003071234"))
        session.flush()
        session.add(Encounter(id="E1", patient_id="P1", type="inpatient",
                              department_id="psychiatry", status="admitted"))


def test_security_admin_cannot_grant_itself_anything(engine: Engine,
                                                     user_factory: UserFactory) -> None:
    _patient(engine)
    user_factory("security", "security_admin", None)
    client, token = _as("security")
    me = get_user("security")
    for role in ("px_office", "auditor", "system_admin"):
        refused = client.post(f"/admin/users/{me.id}/grants",
                              data={"role": role, "department_id": "*", "csrf_token": token})
        assert refused.status_code == 400
        assert "不能为自己授予或撤销角色" in refused.text
    assert _roles("security") == {"security_admin"}
    with transaction() as session:
        assert session.scalars(select(AdminRequest)).all() == []
        denied = session.scalars(select(AuditRow).where(
            AuditRow.action == "permission.grant", AuditRow.outcome == "denied")
            .order_by(AuditRow.id)).all()
    assert [r.details["role"] for r in denied] == ["px_office", "auditor", "system_admin"]
    # nor revoke its own role
    (own,) = [g for g in _grants(me.id)]
    assert client.post(f"/admin/users/{me.id}/grants/{own}/revoke",
                       data={"csrf_token": token}).status_code == 400
    # and with what it has, no patient data and no audit log
    api_token = client.get("/api/v1/me").json()["csrf_token"]
    assert client.post("/api/v1/patients/P1/reveal", json={"reason": "查看"},
                       headers={"X-CSRF-Token": api_token}).status_code == 403
    assert client.get("/api/v1/audit").status_code == 403


def _grants(user_id: int) -> list[int]:
    with transaction() as session:
        return list(session.scalars(select(RoleGrant.id).where(RoleGrant.user_id == user_id)))


def test_an_administrator_holding_patient_roles_sees_no_patient_data(
        engine: Engine, user_factory: UserFactory) -> None:
    """A database from before the rule (security already holds px_office): the administrator
    role wins, no patient data."""
    _patient(engine)
    user_factory("security", "security_admin", None)
    with transaction() as session:
        session.add(RoleGrant(user_id=get_user("security").id, role="px_office"))
    client, _ = _as("security")
    assert client.get("/api/v1/patients/P1").status_code == 403
    assert "patient.view" not in client.get("/api/v1/me").json()["permissions"]


def test_administrative_roles_exclude_each_other_and_patient_roles(
        engine: Engine, user_factory: UserFactory) -> None:
    user_factory("security", "security_admin", None)
    user_factory("ops", "system_admin", None)
    user_factory("nurse", "nurse", None)
    client, token = _as("security")
    for username, role in (("ops", "auditor"), ("ops", "px_office"), ("nurse", "auditor")):
        user = get_user(username)
        refused = client.post(f"/admin/users/{user.id}/grants",
                              data={"role": role, "department_id": "*", "csrf_token": token})
        assert refused.status_code == 400 and "三权分立" in refused.text
    assert _roles("ops") == {"system_admin"} and _roles("nurse") == {"nurse"}
    with transaction() as session:
        try:
            admin.grant(session, get_user("ops"), "auditor", None)
        except admin.AdminError as exc:
            assert exc.key == "web.sod.conflict"
        else:
            raise AssertionError("the data layer must refuse the mix too")


def test_granting_an_administrative_role_needs_a_second_security_admin(
        engine: Engine, user_factory: UserFactory) -> None:
    user_factory("security", "security_admin", None)
    user_factory("security2", "security_admin", None)
    with transaction() as session:
        admin.create_user(session, username="newaudit", display_name="新审计员",
                          password="Correct-Horse-Battery-9")
    client, token = _as("security")
    target = get_user("newaudit")
    asked = client.post(f"/admin/users/{target.id}/grants", follow_redirects=False,
                        data={"role": "auditor", "department_id": "*", "csrf_token": token})
    assert asked.status_code == 303 and asked.headers["location"] == "/admin/users?pending=1"
    assert _roles("newaudit") == set()  # not yet
    page = client.get("/admin/users?pending=1").text
    assert "待审批的管理申请" in page and "授予角色 · 审计员" in page and "新审计员" in page
    (pending,) = _pending()
    # the requester cannot approve their own request
    self_approved = client.post(f"/admin/requests/{pending}/approve",
                                data={"csrf_token": token})
    assert self_approved.status_code == 400 and _roles("newaudit") == set()
    second, token2 = _as("security2")
    approved = second.post(f"/admin/requests/{pending}/approve", follow_redirects=False,
                           data={"csrf_token": token2})
    assert approved.status_code == 303
    assert _roles("newaudit") == {"auditor"}
    assert _pending() == []
    with transaction() as session:
        actions = [(r.actor, r.action, r.outcome) for r in session.scalars(
            select(AuditRow).where(AuditRow.action.like("permission.%"))
            .order_by(AuditRow.id)).all()]
    assert actions == [("security", "permission.request", "success"),
                       ("security", "permission.approve", "denied"),
                       ("security2", "permission.approve", "success")]


def _pending() -> list[int]:
    with transaction() as session:
        return list(session.scalars(select(AdminRequest.id).where(
            AdminRequest.status == "pending").order_by(AdminRequest.id)))


def test_the_last_auditor_is_not_deactivated_by_one_person(engine: Engine,
                                                          user_factory: UserFactory) -> None:
    user_factory("security", "security_admin", None)
    user_factory("security2", "security_admin", None)
    user_factory("auditor", "auditor", None)
    client, token = _as("security")
    auditor = get_user("auditor")
    client.post(f"/admin/users/{auditor.id}/status", data={"action": "deactivate",
                                                          "csrf_token": token})
    (grant_id,) = _grants(auditor.id)
    client.post(f"/admin/users/{auditor.id}/grants/{grant_id}/revoke",
                data={"csrf_token": token})
    assert get_user("auditor").active and _roles("auditor") == {"auditor"}
    assert len(_pending()) == 2
    page = client.get("/admin/users").text
    assert "停用账号" in page and "撤销角色 · 审计员" in page
    second, token2 = _as("security2")
    deactivate = _pending()[0]
    assert second.post(f"/admin/requests/{deactivate}/approve", follow_redirects=False,
                       data={"csrf_token": token2}).status_code == 303
    assert not get_user("auditor").active
    revoke = _pending()[0]
    assert second.post(f"/admin/requests/{revoke}/reject", follow_redirects=False,
                       data={"csrf_token": token2}).status_code == 303
    assert _roles("auditor") == {"auditor"} and _pending() == []
    with transaction() as session:
        statuses = [r.status for r in session.scalars(select(AdminRequest)
                                                      .order_by(AdminRequest.id))]
    assert statuses == ["approved", "rejected"]  # kept, with the decision


def test_grant_forms_have_no_privileged_default(engine: Engine,
                                                user_factory: UserFactory) -> None:
    user_factory("security", "security_admin", None)
    user_factory("nurse", "nurse", None)
    client, token = _as("security")
    page = client.get("/admin/users").text
    for select_html in re.findall(r'<select name="(?:role|department_id)"[^>]*>.*?</select>',
                                  page, flags=re.S):
        first = re.search(r"<option([^>]*)>([^<]*)</option>", select_html)
        assert first is not None
        assert 'value=""' in first.group(1) and first.group(2) == "请选择…"
        assert "selected" not in select_html.replace(first.group(0), "")
    nurse = get_user("nurse")
    for data in ({"role": "doctor", "department_id": ""}, {"role": "", "department_id": "*"}):
        refused = client.post(f"/admin/users/{nurse.id}/grants",
                              data={**data, "csrf_token": token})
        assert refused.status_code == 400
    assert _roles("nurse") == {"nurse"}
    with transaction() as session:
        assert session.scalars(select(User).where(User.username == "x")).first() is None


def _complaint(wards: dict[str, int], staff: str) -> int:
    """A complaint about cardiology ward A's staff member ``staff``, registered by the PX
    office through the staff-entry form (the shipped complaints app)."""
    from pathlib import Path

    from careloop.engine.bundles import import_bundle

    apps = Path(__file__).resolve().parents[2] / "app_definitions"
    for app in ("common", "complaints"):
        import_bundle(apps / app, actor="test")
    client = TestClient(create_app())
    login(client, "px")
    form = client.get("/patients/PA/complaint")
    posted = client.post("/patients/PA/complaint", data={
        "csrf_token": csrf_from(form.text), "_page": "0", "_action": "submit",
        "channel_of_complaint": "phone", "category": "attitude", "department": "cardio",
        "staff_concerned": staff, "description": "夜班护士态度生硬", "wants_contact": "no"},
        follow_redirects=False)
    assert posted.status_code == 303, posted.text
    return int(posted.headers["location"].rsplit("/", 1)[1])


def test_complaints_need_complaints_manage_and_never_about_yourself(
        wards: dict[str, int], user_factory: UserFactory) -> None:
    user_factory("px", "px_office", None)
    user_factory("nurse_a", "nurse", "ward_a")
    user_factory("hn_cardio", "head_nurse", "cardio")
    user_factory("hn_cardio2", "head_nurse", "cardio")
    complaint = _complaint(wards, "hn_cardio")

    nurse = TestClient(create_app())
    login(nurse, "nurse_a")
    page = nurse.get(f"/complaints/{complaint}")
    assert page.status_code == 200 and f"/complaints/{complaint}/resolve" not in page.text
    refused = nurse.post(f"/complaints/{complaint}/resolve",
                         data={"csrf_token": csrf_from(page.text), "notes": "已处理"})
    assert refused.status_code == 403

    named = TestClient(create_app())
    login(named, "hn_cardio")
    page = named.get(f"/complaints/{complaint}")
    assert f"/complaints/{complaint}/resolve" not in page.text
    about_me = named.post(f"/complaints/{complaint}/resolve",
                          data={"csrf_token": csrf_from(page.text), "notes": "已处理"})
    assert about_me.status_code == 403 and "该投诉涉及您本人" in about_me.text

    colleague = TestClient(create_app())
    login(colleague, "hn_cardio2")
    page = colleague.get(f"/complaints/{complaint}")
    assert f"/complaints/{complaint}/resolve" in page.text
    done = colleague.post(f"/complaints/{complaint}/resolve", follow_redirects=False,
                          data={"csrf_token": csrf_from(page.text), "notes": "已致歉"})
    assert done.status_code == 303
    with transaction() as session:
        from careloop.forms.models import Submission

        sub = session.get(Submission, complaint)
        assert sub is not None and sub.status == "resolved"
        rows = session.scalars(select(AuditRow).where(AuditRow.action.in_(
            ("complaint.resolve", "access.denied"))).order_by(AuditRow.id)).all()
    assert [(r.actor, r.action, r.outcome) for r in rows] == [
        ("nurse_a", "access.denied", "denied"), ("hn_cardio", "complaint.resolve", "denied"),
        ("hn_cardio2", "complaint.resolve", "success")]
