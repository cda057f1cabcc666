"""Password hashing (argon2id), the two password-policy profiles, and TOTP.

``CARELOOP_PASSWORD_POLICY`` picks the profile (default ``asvs``):

- ``mlps3`` (等保三级): at least 8 characters, three of four classes (lower, upper, digit,
  symbol), and rotation every ``CARELOOP_PASSWORD_MAX_AGE_DAYS`` days (default 90);
- ``asvs`` (OWASP ASVS 4, V2.1): at least 12 characters, no composition rules, refused when it is
  on the local breached-password list shipped in ``web/data/breached_passwords.txt``.

    >>> [p.code for p in check_password("short", "asvs")]
    ['web.password.too_short']
    >>> check_password("correct horse battery", "asvs")
    []
    >>> [p.code for p in check_password("abcdefgh", "mlps3")]
    ['web.password.classes']
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib import resources

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from careloop.engine.errors import CareloopError

POLICY_ENV = "CARELOOP_PASSWORD_POLICY"
POLICIES = ("mlps3", "asvs")

_HASHER = PasswordHasher()  # argon2id with the library's current OWASP-recommended parameters
# A hash of a random string, verified when the username is unknown so timing does not tell.
_DUMMY_HASH = _HASHER.hash("careloop-dummy-password-for-timing")


class PolicyError(CareloopError):
    """Raised when ``CARELOOP_PASSWORD_POLICY`` names no known profile."""


@dataclass(frozen=True, slots=True)
class PasswordProblem:
    """Why a new password is refused: an i18n key and its parameters."""

    code: str
    params: tuple[tuple[str, int], ...] = ()


def policy_name() -> str:
    name = os.environ.get(POLICY_ENV, "").strip() or "asvs"
    if name not in POLICIES:
        raise PolicyError(f"{POLICY_ENV}={name!r}: expected one of {', '.join(POLICIES)}")
    return name


def max_age(policy: str | None = None) -> timedelta | None:
    """How long a password lasts before rotation is required (``mlps3`` only)."""
    if (policy or policy_name()) != "mlps3":
        return None
    return timedelta(days=int(os.environ.get("CARELOOP_PASSWORD_MAX_AGE_DAYS", "90")))


def needs_rotation(changed_at: datetime, now: datetime, policy: str | None = None) -> bool:
    limit = max_age(policy)
    return limit is not None and now - changed_at > limit


@cache
def breached_passwords() -> frozenset[str]:
    text = resources.files("careloop.web").joinpath("data", "breached_passwords.txt") \
        .read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def _classes(password: str) -> int:
    patterns = (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^a-zA-Z0-9]")
    return sum(1 for p in patterns if re.search(p, password))


def check_password(password: str, policy: str | None = None,
                   username: str | None = None) -> list[PasswordProblem]:
    """Every reason ``password`` is refused under ``policy`` (empty when it is acceptable)."""
    policy = policy or policy_name()
    problems: list[PasswordProblem] = []
    minimum = 8 if policy == "mlps3" else 12
    if len(password) < minimum:
        problems.append(PasswordProblem("web.password.too_short", (("n", minimum),)))
    if len(password) > 256:
        problems.append(PasswordProblem("web.password.too_long", (("n", 256),)))
    if policy == "mlps3" and _classes(password) < 3:
        problems.append(PasswordProblem("web.password.classes"))
    if policy == "asvs" and password.lower() in breached_passwords():
        problems.append(PasswordProblem("web.password.breached"))
    if username and username.lower() in password.lower():
        problems.append(PasswordProblem("web.password.contains_username"))
    return problems


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; with ``stored_hash=None`` spends the same time, False."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name="Careloop")


def verify_totp(secret: str, code: str, at: datetime) -> bool:
    """Check a 6-digit code at ``at`` (one 30-second step of drift allowed)."""
    return pyotp.TOTP(secret).verify(code.strip(), for_time=at, valid_window=1)
