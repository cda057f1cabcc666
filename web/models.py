"""Tables of the web runtime: credentials, server-side sessions.

Credentials live beside ``users`` (not in it) so the domain table stays free of secrets. Sessions
are rows, so several app processes share them; the browser's cookie holds a random token and the
table stores only its SHA-256 (a leaked table gives no usable session).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow


class UserCredential(Base):
    """A user's password (argon2id), optional TOTP secret and lock-out counters."""

    __tablename__ = "user_credentials"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # the last accepted TOTP time step: that step and every earlier one are refused (no replay)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # a secret the server generated and showed once at /account/totp, not yet confirmed
    totp_pending_secret: Mapped[str | None] = mapped_column(String(64))
    totp_pending_at: Mapped[datetime | None]
    failed_count: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]


class WebSession(Base):
    """One signed-in browser. ``id`` is the SHA-256 of the cookie's token."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    mfa_pending: Mapped[bool] = mapped_column(default=False)
    ip: Mapped[str | None] = mapped_column(String(64))


class PasswordHistory(Base):
    """Every password a user has had (argon2id hashes): the last five may not be chosen again."""

    __tablename__ = "password_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SigninThrottle(Base):
    """Failed sign-in attempts per scope (an account, a source address, a second factor).

    ``key`` is the SHA-256 of ``scope:value`` (no username or address is stored in clear);
    ``blocked_until`` is the progressive delay in force. Rows, so every process agrees.
    """

    __tablename__ = "signin_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime] = mapped_column(default=utcnow)
    blocked_until: Mapped[datetime | None] = mapped_column(index=True)
class AdminRequest(Base):
    """An administrative change waiting for a second administrator (separation of duties):
    granting an administrative role, or deactivating / revoking the last active auditor.

    ``action``: ``grant`` | ``revoke`` | ``deactivate``; ``status``: ``pending`` | ``approved`` |
    ``rejected``. Rows are never deleted: the decision stays beside the request.
    """

    __tablename__ = "admin_requests"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    role: Mapped[str | None] = mapped_column(String(32))
    department_id: Mapped[str | None] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]


class TickerHeartbeat(Base):
    """The last tick of one process's ticker (``host:pid``), written by the ``web.heartbeat``
    tick; ``/readyz`` is ready only while some ticker beat recently (``web/health.py``)."""

    __tablename__ = "ticker_heartbeats"

    process: Mapped[str] = mapped_column(String(128), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow)
