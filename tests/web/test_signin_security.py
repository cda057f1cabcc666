"""The security reviewer's sign-in attacks (issue 14), each replayed through the HTTP routes.

- 50 wrong TOTP codes then the right one; a code used twice; re-enrolling the factor without the
  password or with a client-chosen secret;
- locked, unknown and wrong answering alike (body and time);
- one address flooding the sign-in while another person signs in from elsewhere;
- weak and breached passwords, the password history, rotation not reset by the same password.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careloop.engine.clock import frozen_now, now_utc, wall_clock_utc
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow
from careloop.web.models import UserCredential

from .conftest import PASSWORD, UserFactory, csrf_from, login

# Latency and elapsed-time assertions: run alone, never beside a parallel worker (.ci/test).
pytestmark = pytest.mark.serial


@pytest.fixture
def make_client(app: object) -> Iterator[object]:
    """TestClients for distinct source addresses (``client=(host, port)``)."""
    opened: list[TestClient] = []

    def make(host: str) -> TestClient:
        c = TestClient(app, base_url="http://testserver",  # type: ignore[arg-type]
                       client=(host, 50000))
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def _post_login(client: TestClient, username: str, password: str) -> tuple[int, str, float]:
    page = client.get("/login")
    started = time.perf_counter()
    response = client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": csrf_from(page.text)},
                           follow_redirects=False)
    elapsed = time.perf_counter() - started
    error = response.text.split('id="login-error">')[1].split("<")[0] \
        if 'id="login-error">' in response.text else ""
    return response.status_code, error, elapsed


def _enrol(client: TestClient) -> pyotp.TOTP:
    """Enrol a second factor through /account/totp; returns the authenticator."""
    return _enrol_with_code(client)[0]


def _enrol_with_code(client: TestClient) -> tuple[pyotp.TOTP, str]:
    """Enrol a second factor; returns the authenticator and the code that confirmed it."""
    page = client.get("/account/totp")
    shown = page.text.split('id="totp-secret">')[1].split("<")[0] \
        if 'id="totp-secret">' in page.text \
        else page.text.split('name="secret" value="')[1].split('"')[0]  # before issue 14
    totp = pyotp.TOTP(shown)
    code = totp.now()
    done = client.post("/account/totp", data={"current_password": PASSWORD,
                                              "code": code, "secret": shown,
                                              "csrf_token": csrf_from(page.text)})
    assert done.status_code == 200
    return totp, code


def _password_step(client: TestClient, username: str) -> str:
    """Sign in with the password only; returns the CSRF token of the TOTP page."""
    client.cookies.clear()
    page = client.get("/login")
    response = client.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": csrf_from(page.text)},
                           follow_redirects=False)
    assert response.headers["location"] == "/login/totp"
    return csrf_from(client.get("/login/totp").text)


def _next_code(totp: pyotp.TOTP) -> str:
    """The code of the next 30-second step (accepted: one step of drift is allowed)."""
    return totp.at(wall_clock_utc() + timedelta(seconds=30))


def test_fifty_wrong_totp_codes_then_the_right_one_is_refused(
        client: TestClient, user_factory: UserFactory) -> None:
    user_factory("doc", "doctor", None)
    login(client, "doc")
    totp = _enrol(client)
    csrf = _password_step(client, "doc")
    right = _next_code(totp)
    wrong = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 51)]
    start = now_utc()
    with frozen_now(start):
        statuses = [client.post("/login/totp", data={"code": code, "csrf_token": csrf},
                                follow_redirects=False).status_code for code in wrong]
        refused = client.post("/login/totp", data={"code": right, "csrf_token": csrf},
                              follow_redirects=False)
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert client.get("/api/v1/me").status_code == 401
    assert "验证码错误次数过多" in refused.text
    # the delay ends by itself (no permanent lock): the right code then works
    with frozen_now(start + timedelta(seconds=2)):
        done = client.post("/login/totp", data={"code": right, "csrf_token": csrf},
                           follow_redirects=False)
    assert done.status_code == 303
    with transaction() as session:
        outcomes = [(r.outcome, r.details.get("reason")) for r in session.scalars(
            select(AuditRow).where(AuditRow.action == "auth.totp").order_by(AuditRow.id))]
    assert outcomes == [("failure", "wrong")] * 5 + [("failure", "throttled")] * 46 + \
        [("success", None)]


def test_a_used_totp_code_is_refused_the_second_time(
        client: TestClient, user_factory: UserFactory) -> None:
    user_factory("doc", "doctor", None)
    login(client, "doc")
    # the code that confirmed the enrolment cannot sign in (the code itself, not totp.now():
    # a 30-second step may end between the two, and the next code is a fresh one)
    totp, enrolment_code = _enrol_with_code(client)
    csrf = _password_step(client, "doc")
    assert client.post("/login/totp", data={"code": enrolment_code, "csrf_token": csrf},
                       follow_redirects=False).status_code == 401
    at = wall_clock_utc() + timedelta(seconds=30)  # the next step's code, as _next_code
    code = totp.at(at)
    assert client.post("/login/totp", data={"code": code, "csrf_token": csrf},
                       follow_redirects=False).status_code == 303
    # signed out, password again, the same code: refused
    csrf = _password_step(client, "doc")
    again = client.post("/login/totp", data={"code": code, "csrf_token": csrf},
                        follow_redirects=False)
    assert again.status_code == 401 and "已使用" in again.text
    assert client.get("/api/v1/me").status_code == 401
    with transaction() as session:
        cred = session.scalars(select(UserCredential)).one()
        # the step of the code used (not of the clock now: under load the test may cross a step)
        assert cred.totp_last_step == totp.timecode(at)


def test_re_enrolment_needs_the_password_and_ignores_a_client_secret(
        client: TestClient, user_factory: UserFactory) -> None:
    user_factory("doc", "doctor", None)
    login(client, "doc")
    totp = _enrol(client)
    csrf = _password_step(client, "doc")
    assert client.post("/login/totp", data={"code": _next_code(totp), "csrf_token": csrf},
                       follow_redirects=False).status_code == 303
    with transaction() as session:
        before = session.scalars(select(UserCredential)).one().totp_secret
    attacker = pyotp.random_base32()
    page = client.get("/account/totp")
    csrf = csrf_from(page.text)
    # a hijacked session without the password: refused
    no_password = client.post("/account/totp", data={
        "secret": attacker, "code": pyotp.TOTP(attacker).now(), "csrf_token": csrf})
    assert no_password.status_code == 400
    wrong_password = client.post("/account/totp", data={
        "secret": attacker, "current_password": "not-the-password-at-all",
        "code": pyotp.TOTP(attacker).now(), "csrf_token": csrf})
    assert wrong_password.status_code == 400 and "当前密码不正确" in wrong_password.text
    # with the password, a client-chosen secret is still not the factor: the server's is
    client_secret = client.post("/account/totp", data={
        "secret": attacker, "current_password": PASSWORD,
        "code": pyotp.TOTP(attacker).now(), "csrf_token": csrf})
    assert client_secret.status_code == 400
    with transaction() as session:
        cred = session.scalars(select(UserCredential)).one()
        assert cred.totp_secret == before and cred.totp_pending_secret != attacker
    # the secret shown once is not shown again on a failed attempt
    assert 'id="totp-secret"' not in client_secret.text
    with transaction() as session:
        audit = [(r.outcome, r.details.get("reason")) for r in session.scalars(
            select(AuditRow).where(AuditRow.action == "auth.totp_enrolled")
            .order_by(AuditRow.id))]
    assert audit == [("success", None), ("failure", "password_wrong"),
                     ("failure", "password_wrong"), ("failure", "wrong")]


def test_locked_unknown_and_wrong_answer_alike_and_in_similar_time(
        make_client: object, user_factory: UserFactory) -> None:
    make = make_client
    for n in range(5):
        user_factory(f"wrong{n}", "nurse", None)
    user_factory("locked", "nurse", None)
    start = now_utc()
    with frozen_now(start):
        locker = make("10.1.0.1")  # type: ignore[operator]
        for _ in range(5):
            assert _post_login(locker, "locked", "not-the-password-1")[0] == 401
        samples: dict[str, list[tuple[int, str, float]]] = {"locked": [], "unknown": [],
                                                             "wrong": []}
        for n in range(5):
            # each case from its own address, so no address delay enters the comparison
            samples["locked"].append(_post_login(make(f"10.2.0.{n}"),  # type: ignore[operator]
                                                 "locked", PASSWORD))
            samples["unknown"].append(_post_login(make(f"10.3.0.{n}"),  # type: ignore[operator]
                                                  f"nobody{n}", PASSWORD))
            samples["wrong"].append(_post_login(make(f"10.4.0.{n}"),  # type: ignore[operator]
                                                f"wrong{n}", "not-the-password-1"))
    answers = {(status, error) for case in samples.values() for status, error, _ in case}
    assert len(answers) == 1 and next(iter(answers))[0] == 401  # one answer for all three
    medians = {case: statistics.median(e for _, _, e in values)
               for case, values in samples.items()}
    # every path runs one argon2 verification: no case is much faster than another
    # (on main a locked account answered in a tenth of the time)
    assert min(medians.values()) > 0.5 * max(medians.values()), medians


def test_a_flood_from_one_address_leaves_other_people_signing_in(
        make_client: object, user_factory: UserFactory) -> None:
    user_factory("victim", "nurse", None)
    user_factory("colleague", "nurse", None)
    make = make_client
    flooder = make("10.9.9.9")  # type: ignore[operator]
    page = flooder.get("/login")
    csrf = csrf_from(page.text)

    def attempt(n: int) -> tuple[int, float]:
        started = time.perf_counter()
        status = flooder.post("/login", data={"username": "victim", "password": f"guess-{n}",
                                              "csrf_token": csrf},
                              follow_redirects=False).status_code
        return status, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=8) as pool:
        flood = pool.map(attempt, range(48))
        # meanwhile a colleague signs in from the ward's own address
        other = make("10.0.0.7")  # type: ignore[operator]
        status, _, _ = _post_login(other, "colleague", PASSWORD)
        health = other.get("/healthz")
        results = list(flood)
    assert status == 303 and health.status_code == 200
    statuses = [s for s, _ in results]
    assert set(statuses) <= {401, 429} and statuses.count(429) >= 20
    # once delayed, the address is refused before any password is hashed
    refused = flooder.post("/login", data={"username": "colleague", "password": PASSWORD,
                                           "csrf_token": csrf}, follow_redirects=False)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "来自此网络地址的失败登录过多" in refused.text
    with transaction() as session:
        checked = session.scalars(select(AuditRow).where(
            AuditRow.action == "auth.login", AuditRow.ip == "10.9.9.9")).all()
    # 20 free failures, plus the few that were already past the gate when the delay began
    assert 20 <= len(checked) <= 28
    # the victim's account is delayed, not locked for long: after the delays it signs in
    # from its owner's address
    with frozen_now(now_utc() + timedelta(minutes=16)):
        assert _post_login(make("10.0.0.8"), "victim", PASSWORD)[0] == 303  # type: ignore[operator]


def _change(client: TestClient, current: str, new: str) -> tuple[int, str]:
    form = client.get("/account/password")
    response = client.post("/account/password", data={
        "current_password": current, "new_password": new, "csrf_token": csrf_from(form.text)})
    return response.status_code, response.text


@pytest.mark.parametrize(("password", "policy", "why"), [
    ("aaaaaaaaaaaa", "asvs", ["已泄露密码列表", "重复的字符"]),
    ("Admin@123456", "asvs", ["常见密码或常用词"]),
    ("woaini1314520", "asvs", ["拼音"]),
    ("Passw0rd", "mlps3", ["已泄露密码列表"]),
])
def test_weak_and_breached_passwords_are_refused_naming_why(
        client: TestClient, user_factory: UserFactory, monkeypatch: pytest.MonkeyPatch,
        password: str, policy: str, why: list[str]) -> None:
    monkeypatch.setenv("CARELOOP_PASSWORD_POLICY", policy)
    user_factory("nurse", "nurse", None)
    login(client, "nurse")
    status, text = _change(client, PASSWORD, password)
    assert status == 400
    for words in why:
        assert words in text, words


def test_no_reuse_of_the_last_five_passwords(client: TestClient,
                                             user_factory: UserFactory) -> None:
    user_factory("nurse", "nurse", None)
    login(client, "nurse")
    chain = [PASSWORD] + [f"Ward-Rounds-Blue-{n}7" for n in range(1, 6)]
    for previous, new in itertools.pairwise(chain[:5]):
        assert _change(client, previous, new)[0] == 200
    # the original is one of the last five (original, 1, 2, 3, 4): refused, naming why
    status, text = _change(client, chain[4], PASSWORD)
    assert status == 400 and "最近 5 次" in text
    assert _change(client, chain[4], chain[5])[0] == 200
    # now the original is the sixth back: allowed again
    assert _change(client, chain[5], PASSWORD)[0] == 200


def test_changing_to_the_same_password_does_not_reset_rotation(
        client: TestClient, user_factory: UserFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_PASSWORD_POLICY", "mlps3")
    user_factory("nurse", "nurse", None)
    with frozen_now(now_utc() + timedelta(days=91)):
        status, _, _ = _post_login(client, "nurse", PASSWORD)
        assert status == 303
        assert client.get("/inbox", follow_redirects=False).headers["location"] == \
            "/account/password"
        status, text = _change(client, PASSWORD, PASSWORD)
        assert status == 400 and "最近 5 次" in text
        assert client.get("/inbox", follow_redirects=False).headers["location"] == \
            "/account/password"


def test_the_security_admin_sees_a_delayed_account_and_lifts_the_delay(
        make_client: object, user_factory: UserFactory) -> None:
    user_factory("sec", "security_admin", None)
    nurse_id = user_factory("nurse", "nurse", None)
    make = make_client
    start = now_utc()
    with frozen_now(start):
        attacker = make("10.5.5.5")  # type: ignore[operator]
        for _ in range(8):
            _post_login(attacker, "nurse", "not-the-password-1")
        admin_client = make("10.0.0.2")  # type: ignore[operator]
        token = login(admin_client, "sec")
        page = admin_client.get("/admin/users")
        assert page.text.count("已锁定") == 1  # the nurse's row, not the admin's
        assert admin_client.post(f"/admin/users/{nurse_id}/status",
                                 data={"action": "unlock", "csrf_token": token},
                                 follow_redirects=False).status_code == 303
        # the nurse signs in at once from the ward
        assert _post_login(make("10.0.0.3"), "nurse", PASSWORD)[0] == 303  # type: ignore[operator]
