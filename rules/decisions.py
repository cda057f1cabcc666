"""Decision tables: cells, rows, hit policies, overlap and coverage analysis.

A cell is written as text in the table and parsed once::

    "-" or null     any value          "cardiology"   equals that text
    70              equals 70          ">= 70"        a comparison with a number
    "[18..64]"      inclusive range    "(0..10]"      range, open at 0
    "a | b | c"     one of the values

Hit policies: ``unique`` (at most one row may match: overlaps are reported at validation),
``first`` (first matching row), ``priority`` (the matching row with the highest ``priority``),
``any`` (all matching rows must agree), ``collect`` (all matching rows' outputs, or with
``aggregate`` the sum/min/max/count of the first output) and ``rule_order`` (all, in order).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from careloop.engine.expressions import Expression
from careloop.rules.spec import RuleRuntimeError

_COMPARE = re.compile(r"^\s*(<=|>=|<|>|!=|==|=)\s*(-?\d+(?:\.\d+)?)\s*$")
_RANGE = re.compile(r"^\s*([\[(])\s*(-?\d+(?:\.\d+)?)\s*\.\.\s*(-?\d+(?:\.\d+)?)\s*([\])])\s*$")


class CellError(ValueError):
    """Raised by :func:`parse_cell` when a cell's text is not a valid condition."""


@dataclass(frozen=True, slots=True)
class Cell:
    """A parsed cell: ``any``, a set of ``values``, a numeric range, or ``not`` one value."""

    kind: str  # any | values | range | not
    values: frozenset[Any] = frozenset()
    low: float = -math.inf
    low_closed: bool = True
    high: float = math.inf
    high_closed: bool = True

    def test(self, value: Any) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "values":
            return value in self.values
        if self.kind == "not":
            return value not in self.values
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def overlaps(self, other: Cell) -> bool:
        """Whether some value could satisfy both cells (conservative for ``not``)."""
        if self.kind == "any" or other.kind == "any":
            return True
        if self.kind == "not" or other.kind == "not":
            a, b = (self, other) if self.kind == "not" else (other, self)
            return not (b.kind == "values" and b.values <= a.values)
        if self.kind == "values" and other.kind == "values":
            return bool(self.values & other.values)
        if self.kind == "values":
            return any(other.test(v) for v in self.values)
        if other.kind == "values":
            return any(self.test(v) for v in other.values)
        low = max(self.low, other.low)
        high = min(self.high, other.high)
        if low < high:
            return True
        if low > high:
            return False
        return self.test(low) and other.test(low)


ANY = Cell("any")


def _number(text: str) -> float | int:
    return float(text) if "." in text else int(text)


def parse_cell(raw: object) -> Cell:
    """Parse one cell.

    >>> parse_cell(">= 70").test(75), parse_cell("[18..64]").test(70), parse_cell("a | b").test("b")
    (True, False, True)
    """
    if raw is None or raw == "-":
        return ANY
    if isinstance(raw, bool | int | float):
        return Cell("values", frozenset({raw}))
    if not isinstance(raw, str):
        raise CellError(f"cell {raw!r} is not text, a number or a boolean")
    compare = _COMPARE.match(raw)
    if compare:
        op, num = compare.group(1), _number(compare.group(2))
        if op in ("=", "=="):
            return Cell("values", frozenset({num}))
        if op == "!=":
            return Cell("not", frozenset({num}))
        return Cell("range", low=num if op[0] == ">" else -math.inf, low_closed=op == ">=",
                    high=num if op[0] == "<" else math.inf, high_closed=op == "<=")
    span = _RANGE.match(raw)
    if span:
        low, high = _number(span.group(2)), _number(span.group(3))
        if low > high:
            raise CellError(f"range {raw!r} is empty: {low} > {high}")
        return Cell("range", low=low, low_closed=span.group(1) == "[", high=high,
                    high_closed=span.group(4) == "]")
    if raw.strip().startswith("not "):
        return Cell("not", frozenset(v.strip() for v in raw.strip()[4:].split("|")))
    if (any(ch in raw for ch in "<>[]()") and ".." in raw) or raw.strip()[:1] in "<>":
        raise CellError(f"cannot read cell {raw!r}")
    return Cell("values", frozenset(v.strip() for v in raw.split("|")))


@dataclass(frozen=True, slots=True)
class RowSpec:
    index: int
    cells: Mapping[str, Cell]
    outputs: Mapping[str, Any]
    priority: int

    def matches(self, inputs: Mapping[str, Any]) -> bool:
        return all(cell.test(inputs.get(name)) for name, cell in self.cells.items())


@dataclass(frozen=True, slots=True)
class InputSpec:
    key: str
    expression: Expression
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class DecisionTableSpec:
    key: str
    title: Mapping[str, str]
    hit_policy: str
    aggregate: str | None
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    rows: tuple[RowSpec, ...]

    def input_values(self, context: Mapping[str, Any]) -> dict[str, Any]:
        return {i.key: i.expression.evaluate(context) for i in self.inputs}

    def decide(self, context: Mapping[str, Any]) -> Any:
        """Evaluate the inputs against ``context`` and apply the hit policy."""
        return self.decide_inputs(self.input_values(context))

    def decide_inputs(self, inputs: Mapping[str, Any]) -> Any:
        """The table's result for input values (``None`` when no row matches, for single hits).

        ``unique`` / ``first`` / ``priority`` / ``any`` give one outputs dict; ``rule_order`` and
        ``collect`` give a list, or with ``aggregate`` one number.
        """
        hits = [row for row in self.rows if row.matches(inputs)]
        policy = self.hit_policy
        if policy == "unique" and len(hits) > 1:
            raise RuleRuntimeError(f"decision table {self.key}: rows "
                                   f"{[r.index + 1 for r in hits]} all match under 'unique'")
        if policy == "any" and len({tuple(sorted(r.outputs.items())) for r in hits}) > 1:
            raise RuleRuntimeError(f"decision table {self.key}: matching rows disagree under 'any'")
        if policy == "priority":
            hits = sorted(hits, key=lambda r: -r.priority)
        if policy in ("unique", "first", "priority", "any"):
            return dict(hits[0].outputs) if hits else None
        results = [dict(r.outputs) for r in hits]
        if policy == "rule_order" or self.aggregate is None:
            return results
        if self.aggregate == "count":
            return len(results)
        numbers = [r[self.outputs[0]] for r in results
                   if isinstance(r.get(self.outputs[0]), int | float)]
        if self.aggregate == "sum":
            return sum(numbers)
        if not numbers:
            return None
        return min(numbers) if self.aggregate == "min" else max(numbers)


def overlapping_rows(rows: Sequence[RowSpec]) -> list[tuple[RowSpec, RowSpec]]:
    """Pairs of rows some input could match both of (checked cell by cell)."""
    pairs = []
    for i, first in enumerate(rows):
        for second in rows[i + 1:]:
            names = set(first.cells) | set(second.cells)
            if all(first.cells.get(n, ANY).overlaps(second.cells.get(n, ANY)) for n in names):
                pairs.append((first, second))
    return pairs


def uncovered_values(inputs: Sequence[InputSpec], rows: Sequence[RowSpec]) -> list[tuple[str, Any]]:
    """Declared input values no row accepts (ignoring the other inputs)."""
    missing = []
    for spec in inputs:
        for value in spec.values:
            if not any(row.cells.get(spec.key, ANY).test(value) for row in rows):
                missing.append((spec.key, value))
    return missing
