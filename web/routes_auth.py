"""Sign-in, second factor, sign-out, password change, TOTP enrolment and the language switch."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from careloop.engine.clock import wall_clock_utc
from careloop.engine.db import transaction
from careloop.engine.domain import User
from careloop.engine.i18n import t
from careloop.web import auth
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
from careloop.web.passwords import check_password, new_totp_secret, totp_uri, verify_totp
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


@router.post("/login")
def login_submit(request: Request, username: str = Form(max_length=64),
                 password: str = Form(max_length=256), next: str = Form("/")) -> Response:
    with transaction() as session:
        old = request.cookies.get(SESSION_COOKIE)
        auth.destroy_session(session, old)  # a new session id at every sign-in
        result = auth.login(session, username.strip(), password, ip=client_ip(request),
                            request_id=request_id(request))
    if not result.ok or result.token is None:
        return render(request, "login.html", status_code=401, next=_safe_next(next),
                      error=t("web.login.failed", locale_of(request)))
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
    with transaction() as session:
        cred = session.get(UserCredential, cur.principal.user_id)
        ok = cred is not None and cred.totp_secret is not None and verify_totp(
            cred.totp_secret, code, wall_clock_utc())  # the phone's authenticator: real time
        record(request, cur.principal, "auth.totp", session=session,
               outcome="success" if ok else "failure")
        if ok:
            # the second factor done: a fresh session id again
            auth.destroy_session(session, token)
            user = session.get(User, cur.principal.user_id)
            assert user is not None  # the session's user row exists (FK)
            new_token = auth.create_session(session, user, ip=client_ip(request))
    if not ok:
        return render(request, "totp.html", status_code=401,
                      error=t("web.login.failed", locale_of(request)))
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
        from careloop.web.passwords import verify_password

        if cred is None or not verify_password(cred.password_hash, current_password):
            problems.insert(0, t("web.password.current_wrong", locale))
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


@router.get("/account/totp")
def totp_enrol_page(request: Request, me: Principal = SIGNED_IN) -> Response:
    secret = new_totp_secret()
    return render(request, "totp_enrol.html", secret=secret,
                  uri=totp_uri(secret, me.username), error=None, done=False)


@router.post("/account/totp")
def totp_enrol_submit(request: Request, secret: str = Form(max_length=64),
                      code: str = Form(max_length=12),
                      me: Principal = SIGNED_IN) -> Response:
    ok = verify_totp(secret, code, wall_clock_utc())
    if ok:
        with transaction() as session:
            cred = session.get(UserCredential, me.user_id)
            if cred is not None:
                cred.totp_secret = secret
            record(request, me, "auth.totp_enrolled", session=session, object_type="user",
                   object_id=me.username)
    return render(request, "totp_enrol.html", status_code=200 if ok else 400, secret=secret,
                  uri=totp_uri(secret, me.username),
                  error=None if ok else t("web.totp.wrong", locale_of(request)), done=ok)


@router.post("/locale")
def set_locale(request: Request, locale: str = Form(max_length=16),
               next: str = Form("/")) -> Response:
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(LOCALE_COOKIE, "en" if locale == "en" else "zh-CN", samesite="lax",
                        httponly=True, max_age=365 * 24 * 3600)
    return response
