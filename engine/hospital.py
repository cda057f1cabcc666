"""Who the hospital is, as patients read it: its name (per language) and a phone to call.

Read from the environment on every call (every process agrees; nothing kept in memory):

``CARELOOP_HOSPITAL_NAME``     the name in Chinese (default ``本院``)
``CARELOOP_HOSPITAL_NAME_EN``  the name in English (default: the Chinese name when it was set,
                                else ``our hospital``)
``CARELOOP_HOSPITAL_PHONE``    the patient service phone (default: none; pages then ask the
                                patient to call the department that treated them)

    >>> import os
    >>> os.environ["CARELOOP_HOSPITAL_NAME"] = "示例医院"
    >>> hospital_name("zh-CN"), hospital_name("en")
    ('示例医院', '示例医院')
    >>> del os.environ["CARELOOP_HOSPITAL_NAME"]
"""

from __future__ import annotations

import os

DEFAULT_NAME = "本院"
DEFAULT_NAME_EN = "our hospital"


def hospital_name(locale: str | None = "zh-CN") -> str:
    zh = os.environ.get("CARELOOP_HOSPITAL_NAME", "").strip()
    if locale == "en":
        return os.environ.get("CARELOOP_HOSPITAL_NAME_EN", "").strip() or zh or DEFAULT_NAME_EN
    return zh or DEFAULT_NAME


def hospital_phone() -> str:
    """The patient service phone, or ``""`` when none is configured."""
    return os.environ.get("CARELOOP_HOSPITAL_PHONE", "").strip()
