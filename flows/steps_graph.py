"""The step graph: which steps a step can go to, and which steps pause a run.

    >>> targets({"type": "decision", "if": "x", "then": "a", "else": "b"}, None)
    ['a', 'b']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Step types that wait for time, an answer or a person: a loop must pass through one of them.
PAUSING = frozenset({"wait", "send_form", "approval"})
JOIN = "join"  # the ``next`` that ends a parallel branch


def targets(raw: Mapping[str, Any], default_next: str | None) -> list[str]:
    """Every step key ``raw`` may continue at (``join`` excluded), in definition order."""
    found: list[Any] = []
    kind = raw.get("type")
    if kind == "decision":
        if "if" in raw:
            found += [raw.get("then"), raw.get("else", default_next)]
        else:
            found += [case.get("next") for case in raw.get("cases", [])]
            found.append(raw.get("default", default_next))
    elif kind == "parallel":
        found += list(raw.get("branches", []))
        found.append(raw.get("next", default_next))
    elif kind != "end":
        found.append(raw.get("next", default_next))
    for extra in ("on_timeout", "on_reject"):
        if extra in raw:
            found.append(raw[extra])
    return [t for t in found if isinstance(t, str) and t != JOIN]


def target_paths(raw: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """``(path inside the step, key)`` of every explicitly written target, for located errors."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for name in ("next", "then", "else", "default", "on_timeout", "on_reject"):
        value = raw.get(name)
        if isinstance(value, str):
            out.append(((name,), value))
    for i, case in enumerate(raw.get("cases", []) or []):
        if isinstance(case.get("next"), str):
            out.append((("cases", i, "next"), case["next"]))
    for i, branch in enumerate(raw.get("branches", []) or []):
        out.append((("branches", i), branch))
    return out
