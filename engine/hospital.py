"""Who the hospital is, as patients read it: its name (per language) and a phone to call.

Read from the environment on every call (every process agrees; nothing kept in memory):

``CARELOOP_HOSPITAL_NAME``     the name in Chinese (default ``本院``)
``CARELOOP_HOSPITAL_NAME_EN``  the name in English (default: the Chinese name when it was set,
                                else ``our hospital``)
``CARELOOP_HOSPITAL_PHONE``    the patient service phone (default: none; pages then ask the
                                patient to call the department that treated them)
``CARELOOP_MINUTES_PER_CALL``  staff minutes per manual follow-up call, for the hours an
                                automatic follow-up saves (default 5)

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


DEFAULT_MINUTES_PER_CALL = 5.0


def minutes_per_manual_call() -> float:
    """Staff minutes one manual follow-up call takes (dialling, talking, writing it up): what an
    answer through the link saves. ``CARELOOP_MINUTES_PER_CALL`` (default 5; 0.5 to 120)."""
    raw = os.environ.get("CARELOOP_MINUTES_PER_CALL", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_MINUTES_PER_CALL
    except ValueError:
        return DEFAULT_MINUTES_PER_CALL
    return value if 0.5 <= value <= 120 else DEFAULT_MINUTES_PER_CALL
