"""Keep personal data out of application logs.

Careloop code logs patient ids only; this filter is the safety net for everything else (library
messages, request lines with query strings): mobile numbers, resident ID numbers and e-mail
addresses are replaced before any handler sees the record.

    >>> redact("call 13812345678 about 110101199003071234")
    'call [phone] about [id-number]'
"""

from __future__ import annotations

import logging
import re
from typing import Any

_PATTERNS = (
    (re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])"), "[id-number]"),
    (re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)"), "[phone]"),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "[email]"),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class PersonalDataFilter(logging.Filter):
    """A logging filter that rewrites the record's message with :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug; log it as given
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_installed: list[bool] = []


def install() -> None:
    """Redact every log record at creation, whichever logger or handler it goes to (idempotent).

    A record factory is used rather than a logger filter because filters on a parent logger do
    not see records propagated from child loggers.
    """
    if _installed:
        return
    previous = logging.getLogRecordFactory()
    cleaner = PersonalDataFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        cleaner.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed.append(True)
