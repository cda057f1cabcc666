"""``careloop user create-admin``, ``careloop demo seed``, ``careloop up --demo``; password
policy profiles; TOTP."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.clock import frozen_now, now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Encounter, Patient, RoleGrant, Task, User
from careloop.engine.registry import loaded_registry
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
    assert roles == {"system_admin", "security_admin"}


def test_up_without_users_says_how_to_create_the_administrator(engine: Engine,
                                                                tmp_path: object) -> None:
    result = CliRunner().invoke(up, ["--no-serve", "--bundles", "app_definitions"])
    assert result.exit_code == 0, result.output
    assert "careloop user create-admin" in result.output


def test_up_demo_seeds_once_and_prints_how_to_log_in(engine: Engine) -> None:
    result = CliRunner().invoke(up, ["--no-serve", "--demo", "--patients", "20"])
    assert result.exit_code == 0, result.output
    assert DEMO_PASSWORD in result.output and "cardiology_head_nurse" in result.output
    again = CliRunner().invoke(up, ["--no-serve", "--demo", "--patients", "20"])
    assert DEMO_PASSWORD not in again.output
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == 20


def test_demo_seed_covers_every_role_and_twelve_months(engine: Engine) -> None:
    result = CliRunner().invoke(demo_seed, ["--patients", "60"])
    assert result.exit_code == 0, result.output
    with transaction() as session:
        roles = set(session.scalars(select(RoleGrant.role)).all())
        discharges = session.scalars(select(Encounter.discharged_at)).all()
        names = session.scalars(select(Patient.name)).all()
        tasks = session.scalar(select(func.count()).select_from(Task))
    assert roles == set(loaded_registry().catalogue("role").names())
    assert max(discharges) - min(discharges) > timedelta(days=200)
    assert all(2 <= len(n) <= 3 for n in names) and tasks
    assert "domain" in loaded_registry().catalogue("demo_seeder")


def test_demo_staff_can_sign_in(client: TestClient) -> None:
    CliRunner().invoke(demo_seed, ["--patients", "10"])
    login(client, "cardio_w1_nurse", DEMO_PASSWORD)
    assert client.get("/inbox").status_code == 200


def test_chinese_names_are_generated_locally() -> None:
    import random

    rng = random.Random(1)
    names = {chinese_name(rng) for _ in range(50)}
    assert len(names) > 40


@pytest.mark.parametrize(("password", "policy", "codes"), [
    ("Abc12345", "mlps3", []),
    ("abcdefgh", "mlps3", ["web.password.classes"]),
    ("Ab1", "mlps3", ["web.password.too_short"]),
    ("a long passphrase", "asvs", []),
    ("password1234", "asvs", ["web.password.breached"]),
    ("Password@2024", "asvs", ["web.password.breached"]),
    ("Abc12345", "asvs", ["web.password.too_short", "web.password.breached"]),
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
    secret = page.text.split('name="secret" value="')[1].split('"')[0]
    wrong = client.post("/account/totp", data={"secret": secret, "code": "000000",
                                               "csrf_token": csrf_from(page.text)})
    assert wrong.status_code == 400
    ok = client.post("/account/totp", data={"secret": secret,
                                            "code": pyotp.TOTP(secret).now(),
                                            "csrf_token": csrf_from(page.text)})
    assert ok.status_code == 200
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
    done = client.post("/login/totp", data={"code": pyotp.TOTP(secret).now(),
                                            "csrf_token": csrf_from(form.text)},
                       follow_redirects=False)
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
