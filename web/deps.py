"""Per-request context for routes: who is signed in, their locale, CSRF, and audit helpers.

Routes declare what they need as FastAPI dependencies::

    @router.get("/inbox")
    def inbox(request: Request, me: Principal = Depends(require(TASK_WORK))) -> Response: ...

``csrf_protect`` and :func:`careloop.web.scoping.enforce_patient_scope` are app-wide dependencies:
every route, including the engines' routers, goes through them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from careloop.engine import audit
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.i18n import normalise_locale, t
from careloop.engine.limits import LimitExceeded, WorkTimeout
from careloop.engine.registry import loaded_registry
from careloop.web import auth
from careloop.web.passwords import needs_rotation
from careloop.web.permissions import Principal, load_principal

SESSION_COOKIE = "careloop_session"
LOCALE_COOKIE = "careloop_locale"
LOGIN_CSRF_COOKIE = "careloop_login_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class NotAuthenticated(Exception):
    """Raised by a dependency when the request has no live, fully signed-in session."""


class PasswordExpired(Exception):
    """Raised when the password policy requires rotation before anything else."""


class Forbidden(Exception):
    """Raised when the signed-in user lacks a permission or the patient is out of scope."""


class CsrfRefused(Exception):
    """Raised when a state-changing request with a session cookie lacks the session's token."""


@dataclass(frozen=True, slots=True)
class Current:
    """The request's signed-in state (cached on ``request.state.current``)."""

    principal: Principal
    csrf_token: str
    mfa_pending: bool
    password_expired: bool


def request_id(request: Request) -> str:
    value = getattr(request.state, "request_id", None)
    return str(value) if value else "-"


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def locale_of(request: Request) -> str:
    cookie = request.cookies.get(LOCALE_COOKIE)
    return normalise_locale(cookie or request.headers.get("accept-language"))


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def current(request: Request) -> Current | None:
    """Load (once per request) the session named by the cookie; touches its idle timer."""
    if hasattr(request.state, "current"):
        cached: Current | None = request.state.current
        return cached
    token = request.cookies.get(SESSION_COOKIE)
    result: Current | None = None
    if token:
        with transaction() as session:  # two reads: the session with its user, the grants
            found = auth.load_signed_in(session, token)
            if found is not None and found.user.active:
                changed = found.password_changed_at
                expired = changed is not None and needs_rotation(changed, now_utc())
                result = Current(load_principal(session, found.user), found.row.csrf_token,
                                 found.row.mfa_pending, expired)
    request.state.current = result
    return result


def require_user(request: Request) -> Principal:
    """Dependency: the signed-in user (second factor done, password not expired)."""
    cur = current(request)
    if cur is None or cur.mfa_pending:
        raise NotAuthenticated()
    if cur.password_expired:
        raise PasswordExpired()
    return cur.principal


def require(permission: str) -> Callable[[Request], Principal]:
    """Dependency factory: the signed-in user, who must hold ``permission``."""
    def dependency(request: Request) -> Principal:
        principal = require_user(request)
        if not principal.can(permission):
            record(request, principal, "access.denied", outcome="denied",
                   object_type="permission", object_id=permission)
            raise Forbidden()
        return principal
    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency


def csrf_token_of(request: Request) -> str:
    cur = current(request)
    if cur is not None:
        return cur.csrf_token
    token = getattr(request.state, "login_csrf", None) or request.cookies.get(LOGIN_CSRF_COOKIE)
    if not token:
        token = secrets.token_urlsafe(32)
    request.state.login_csrf = token
    return str(token)


async def submitted_csrf(request: Request) -> str | None:
    """App-wide dependency, pure I/O (no database): the CSRF token a state-changing request
    carries (header ``X-CSRF-Token`` or form field ``csrf_token``), read on the event loop only
    when :func:`csrf_protect` may need it."""
    if request.method not in UNSAFE_METHODS or _csrf_exempt(request):
        return None
    if not request.cookies.get(SESSION_COOKIE) and request.url.path != "/login":
        return None
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def request_body(request: Request) -> bytes:
    """Dependency, pure I/O (no database): the raw body, read on the event loop so that the
    ``def`` route using it parses and works in the thread pool."""
    return await request.body()


def _csrf_exempt(request: Request) -> bool:
    return any(request.url.path.startswith(prefix)
               for _, prefix in loaded_registry().catalogue("csrf_exempt").items())


async def csrf_protect(request: Request,
                       submitted: str | None = Depends(submitted_csrf)) -> None:
    """App-wide dependency: refuse a state-changing request that rides on a session cookie
    without the session's synchronizer token (form field ``csrf_token`` or ``X-CSRF-Token``).

    Requests without the cookie carry no ambient authority; routes that need a user refuse them.
    The sign-in form (no session yet) uses a double-submit cookie instead. Path prefixes in
    ``registry.catalogue("csrf_exempt")`` (name → prefix, e.g. the patients' form links ``/f/``)
    are skipped; routes under them must not act on the staff session. Decided on the event loop
    (no thread-pool hop) unless the session must be loaded, a database read run in the thread
    pool.
    """
    if request.method not in UNSAFE_METHODS or _csrf_exempt(request):
        return
    cur = await run_in_threadpool(current, request) \
        if request.cookies.get(SESSION_COOKIE) else None
    if cur is not None:
        expected = cur.csrf_token
    elif request.url.path == "/login":
        expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    else:
        return
    if not expected or not submitted or not secrets.compare_digest(expected, submitted):
        raise CsrfRefused()


def record(request: Request, principal: Principal | None, action: str, *,
           session: Session | None = None, object_type: str | None = None,
           object_id: str | None = None, patient_id: str | None = None,
           outcome: str = "success", details: dict[str, Any] | None = None) -> None:
    """Append one audit row with the request's user, roles, IP and request id.

    With ``session`` the row commits or rolls back with the caller's work; without, it is written
    in its own transaction (used for refusals, where the caller's work does not happen).
    """
    kwargs: dict[str, Any] = dict(
        actor=principal.username if principal else "anonymous",
        actor_role=principal.role_label if principal else None, ip=client_ip(request),
        action=action, object_type=object_type, object_id=object_id, patient_id=patient_id,
        outcome=outcome, request_id=request_id(request), details=details or {})
    if session is not None:
        audit.append(session, **kwargs)
        return
    with transaction() as own:
        audit.append(own, **kwargs)


def limit_response(request: Request, exc: LimitExceeded | WorkTimeout) -> JSONResponse:
    """422 for author text or work beyond :data:`careloop.engine.limits.LIMITS`: a message in
    the reader's language, the limit's code and the located problem (never a 500)."""
    locale = locale_of(request)
    if isinstance(exc, WorkTimeout):
        detail = t("web.error.work_timeout", locale, seconds=f"{exc.seconds:g}")
    else:
        detail = t("web.error.limit", locale, what=exc.problem.message)
    return JSONResponse({"detail": detail, "code": exc.problem.code,
                         "problems": [exc.problem.to_json()],
                         "request_id": request_id(request)}, status_code=422)
