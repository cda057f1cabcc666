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

import os
from urllib.parse import urlsplit

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
