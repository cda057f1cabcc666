"""Masking of personal data for display. Logs never get personal data at all, masked or not.

    >>> mask_phone("13812345678")
    '138****5678'
    >>> mask_id_number("110101199003071234")
    '110***********1234'
    >>> mask_name("张三丰")
    '张*丰'
"""

from __future__ import annotations


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


def mask_name(name: str | None) -> str | None:
    """Keep the first and last character of a name: 张三 → 张*, 张三丰 → 张*丰."""
    if not name:
        return name
    if len(name) <= 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]
