"""Password hashing (argon2id), the two password-policy profiles, strength, and TOTP.

``CARELOOP_PASSWORD_POLICY`` picks the profile (default ``asvs``):

- ``mlps3`` (等保三级): at least 8 characters, three of four classes (lower, upper, digit,
  symbol), and rotation every ``CARELOOP_PASSWORD_MAX_AGE_DAYS`` days (default 90);
- ``asvs`` (OWASP ASVS 4, V2.1): at least 12 characters, no composition rules.

Both profiles also refuse a password that is on the offline breached-password list
(``web/data/breached_passwords.txt.gz``, ~139,000 entries, loaded once on first use) or that the
zxcvbn strength estimator rates below 3 of 4 (fewer than about 10^8 guesses). The estimator's
dictionaries are extended with ``web/data/pinyin_words.txt`` (pinyin phrases, common Chinese
names and this system's own words) and the username. Each refusal names why.

    >>> [p.code for p in check_password("short", "asvs")]
    ['web.password.too_short']
    >>> check_password("correct horse battery", "asvs")
    []
    >>> [p.code for p in check_password("abcdefgh", "mlps3")]
    ['web.password.classes', 'web.password.breached', 'web.password.weak_sequence']
"""

from __future__ import annotations

import gzip
import hmac
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib import resources

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import matching as zxcvbn_matching
from zxcvbn import zxcvbn

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


def _data(name: str) -> bytes:
    return resources.files("careloop.web").joinpath("data", name).read_bytes()


@cache
def breached_passwords() -> frozenset[str]:
    """The breached/common list, lower-cased (read and decompressed once, on first use)."""
    text = gzip.decompress(_data("breached_passwords.txt.gz")).decode("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def is_breached(password: str) -> bool:
    return password.lower() in breached_passwords()


# zxcvbn keeps its dictionaries in one module-level dict and writes the per-call user inputs
# into it, so calls are serialised (a call takes milliseconds).
_ZXCVBN_LOCK = threading.Lock()
_ZXCVBN_MAX = 72  # the estimator refuses longer input; the first 72 characters decide


@cache
def _extra_words() -> tuple[str, ...]:
    text = _data("pinyin_words.txt").decode("utf-8")
    return tuple(w.strip().lower() for w in text.splitlines()
                 if w.strip() and not w.startswith("#"))


def _estimate(password: str, user_inputs: list[str]) -> dict[str, object]:
    with _ZXCVBN_LOCK:
        if "careloop_words" not in zxcvbn_matching.RANKED_DICTIONARIES:
            zxcvbn_matching.add_frequency_lists({"careloop_words": list(_extra_words())})
        result: dict[str, object] = zxcvbn(password[:_ZXCVBN_MAX], user_inputs=user_inputs)
    return result


MIN_SCORE = 3
# what makes a guessable part guessable, in the order the reasons are shown
_WEAKNESS = (("repeat", "web.password.weak_repeat"),
             ("sequence", "web.password.weak_sequence"),
             ("spatial", "web.password.weak_keyboard"),
             ("date", "web.password.weak_date"),
             ("regex", "web.password.weak_date"),
             ("dictionary", "web.password.weak_common"))


def strength_problems(password: str, username: str | None = None) -> list[PasswordProblem]:
    """Why the estimator rates ``password`` as guessable (empty when its score is 3 or 4).

    >>> [p.code for p in strength_problems("aaaaaaaaaaaa")]
    ['web.password.weak_repeat']
    >>> [p.code for p in strength_problems("woaini1314520")]
    ['web.password.weak_common']
    """
    inputs = [username] if username else []
    result = _estimate(password, inputs)
    score = result.get("score")
    if isinstance(score, int) and score >= MIN_SCORE:
        return []
    sequence = result.get("sequence")
    found = {str(m.get("pattern")) for m in sequence if isinstance(m, dict)} \
        if isinstance(sequence, list) else set()
    codes: list[str] = []
    for pattern, code in _WEAKNESS:
        if pattern in found and code not in codes:
            codes.append(code)
    return [PasswordProblem(c) for c in codes] or [PasswordProblem("web.password.weak")]


def _common_word_dressed_up(password: str) -> bool:
    """A common password or word with only digits and symbols around it (``Admin@123456``).

    >>> _common_word_dressed_up("Admin@123456"), _common_word_dressed_up("Purple-Ward-Nine-17")
    (True, False)
    """
    letters = re.sub(r"[^a-z]", "", password.lower())
    if not letters or letters == password.lower():
        return False
    return letters in breached_passwords() or letters in _extra_words()


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
        return problems
    if policy == "mlps3" and _classes(password) < 3:
        problems.append(PasswordProblem("web.password.classes"))
    if is_breached(password):
        problems.append(PasswordProblem("web.password.breached"))
    elif _common_word_dressed_up(password):
        problems.append(PasswordProblem("web.password.common_word"))
    if username and username.lower() in password.lower():
        problems.append(PasswordProblem("web.password.contains_username"))
    if password:
        problems.extend(strength_problems(password, username))
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


def totp_step(secret: str, code: str, at: datetime, after: int | None) -> int | None:
    """The time step ``code`` belongs to at ``at`` (one 30-second step of drift allowed either
    way), or None when it matches none — or only steps at or before ``after``, the last step
    already used (a code works once).
    """
    code = code.strip()
    if not re.fullmatch(r"[0-9]{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    now_step = totp.timecode(at)
    for step in (now_step - 1, now_step, now_step + 1):
        if after is not None and step <= after:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def verify_totp(secret: str, code: str, at: datetime) -> bool:
    """Check a 6-digit code at ``at`` (one 30-second step of drift allowed); no replay check —
    sign-in uses :func:`totp_step` with the stored last step."""
    return totp_step(secret, code, at, None) is not None


def totp_qr_svg(uri: str) -> str:
    """The ``otpauth://`` URI as an inline SVG QR code, made locally (segno; no network)."""
    qr = segno.make(uri, error="m")
    svg: str = qr.svg_inline(scale=4, border=2, title="TOTP", dark="#000", light="#fff")
    return svg
