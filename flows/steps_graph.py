"""The step graph, read from the step types' declared edges (:class:`~.step_types.Edge`): which
steps a step can go to, and where each explicitly written target sits (for located errors).

    >>> targets({"type": "decision", "if": "x", "then": "a", "else": "b"}, None)
    ['a', 'b']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careloop.flows.step_types import JOIN, Edge, StepType, step_type

__all__ = ["JOIN", "active_edges", "pauses", "target_paths", "targets"]


def _type(raw: Mapping[str, Any]) -> StepType | None:
    return step_type(raw.get("type"))


def active_edges(kind: StepType, raw: Mapping[str, Any]) -> list[Edge]:
    """The edges of ``raw`` in its current mode (decision: ``then``/``else`` or the cases)."""
    mode = kind.mode_of(raw)
    return [e for e in kind.edges if e.mode is None or e.mode == mode]


def pauses(raw: Mapping[str, Any]) -> bool:
    """Whether a step of this type waits for time, an answer or a person."""
    kind = _type(raw)
    return kind is not None and kind.pauses


def targets(raw: Mapping[str, Any], default_next: str | None) -> list[str]:
    """Every step key ``raw`` may continue at (``join`` excluded), in definition order."""
    kind = _type(raw)
    if kind is None:
        return []
    found: list[Any] = []
    for edge in active_edges(kind, raw):
        value = raw.get(edge.option)
        if edge.item is not None:
            found += [c.get(edge.item) for c in value or [] if isinstance(c, Mapping)]
        elif edge.many:
            found += list(value or [])
        elif value is not None:
            found.append(value)
        elif edge.fallback:
            found.append(default_next)
    return [t for t in found if isinstance(t, str) and t != JOIN]


def target_paths(raw: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """``(path inside the step, key)`` of every explicitly written target, for located errors."""
    kind = _type(raw)
    out: list[tuple[tuple[str | int, ...], str]] = []
    for edge in kind.edges if kind is not None else ():
        value = raw.get(edge.option)
        if edge.item is not None and isinstance(value, list):
            for i, case in enumerate(value):
                if isinstance(case, Mapping) and isinstance(case.get(edge.item), str):
                    out.append(((edge.option, i, edge.item), case[edge.item]))
        elif edge.many and isinstance(value, list):
            out += [((edge.option, i), v) for i, v in enumerate(value) if isinstance(v, str)]
        elif isinstance(value, str):
            out.append(((edge.option,), value))
    return out
