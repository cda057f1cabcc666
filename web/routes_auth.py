"""Sign-in, second factor, sign-out, password change, TOTP enrolment and the language switch."""

from __future__ import annotations

import asyncio
import os
import weakref
from datetime import datetime
from functools import partial

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from careloop.engine.clock import now_utc, to_local, wall_clock_utc
from careloop.engine.db import transaction
from careloop.engine.domain import User
from careloop.engine.i18n import t
from careloop.web import auth, throttle
from careloop.web.deps import (
    LOCALE_COOKIE,
    SESSION_COOKIE,
    NotAuthenticated,
    client_ip,
    current,
    locale_of,
    record,
    request_id,
)
from careloop.web.models import UserCredential, WebSession
from careloop.web.passwords import check_password, totp_qr_svg, totp_uri, verify_password
from careloop.web.permissions import Principal
from careloop.web.render import render

router = APIRouter(include_in_schema=False)


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", next=_safe_next(next), error=None)


_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = \
    weakref.WeakKeyDictionary()


def _hash_limiter() -> CapacityLimiter:
    """Sign-ins verifying a password at once in this process (``CARELOOP_LOGIN_CONCURRENCY``,
    default half the CPUs): a flood of logins queues here, in its own threads, and leaves the
    event loop and the other requests' threads their CPU."""
    loop = asyncio.get_running_loop()
    limiter = _LIMITERS.get(loop)
    if limiter is None:
        default = max(1, (os.cpu_count() or 2) // 2)
        try:
            size = max(1, int(os.environ.get("CARELOOP_LOGIN_CONCURRENCY", "") or default))
        except ValueError:
            size = default
        limiter = _LIMITERS[loop] = CapacityLimiter(size)
    return limiter


def _local_time(at: datetime) -> str:
    return to_local(at).strftime("%H:%M:%S")


def _address_blocked(ip: str | None) -> datetime | None:
    with transaction() as session:
        return auth.address_blocked(session, ip)


def _check_login(old: str | None, username: str, password: str, ip: str | None,
                 rid: str | None) -> auth.LoginResult:
    with transaction() as session:
        auth.destroy_session(session, old)  # a new session id at every sign-in
        return auth.login(session, username, password, ip=ip, request_id=rid)


@router.post("/login")
async def login_submit(request: Request, username: str = Form(max_length=64),
                       password: str = Form(max_length=256), next: str = Form("/")) -> Response:
    """Refused early (429, no hashing) while the source address is delayed; otherwise the
    password is verified in a worker thread under the process's hashing limit."""
    ip, locale = client_ip(request), locale_of(request)
    until = await run_in_threadpool(_address_blocked, ip)
    if until is not None:
        seconds = max(1, int((until - now_utc()).total_seconds()) + 1)
        refused = await run_in_threadpool(partial(
            render, request, "login.html", status_code=429, next=_safe_next(next),
            error=t("web.login.throttled", locale, time=_local_time(until))))
        refused.headers["Retry-After"] = str(seconds)
        return refused
    result = await to_thread.run_sync(
        _check_login, request.cookies.get(SESSION_COOKIE), username.strip(), password, ip,
        request_id(request), limiter=_hash_limiter())
    if not result.ok or result.token is None:
        return await run_in_threadpool(partial(
            render, request, "login.html", status_code=401, next=_safe_next(next),
            error=t("web.login.failed", locale)))
    target = "/login/totp" if result.mfa_pending else (
        "/account/password" if result.must_change_password else _safe_next(next))
    response = RedirectResponse(target, status_code=303)
    _set_session_cookie(request, response, result.token)
    response.delete_cookie("careloop_login_csrf")
    return response


@router.get("/login/totp")
def totp_page(request: Request) -> Response:
    cur = current(request)
    if cur is None:
        raise NotAuthenticated()
    return render(request, "totp.html", error=None)


@router.post("/login/totp")
def totp_submit(request: Request, code: str = Form(max_length=12)) -> Response:
    cur = current(request)
    token = request.cookies.get(SESSION_COOKIE)
    if cur is None or token is None:
        raise NotAuthenticated()
    locale = locale_of(request)
    with transaction() as session:
        # the phone's authenticator runs on real time, not the travelled clock
        result = auth.verify_second_factor(session, cur.principal.user_id, code,
                                           wall_clock_utc())
        record(request, cur.principal, "auth.totp", session=session,
               outcome="success" if result.outcome == "ok" else "failure",
               details={} if result.outcome == "ok" else {"reason": result.outcome})
        if result.outcome == "ok":
            # the second factor done: a fresh session id again
            auth.destroy_session(session, token)
            user = session.get(User, cur.principal.user_id)
            assert user is not None  # the session's user row exists (FK)
            new_token = auth.create_session(session, user, ip=client_ip(request))
    if result.outcome == "throttled" and result.until is not None:
        refused = render(request, "totp.html", status_code=429,
                         error=t("web.totp.throttled", locale,
                                 time=_local_time(result.until)))
        refused.headers["Retry-After"] = str(
            max(1, int((result.until - now_utc()).total_seconds()) + 1))
        return refused
    if result.outcome != "ok":
        return render(request, "totp.html", status_code=401,
                      error=t("web.totp.wrong_or_used", locale))
    response = RedirectResponse("/", status_code=303)
    _set_session_cookie(request, response, new_token)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    cur = current(request)
    with transaction() as session:
        auth.destroy_session(session, request.cookies.get(SESSION_COOKIE))
        if cur is not None:
            record(request, cur.principal, "auth.logout", session=session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _signed_in(request: Request) -> Principal:
    cur = current(request)
    if cur is None or cur.mfa_pending:
        raise NotAuthenticated()
    return cur.principal


SIGNED_IN = Depends(_signed_in)


@router.get("/account/password")
def password_page(request: Request, me: Principal = SIGNED_IN) -> Response:
    return render(request, "password.html", problems=[], done=False)


@router.post("/account/password")
def password_submit(request: Request, current_password: str = Form(max_length=256),
                    new_password: str = Form(max_length=256),
                    me: Principal = SIGNED_IN) -> Response:
    locale = locale_of(request)
    problems = [t(p.code, locale, **dict(p.params))
                for p in check_password(new_password, username=me.username)]
    with transaction() as session:
        cred = session.get(UserCredential, me.user_id)
        account = me.username.lower()
        delayed = throttle.blocked_until(session, "account", account) is not None
        if cred is None or not verify_password(None if delayed else cred.password_hash,
                                               current_password):
            if not delayed:
                throttle.fail(session, "account", account)
            problems.insert(0, t("web.password.current_wrong", locale))
        elif auth.password_reused(session, me.user_id, new_password):
            # the same password again is no change: rotation is not reset
            problems.append(t("web.password.reused", locale, n=auth.HISTORY))
        if not problems:
            user = session.get(User, me.user_id)
            assert user is not None
            auth.set_password(session, user, new_password)
            # other sessions of this user end; this one stays
            token = request.cookies.get(SESSION_COOKIE)
            keep = auth.token_id(token) if token else ""
            session.query(WebSession).filter(WebSession.user_id == me.user_id,
                                             WebSession.id != keep).delete()
            record(request, me, "auth.password_changed", session=session,
                   object_type="user", object_id=me.username)
    if problems:
        return render(request, "password.html", status_code=400, problems=problems, done=False)
    return render(request, "password.html", problems=[], done=True)


def _enrol_page(request: Request, me: Principal, secret: str | None, *, error: str | None,
                done: bool, status_code: int = 200) -> Response:
    uri = totp_uri(secret, me.username) if secret else None
    return render(request, "totp_enrol.html", status_code=status_code, secret=secret,
                  qr=Markup(totp_qr_svg(uri)) if uri else None, error=error, done=done)


@router.get("/account/totp")
def totp_enrol_page(request: Request, me: Principal = SIGNED_IN) -> Response:
    """A new secret made by the server, shown this once as a QR code (and as text)."""
    with transaction() as session:
        secret = auth.start_totp_enrolment(session, me.user_id)
    return _enrol_page(request, me, secret, error=None, done=False)


@router.post("/account/totp")
def totp_enrol_submit(request: Request, current_password: str = Form("", max_length=256),
                      code: str = Form(max_length=12),
                      me: Principal = SIGNED_IN) -> Response:
    """Confirm the pending secret with the current password and a code from it; a ``secret``
    posted by the client is never read."""
    locale = locale_of(request)
    with transaction() as session:
        user = session.get(User, me.user_id)
        assert user is not None
        result = auth.confirm_totp_enrolment(session, user, current_password, code,
                                             wall_clock_utc())
        record(request, me, "auth.totp_enrolled", session=session, object_type="user",
               object_id=me.username, outcome="success" if result.outcome == "ok"
               else "failure", details={} if result.outcome == "ok"
               else {"reason": result.outcome})
    if result.outcome == "ok":
        return _enrol_page(request, me, None, error=None, done=True)
    errors = {"password_wrong": t("web.totp.password_wrong", locale),
              "expired": t("web.totp.expired", locale),
              "wrong": t("web.totp.wrong", locale)}
    error = t("web.totp.throttled", locale, time=_local_time(result.until)) \
        if result.outcome == "throttled" and result.until is not None \
        else errors.get(result.outcome, t("web.totp.wrong", locale))
    # the same pending secret stays (it is not shown again); a new one needs a new page
    return _enrol_page(request, me, None, error=error, done=False,
                       status_code=429 if result.outcome == "throttled" else 400)


@router.post("/locale")
def set_locale(request: Request, locale: str = Form(max_length=16),
               next: str = Form("/")) -> Response:
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(LOCALE_COOKIE, "en" if locale == "en" else "zh-CN", samesite="lax",
                        httponly=True, max_age=365 * 24 * 3600)
    return response
