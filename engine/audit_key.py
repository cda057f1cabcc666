"""The audit key: the secret of the audit chain's HMAC, kept outside the database.

``CARELOOP_AUDIT_KEY`` (the key itself, at least 32 characters) or the file
``CARELOOP_AUDIT_KEY_FILE`` (default ``var/audit.key`` under ``CARELOOP_HOME``). ``careloop up``
and ``careloop db upgrade`` create the file (64 hex characters, mode 0600) when it is missing.
Every process writing to one database must read the same key; keep a copy with the backups,
apart from the database's.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from careloop.engine.db import home
from careloop.engine.errors import CareloopError

KEY_ENV = "CARELOOP_AUDIT_KEY"
KEY_FILE_ENV = "CARELOOP_AUDIT_KEY_FILE"
MIN_LENGTH = 32


class AuditKeyError(CareloopError):
    """The audit key is missing or unusable (the message names where it was looked for)."""


def key_file() -> Path:
    raw = os.environ.get(KEY_FILE_ENV, "").strip()
    return Path(raw) if raw else home() / "var" / "audit.key"


def ensure_key() -> Path | None:
    """Create the key file (0600) when there is neither ``CARELOOP_AUDIT_KEY`` nor the file."""
    if os.environ.get(KEY_ENV, "").strip():
        return None
    path = key_file()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path


def load_key(*, create: bool = True) -> bytes:
    """The key's bytes; with ``create`` a missing key file is made first (as on upgrade)."""
    raw = os.environ.get(KEY_ENV, "").strip()
    if not raw:
        if create:
            ensure_key()
        path = key_file()
        try:
            raw = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise AuditKeyError(f"no audit key: {path} does not exist (set {KEY_FILE_ENV} to "
                                f"the key file, or {KEY_ENV})") from None
        except OSError as exc:
            raise AuditKeyError(f"audit key {path} cannot be read: "
                                f"{exc.strerror or type(exc).__name__}") from None
        where = str(path)
    else:
        where = KEY_ENV
    if len(raw) < MIN_LENGTH:
        raise AuditKeyError(f"audit key in {where} is shorter than {MIN_LENGTH} characters")
    return raw.encode("utf-8")
