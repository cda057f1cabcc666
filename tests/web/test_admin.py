"""Administration: users and grants (audited), departments, bundles (plan, apply, export)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from careloop.engine.db import transaction
from careloop.engine.domain import Department, RoleGrant
from careloop.engine.models import AuditRow, BundleRow

from .conftest import PASSWORD, UserFactory, csrf_from, get_user, login

ROOT = Path(__file__).resolve().parents[2]


def test_security_admin_creates_users_and_grants_roles(client: TestClient,
                                                       user_factory: UserFactory) -> None:
    user_factory("sec", "security_admin", None)
    login(client, "sec")
    page = client.get("/admin/users")
    token = csrf_from(page.text)
    weak = client.post("/admin/users", data={"username": "li_na", "password": "password123",
                                             "role": "nurse", "csrf_token": token})
    assert weak.status_code == 400
    created = client.post("/admin/users", data={
        "username": "li_na", "display_name": "李娜", "password": PASSWORD, "role": "nurse",
        "department_id": "*", "csrf_token": token}, follow_redirects=False)
    assert created.status_code == 303
    user = get_user("li_na")
    client.post(f"/admin/users/{user.id}/grants", data={"role": "doctor", "department_id": "*",
                                                         "csrf_token": token})
    with transaction() as session:
        grants = session.scalars(select(RoleGrant).where(RoleGrant.user_id == user.id)).all()
        actions = session.scalars(select(AuditRow.action)).all()
        first = grants[0].id
    assert {g.role for g in grants} == {"nurse", "doctor"}
    assert "user.create" in actions and "permission.grant" in actions
    client.post(f"/admin/users/{user.id}/grants/{first}/revoke", data={"csrf_token": token})
    client.post(f"/admin/users/{user.id}/status", data={"action": "deactivate",
                                                         "csrf_token": token})
    with transaction() as session:
        assert len(session.scalars(select(RoleGrant).where(
            RoleGrant.user_id == user.id)).all()) == 1
        assert "permission.revoke" in session.scalars(select(AuditRow.action)).all()
    assert client.get("/admin/roles").status_code == 200


def test_a_nurse_cannot_open_administration(client: TestClient,
                                            user_factory: UserFactory) -> None:
    user_factory("nurse", "nurse", None)
    login(client, "nurse")
    for path in ("/admin/users", "/admin/departments", "/admin/bundles", "/admin/audit"):
        assert client.get(path).status_code == 403


def test_departments_and_wards(client: TestClient, user_factory: UserFactory) -> None:
    user_factory("admin", "system_admin", None)
    login(client, "admin")
    token = csrf_from(client.get("/admin/departments").text)
    client.post("/admin/departments", data={"id": "cardio", "name_zh": "心内科",
                                            "name_en": "Cardiology", "csrf_token": token})
    client.post("/admin/departments", data={"id": "cardio_w1", "name_zh": "心内一病区",
                                            "parent_id": "cardio", "csrf_token": token})
    bad = client.post("/admin/departments", data={"id": "Bad Id", "name_zh": "x",
                                                  "csrf_token": token})
    assert bad.status_code == 400
    with transaction() as session:
        ward = session.get(Department, "cardio_w1")
        assert ward is not None and ward.kind == "ward" and ward.parent_id == "cardio"


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return buffer.getvalue()


def test_bundle_import_shows_the_plan_then_applies_then_exports(
        client: TestClient, user_factory: UserFactory) -> None:
    user_factory("admin", "system_admin", None)
    login(client, "admin")
    token = csrf_from(client.get("/admin/bundles").text)
    data = _zip(ROOT / "app_definitions" / "common")
    plan = client.post("/admin/bundles/plan", data={"csrf_token": token},
                       files={"file": ("common.zip", data, "application/zip")})
    assert plan.status_code == 200 and 'id="plan"' in plan.text and 'id="apply"' in plan.text
    with transaction() as session:
        assert session.scalars(select(BundleRow)).all() == []  # the plan wrote nothing
    payload = plan.text.split('name="payload" value="')[1].split('"')[0]
    digest = plan.text.split('name="digest" value="')[1].split('"')[0]
    tampered = client.post("/admin/bundles/apply", data={"payload": payload, "digest": "0" * 64,
                                                         "csrf_token": token})
    assert tampered.status_code == 400
    applied = client.post("/admin/bundles/apply", data={"payload": payload, "digest": digest,
                                                        "csrf_token": token})
    assert applied.status_code == 200
    with transaction() as session:
        assert [b.id for b in session.scalars(select(BundleRow)).all()] == ["common"]
        actions = session.scalars(select(AuditRow.action)).all()
    assert "bundle.import" in actions
    exported = client.get("/admin/bundles/common/export")
    assert exported.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
    broken = client.post("/admin/bundles/plan", data={"csrf_token": token},
                         files={"file": ("x.zip", b"not a zip", "application/zip")})
    assert broken.status_code == 400


def test_deactivating_a_user_ends_their_sessions(app: object, user_factory: UserFactory) -> None:
    """A nurse signed in elsewhere is signed out the moment the security administrator
    deactivates her account (and cannot sign in again)."""
    user_factory("sec", "security_admin", None)
    user_factory("nurse_a", "nurse", None)
    with TestClient(app) as nurse, TestClient(app) as sec:  # type: ignore[arg-type]
        login(nurse, "nurse_a")
        assert nurse.get("/api/v1/me").status_code == 200
        login(sec, "sec")
        token = csrf_from(sec.get("/admin/users").text)
        user = get_user("nurse_a")
        done = sec.post(f"/admin/users/{user.id}/status",
                        data={"action": "deactivate", "csrf_token": token},
                        follow_redirects=False)
        assert done.status_code == 303
        assert nurse.get("/api/v1/me").status_code == 401
        page = nurse.get("/login")
        again = nurse.post("/login", data={"username": "nurse_a", "password": PASSWORD,
                                           "csrf_token": csrf_from(page.text)},
                           follow_redirects=False)
        assert again.status_code == 401
