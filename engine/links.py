"""The public base URL: the one place that reads ``CARELOOP_BASE_URL`` and makes links absolute.

Every link a message carries (a form link, a discharge-summary link) leaves the hospital in an
SMS or WeChat message and is opened on the patient's phone, so it must be absolute:

    CARELOOP_BASE_URL=https://fu.example-hospital.cn/
    absolute("/f/abc")  ──▶ "https://fu.example-hospital.cn/f/abc"

Without the setting, links use :data:`DEFAULT_BASE_URL` (what ``careloop up`` serves on by
default) and :func:`startup_warning` says so at start-up; ``careloop up --demo`` sets it to the
host and port it serves on.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.errors import CareloopError

BASE_URL_ENV = "CARELOOP_BASE_URL"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class BaseUrlError(CareloopError):
    """Raised when ``CARELOOP_BASE_URL`` is set but is not an absolute http(s) URL."""


def configured() -> bool:
    """Whether the hospital set ``CARELOOP_BASE_URL``."""
    return bool(os.environ.get(BASE_URL_ENV, "").strip())


def base_url() -> str:
    """The base URL without a trailing slash (``https://host[:port][/prefix]``).

    Raises:
        BaseUrlError: if the setting is not an absolute http(s) URL.
    """
    text = os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
            or parts.fragment:
        raise BaseUrlError(f"{BASE_URL_ENV} has value {text!r}. Not an absolute http(s) URL "
                           "such as https://followup.example-hospital.cn")
    return text.rstrip("/")


def absolute(path: str) -> str:
    """``path`` (``/f/…``) under the base URL; an absolute URL is returned unchanged."""
    if urlsplit(path).scheme in ("http", "https"):
        return path
    return base_url() + "/" + path.lstrip("/")


def use_for_demo(host: str, port: int) -> None:
    """``careloop up --demo``: links point at the address being served, unless set."""
    if not configured():
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        os.environ[BASE_URL_ENV] = f"http://{shown}:{port}"


def startup_warning() -> str | None:
    """The start-up notice when the setting is missing (``None`` when it is set)."""
    if configured():
        base_url()  # a malformed setting stops the start-up, not the first message
        return None
    return (f"{BASE_URL_ENV} is not set: links in messages to patients point at "
            f"{DEFAULT_BASE_URL}, which patients' phones cannot open. Set it to the address "
            "patients reach this server at, e.g. "
            f"{BASE_URL_ENV}=https://followup.example-hospital.cn (docs/web.md, Settings).")


# Patient links in stored messages ---------------------------------------------------------------
#
# A form link (``/f/{token}``), a document link (``/d/{token}``), a results link
# (``/r/{token}``), a consult thread (``/q/{token}``), an education link (``/e/{token}``) or a
# stage summary (``/s/{token}``) opens a patient's page without signing in: the token is a
# secret. The database stores its SHA-256 only (form_requests, document_links, result_links,
# consult_links, education_sends, summary_links), and a message waiting in the outbox holds a
# placeholder instead of the token:
#
#     enqueue:  "…请填写 https://h/f/Zx9y…"  ──seal_links──▶  "…请填写 https://h/f/{{link:f:<ref>:<sealed>}}"
#     send:     placeholder ──open_links──▶ the token again, only in what the channel adapter gets
#
# ``ref`` is the start of the token's SHA-256 (the row the link belongs to: lookup by hash) and
# ``sealed`` the token XOR a keystream made from the installation's link secret and ``ref``.
# Without the secret a stored message opens nothing.

LINK_SECRET_ENV = "CARELOOP_LINK_SECRET"
LINK_IN_TEXT = re.compile(r"/(f|d|r|q|e|s)/([A-Za-z0-9_\-]{16,128})(?![A-Za-z0-9_\-])")
PLACEHOLDER = re.compile(r"\{\{link:(f|d|r|q|e|s):([0-9a-f]{16}):([0-9a-f]{2,256})\}\}")


class LinkUnavailable(CareloopError):
    """Raised when a stored link cannot be opened again (the link secret changed)."""


def link_secret(session: Session) -> bytes:
    """``CARELOOP_LINK_SECRET``, else this installation's random secret (made once, in the
    database, so every process shares it)."""
    from careloop.engine.models import InstanceSecret

    configured_secret = os.environ.get(LINK_SECRET_ENV, "").strip()
    if configured_secret:
        return configured_secret.encode("utf-8")
    row = session.get(InstanceSecret, "link")
    if row is None:
        try:
            with session.begin_nested():
                row = InstanceSecret(name="link", value=secrets.token_hex(32),
                                     created_at=now_utc())
                session.add(row)
        except IntegrityError:  # another process made it first
            row = session.scalars(select(InstanceSecret).where(
                InstanceSecret.name == "link")).one()
    return row.value.encode("utf-8")


def _keystream(secret: bytes, ref: str, size: int) -> bytes:
    stream = b""
    counter = 0
    while len(stream) < size:
        stream += hmac.new(secret, f"link:{ref}:{counter}".encode(), hashlib.sha256).digest()
        counter += 1
    return stream[:size]


def token_ref(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def seal_token(secret: bytes, kind: str, token: str) -> str:
    ref = token_ref(token)
    raw = token.encode("ascii")
    sealed = bytes(a ^ b for a, b in zip(raw, _keystream(secret, ref, len(raw)), strict=True))
    return f"{{{{link:{kind}:{ref}:{sealed.hex()}}}}}"


def seal_links(session: Session, text: str | None) -> str | None:
    """``text`` with every ``/f/``, ``/d/``, ``/r/``, ``/q/``, ``/e/`` and ``/s/{token}`` token
    replaced by its placeholder."""
    if not text or not LINK_IN_TEXT.search(text):
        return text
    secret = link_secret(session)
    return LINK_IN_TEXT.sub(
        lambda m: f"/{m.group(1)}/{seal_token(secret, m.group(1), m.group(2))}", text)


def first_ref(text: str | None) -> str | None:
    """The reference of the first sealed link in ``text`` (to find the message a patient's
    opening of that link came from), else ``None``."""
    match = PLACEHOLDER.search(text or "")
    return match.group(2) if match else None


def _unseal(secret: bytes, match: re.Match[str], shown: bool) -> str:
    ref, sealed = match.group(2), bytes.fromhex(match.group(3))
    token = bytes(a ^ b for a, b in zip(sealed, _keystream(secret, ref, len(sealed)),
                                        strict=True)).decode("ascii", "replace")
    if token_ref(token) != ref:
        raise LinkUnavailable("a link in this message cannot be opened again (the link secret "
                              f"changed; set {LINK_SECRET_ENV} back or send a new link)")
    return token if shown else token[:4] + "…"


def open_links(session: Session, text: str | None, *, shown: bool = True) -> str | None:
    """The message as sent: placeholders become the tokens again (``shown=False``: only their
    first characters, for staff pages and trial printouts that must not open a patient's page).

    Raises:
        LinkUnavailable: when a placeholder does not open with the current secret.
    """
    if not text or "{{link:" not in text:
        return text
    secret = link_secret(session)
    return PLACEHOLDER.sub(lambda m: _unseal(secret, m, shown), text)


def staff_text(session: Session, text: str | None) -> str | None:
    """A stored message for a staff page: each link's token shortened to its first characters
    (:func:`open_links` with ``shown=False``); when the link secret changed, the link's token
    is only "…" — never the placeholder's internal code."""
    try:
        return open_links(session, text, shown=False)
    except LinkUnavailable:
        return PLACEHOLDER.sub("…", text or "")
