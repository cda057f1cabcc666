"""Masking of personal data for display. Logs never get personal data at all, masked or not.

    >>> mask_phone("13812345678")
    '138****5678'
    >>> mask_id_number("110101199003071234")
    '110***********1234'
    >>> mask_identifier("张小明")
    '张**'
"""

from __future__ import annotations

import re

# A mainland mobile number in any writing (13812345678, 138-1234-5678, +86 138 1234 5678) and an
# 18-character resident ID number: the patterns the log redaction (engine/logs.py) and the
# masking of what patients typed share.
PHONE_PATTERN = re.compile(
    r"(?<![\dA-Za-z])(?:(?:\+|00)?86[\s\-.]?)?1[3-9]\d(?:[\s\-.]?\d{4}){2}(?!\d)")
ID_NUMBER_PATTERN = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")


def mask_phone(phone: str | None) -> str | None:
    """Keep the first 3 and last 4 digits of a mobile number."""
    if not phone:
        return phone
    digits = phone.strip()
    if len(digits) < 8:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_id_number(number: str | None) -> str | None:
    """Keep the first 3 and last 4 characters of a resident ID number (birth date hidden)."""
    if not number:
        return number
    value = number.strip()
    if len(value) < 8:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_identifier(text: str | None) -> str | None:
    """Any other identifying answer (a name, an address, a date of birth): only its first
    character kept, as a surname is kept on a masked Chinese name."""
    if not text:
        return text
    value = text.strip()
    if len(value) < 2:
        return "*" * len(value)
    return value[0] + "*" * (len(value) - 1)


def mask_in_text(text: str) -> tuple[str, bool]:
    """``text`` with the phone and ID numbers a person typed into it masked, and whether any was.

        >>> mask_in_text("请打 138-1234-5678 或 110101199003071234")
        ('请打 138****5678 或 110***********1234', True)
    """
    found = False

    def phone(match: re.Match[str]) -> str:
        nonlocal found
        found = True
        digits = re.sub(r"\D", "", match.group(0))[-11:]
        return mask_phone(digits) or ""

    def id_number(match: re.Match[str]) -> str:
        nonlocal found
        found = True
        return mask_id_number(match.group(0)) or ""

    text = ID_NUMBER_PATTERN.sub(id_number, text)
    return PHONE_PATTERN.sub(phone, text), found
