"""Sign-in, lock-out and server-side sessions.

- 5 failed passwords lock the account for 15 minutes; the error shown is always the same
  generic one, whether the username exists, the password is wrong or the account is locked.
- A successful sign-in always creates a new session id (no fixation) and audits the outcome.
- A session ends after ``CARELOOP_SESSION_IDLE_MINUTES`` (default 30) without a request, or
  ``CARELOOP_SESSION_MAX_HOURS`` (default 12) after sign-in, whichever comes first.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from careloop.engine import audit
from careloop.engine.clock import now_utc
from careloop.engine.domain import User
from careloop.web.models import UserCredential, WebSession
from careloop.web.passwords import hash_password, needs_rotation, verify_password

MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)


def idle_timeout() -> timedelta:
    return timedelta(minutes=int(os.environ.get("CARELOOP_SESSION_IDLE_MINUTES", "30")))


def absolute_lifetime() -> timedelta:
    return timedelta(hours=int(os.environ.get("CARELOOP_SESSION_MAX_HOURS", "12")))


def token_id(token: str) -> str:
    """The stored id of a cookie token (its SHA-256): the table never holds usable tokens."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class LoginResult:
    """``ok`` with the new session's cookie token; otherwise a reason kept for the audit log only.

    ``reason``: ``unknown_user`` | ``bad_password`` | ``locked`` | ``inactive``.
    """

    ok: bool
    user: User | None = None
    token: str | None = None
    mfa_pending: bool = False
    reason: str | None = None
    must_change_password: bool = False


def set_password(session: Session, user: User, password: str, *,
                 hashed: str | None = None) -> None:
    """Store a new password (argon2id); the caller has checked the policy.

    ``hashed`` is a ready argon2id hash of ``password`` (the demo seeder hashes its one demo
    password once instead of once per account).
    """
    cred = session.get(UserCredential, user.id)
    if cred is None:
        cred = UserCredential(user_id=user.id, password_hash="", failed_count=0)
        session.add(cred)
    cred.password_hash = hashed or hash_password(password)
    cred.password_changed_at = now_utc()
    cred.failed_count, cred.locked_until = 0, None
    session.flush()


def create_session(session: Session, user: User, *, ip: str | None,
                   mfa_pending: bool = False) -> str:
    """Start a session; returns the cookie token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    now = now_utc()
    session.add(WebSession(id=token_id(token), user_id=user.id,
                           csrf_token=secrets.token_urlsafe(32), created_at=now,
                           last_seen_at=now, expires_at=now + absolute_lifetime(),
                           mfa_pending=mfa_pending, ip=ip))
    session.flush()
    return token


def load_session(session: Session, token: str | None, *, touch: bool = True) -> WebSession | None:
    """The live session for a cookie token, or None (expired sessions are deleted here)."""
    if not token:
        return None
    row = session.get(WebSession, token_id(token))
    if row is None:
        return None
    now = now_utc()
    if now >= row.expires_at or now - row.last_seen_at >= idle_timeout():
        session.delete(row)
        session.flush()
        return None
    if touch:
        row.last_seen_at = now
    return row


def destroy_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(WebSession).where(WebSession.id == token_id(token)))


def destroy_user_sessions(session: Session, user_id: int) -> None:
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))


def purge_expired(session: Session) -> int:
    """Delete sessions past their absolute lifetime (idle ones go when next presented)."""
    result = session.execute(delete(WebSession).where(WebSession.expires_at <= now_utc()))
    return int(getattr(result, "rowcount", 0) or 0)


def _audit_login(session: Session, username: str, outcome: str, *, ip: str | None,
                 request_id: str | None, reason: str | None = None) -> None:
    audit.append(session, actor=username[:128], action="auth.login", object_type="user",
                 object_id=username[:128], outcome=outcome, ip=ip, request_id=request_id,
                 details={"reason": reason} if reason else {})


def login(session: Session, username: str, password: str, *, ip: str | None,
          request_id: str | None = None) -> LoginResult:
    """Check a username and password, apply lock-out, audit, and start a session on success."""
    now = now_utc()
    user = session.scalars(select(User).where(User.username == username)).first()
    cred = session.get(UserCredential, user.id) if user is not None else None
    if user is None or cred is None:
        verify_password(None, password)  # same work as a real check
        _audit_login(session, username, "failure", ip=ip, request_id=request_id,
                     reason="unknown_user")
        return LoginResult(False, reason="unknown_user")
    if cred.locked_until is not None and cred.locked_until > now:
        _audit_login(session, username, "failure", ip=ip, request_id=request_id, reason="locked")
        return LoginResult(False, reason="locked")
    if not verify_password(cred.password_hash, password):
        cred.failed_count = (cred.failed_count or 0) + 1
        reason = "bad_password"
        if cred.failed_count >= MAX_FAILURES:
            cred.locked_until, cred.failed_count = now + LOCKOUT, 0
            reason = "bad_password_locked"
        _audit_login(session, username, "failure", ip=ip, request_id=request_id, reason=reason)
        return LoginResult(False, reason="bad_password")
    if not user.active:
        _audit_login(session, username, "failure", ip=ip, request_id=request_id,
                     reason="inactive")
        return LoginResult(False, reason="inactive")
    cred.failed_count, cred.locked_until, cred.last_login_at = 0, None, now
    purge_expired(session)  # housekeeping: sessions past their lifetime go at the next sign-in
    mfa = cred.totp_secret is not None
    token = create_session(session, user, ip=ip, mfa_pending=mfa)
    _audit_login(session, username, "success" if not mfa else "password_ok", ip=ip,
                 request_id=request_id)
    return LoginResult(True, user=user, token=token, mfa_pending=mfa,
                       must_change_password=needs_rotation(cred.password_changed_at, now))


def has_any_user(session: Session) -> bool:
    return session.scalars(select(User.id).limit(1)).first() is not None


def credential_of(session: Session, user_id: int) -> UserCredential | None:
    return session.get(UserCredential, user_id)


def locked_until(session: Session, user_id: int) -> datetime | None:
    cred = session.get(UserCredential, user_id)
    return cred.locked_until if cred else None


# --- API keys (systems such as the HIS; see careloop.flows.ingest for the key rows) ----------


@dataclass(frozen=True, slots=True)
class ApiCaller:
    """A system authenticated by an API key holding the scope the route needs."""

    name: str
    scopes: tuple[str, ...]

    @property
    def actor(self) -> str:
        return f"apikey:{self.name}"[:128]


class ApiKeyRefused(Exception):
    """A missing, unknown, revoked or expired key (401), or one without the scope (403).

    ``actor`` and ``details`` are for the refusal's audit row, which the caller writes in its
    own transaction (the refused request's work is rolled back)."""

    def __init__(self, status: int, message: str, actor: str, details: dict[str, str]) -> None:
        super().__init__(message)
        self.status, self.actor, self.details = status, actor, details


def api_key_caller(session: Session, key: str | None, scope: str, *, action: str,
                   ip: str | None, request_id: str | None,
                   object_id: str | None = None) -> ApiCaller:
    """Authenticate ``key`` for ``scope``: records its last use and audits the action. Raises
    :class:`ApiKeyRefused` (audit it with :func:`audit_refusal`)."""
    from careloop.flows.ingest import authenticate, scopes_of

    found = authenticate(session, key)
    if found is None:
        raise ApiKeyRefused(401, "missing, unknown, revoked or expired API key", "apikey:?",
                            {"reason": "unknown_or_expired"})
    caller = ApiCaller(found.name, scopes_of(found))
    if scope not in caller.scopes:
        raise ApiKeyRefused(403, f"this API key lacks the scope {scope}", caller.actor,
                            {"reason": "scope", "needs": scope})
    found.last_used_at = now_utc()
    audit.append(session, actor=caller.actor, action=action, object_type="api_key",
                 object_id=object_id, ip=ip, request_id=request_id,
                 details={"scope": scope})
    return caller


def audit_refusal(session: Session, refused: ApiKeyRefused, *, action: str, ip: str | None,
                  request_id: str | None, object_id: str | None = None) -> None:
    audit.append(session, actor=refused.actor, action=action, object_type="api_key",
                 object_id=object_id, outcome="denied", ip=ip, request_id=request_id,
                 details=dict(refused.details))
