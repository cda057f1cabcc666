"""Sign-in, sign-out, lock-out, idle timeout, absolute lifetime, CSRF, password policy."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from careloop.engine.clock import frozen_now, now_utc
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow
from careloop.web.models import WebSession

from .conftest import PASSWORD, UserFactory, csrf_from, login


def _attempt(client: TestClient, username: str, password: str) -> int:
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf_from(page.text)},
                       follow_redirects=False).status_code


def test_login_then_logout_invalidates_the_session_on_the_server(
        client: TestClient, user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", None)
    assert client.get("/", follow_redirects=False).status_code == 303
    token = login(client, "nurse_a")
    assert client.get("/").status_code == 200
    cookie = client.cookies.get("careloop_session")
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    with transaction() as session:
        assert session.scalars(select(WebSession)).all() == []
    client.cookies.set("careloop_session", cookie or "")  # replaying the old cookie
    assert client.get("/api/v1/me").status_code == 401


def test_a_new_session_id_at_every_login(client: TestClient, user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", None)
    login(client, "nurse_a")
    first = client.cookies.get("careloop_session")
    login(client, "nurse_a")
    second = client.cookies.get("careloop_session")
    assert first and second and first != second
    with transaction() as session:
        assert len(session.scalars(select(WebSession)).all()) == 1


def test_five_failures_delay_the_account_progressively_with_a_generic_error(
        client: TestClient, user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", None)
    start = now_utc()
    with frozen_now(start):
        for _ in range(5):
            assert _attempt(client, "nurse_a", "wrong-password-123") == 401
        page = client.get("/login")
        locked = client.post("/login", data={"username": "nurse_a", "password": PASSWORD,
                                             "csrf_token": csrf_from(page.text)})
        unknown = client.post("/login", data={"username": "nobody", "password": PASSWORD,
                                              "csrf_token": csrf_from(page.text)})
    assert locked.status_code == 401 and unknown.status_code == 401
    assert "login-error" in locked.text
    # the same message for a delayed account and an unknown user
    assert locked.text.split('id="login-error">')[1].split("<")[0] == \
        unknown.text.split('id="login-error">')[1].split("<")[0]
    # the fifth failure earned a one-second delay, not a 15-minute lock
    with frozen_now(start + timedelta(seconds=2)):
        assert _attempt(client, "nurse_a", PASSWORD) == 303
    with transaction() as session:
        reasons = [r.details.get("reason") for r in session.scalars(
            select(AuditRow).where(AuditRow.action == "auth.login",
                                   AuditRow.outcome == "failure").order_by(AuditRow.id)).all()]
    assert reasons == ["bad_password"] * 4 + ["bad_password_delayed", "throttled",
                                              "unknown_user"]


def test_idle_timeout_and_absolute_lifetime(client: TestClient,
                                            user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", None)
    start = now_utc()
    with frozen_now(start):
        login(client, "nurse_a")
    with frozen_now(start + timedelta(minutes=29)):
        assert client.get("/api/v1/me").status_code == 200
    with frozen_now(start + timedelta(minutes=58)):
        assert client.get("/api/v1/me").status_code == 200  # activity at 29 kept it alive
    with frozen_now(start + timedelta(minutes=89)):
        assert client.get("/api/v1/me").status_code == 401
        assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    with frozen_now(start):
        login(client, "nurse_a")
    for hours in range(1, 13):  # active every 25 minutes, but the lifetime is 12 hours
        for quarter in range(0, 60, 25):
            with frozen_now(start + timedelta(hours=hours - 1, minutes=quarter)):
                client.get("/api/v1/me")
    with frozen_now(start + timedelta(hours=12, minutes=1)):
        assert client.get("/api/v1/me").status_code == 401


def test_csrf_refused_without_or_with_a_wrong_token(client: TestClient,
                                                    user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", None)
    token = login(client, "nurse_a")
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert client.post("/logout", data={"csrf_token": "x" * 40},
                       follow_redirects=False).status_code == 403
    assert client.post("/logout", headers={"X-CSRF-Token": "nope"},
                       follow_redirects=False).status_code == 403
    assert client.get("/api/v1/me").status_code == 200  # still signed in
    assert client.post("/logout", headers={"X-CSRF-Token": token},
                       follow_redirects=False).status_code == 303


def test_login_form_itself_needs_its_token(client: TestClient,
                                           user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", None)
    client.get("/login")
    response = client.post("/login", data={"username": "nurse_a", "password": PASSWORD,
                                           "csrf_token": "forged"}, follow_redirects=False)
    assert response.status_code == 403
    client.cookies.set("careloop_session", "stale-or-made-up")  # no live session behind it
    response = client.post("/login", data={"username": "nurse_a", "password": PASSWORD,
                                           "csrf_token": "forged"}, follow_redirects=False)
    assert response.status_code == 403


def test_csrf_exempt_prefixes_come_from_the_registry(client: TestClient,
                                                     user_factory: UserFactory) -> None:
    from careloop.engine.registry import loaded_registry

    user_factory("nurse_a", "nurse", None)
    login(client, "nurse_a")
    exempt = loaded_registry().catalogue("csrf_exempt")
    assert client.post("/logout", follow_redirects=False).status_code == 403
    exempt.register("test", "/logout")
    try:
        assert client.post("/logout", follow_redirects=False).status_code == 303
    finally:
        exempt._items.pop("test")


def test_session_cookie_flags_and_only_hashes_stored(app: object,
                                                    user_factory: UserFactory) -> None:
    """The session cookie is HttpOnly, SameSite=Lax and Secure over HTTPS; the database keeps
    only the SHA-256 of its token and an argon2id hash of the password."""
    import hashlib

    from careloop.web.models import UserCredential

    user_factory("nurse_a", "nurse", None)
    with TestClient(app, base_url="https://testserver") as https:  # type: ignore[arg-type]
        page = https.get("/login")
        response = https.post("/login", data={"username": "nurse_a", "password": PASSWORD,
                                              "csrf_token": csrf_from(page.text), "next": "/"},
                              follow_redirects=False)
        assert response.status_code == 303
        cookie = next(value for value in response.headers.get_list("set-cookie")
                      if value.startswith("careloop_session="))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "secure", "samesite=lax"} <= flags
        token = cookie.split(";", 1)[0].split("=", 1)[1]
    with transaction() as session:
        ids = session.scalars(select(WebSession.id)).all()
        hashes = session.scalars(select(UserCredential.password_hash)).all()
    assert ids == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in ids
    assert hashes and all(h.startswith("$argon2id$") and PASSWORD not in h for h in hashes)


def test_long_passwords_are_taken_whole_in_a_masked_field(client: TestClient) -> None:
    """A 100-character password with spaces and Chinese works exactly as typed: neither
    truncated nor case-folded; the field is type=password, pasting and managers allowed."""
    from careloop.web import admin

    password = "长城 Correct horse battery staple " * 3 + "终点站到了"
    assert len(password) >= 100
    with transaction() as session:
        user = admin.create_user(session, username="long_pw", display_name="long_pw",
                                 password=password)
        admin.grant(session, user, "nurse", None)
    html = client.get("/login").text
    assert 'type="password"' in html and 'autocomplete="current-password"' in html
    assert "onpaste" not in html and 'autocomplete="off"' not in html
    assert _attempt(client, "long_pw", password[:-1]) == 401
    assert _attempt(client, "long_pw", password.upper()) == 401
    assert _attempt(client, "long_pw", password) == 303
