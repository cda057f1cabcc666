"""Compiled, frozen specs of the rule engine's kinds: rule sets, decision tables, dictionaries.

Behaviour that needs no database lives here: a :class:`RuleSetSpec` decides which rules match a
context (:meth:`RuleSetSpec.match`), a :class:`DecisionTableSpec` evaluates its rows, and a
:class:`DictionarySpec` classifies text. Effects (tasks, tags…) are in ``rules/runtime.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from careloop.engine.errors import CareloopError
from careloop.engine.expressions import Expression

# The names a rule's expressions may read (contract 5, plus what the rule engine adds).
CONTEXT_NAMES = frozenset({"answers", "scores", "bands", "patient", "encounter", "event",
                           "reading", "task", "context", "classification", "readings"})


class RuleRuntimeError(CareloopError):
    """Raised when a rule set or decision table cannot be evaluated (e.g. a ``unique`` table
    matched two rows at run time, or an action's service is not registered)."""


@dataclass(frozen=True, slots=True)
class ActionCall:
    """One action of a rule's ``then``: the action name and its (schema-checked) options."""

    do: str
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    key: str
    title: Mapping[str, str]
    when: Expression
    priority: int
    stop: bool
    then: tuple[ActionCall, ...]
    watched: tuple[str, ...]  # dotted paths the condition reads, recorded in the trace
    # ``when.evaluate``: the engine's compiled closures, the reference evaluator on failure.
    test: Callable[[Mapping[str, Any]], Any] = field(repr=False, compare=False)


class Match(NamedTuple):
    """A rule whose condition held. One per rule, built with the rule set, so matching allocates
    nothing: :meth:`RuleSetSpec.match` returns a prebuilt tuple of them. What the condition saw
    is read from the same context when the trace is written (:meth:`values_in`)."""

    rule: RuleSpec

    def values_in(self, context: Mapping[str, Any]) -> dict[str, Any]:
        return {path: lookup(context, path) for path in self.rule.watched}


NO_MATCH: tuple[Match, ...] = ()
_TABLED = 8  # up to this many rules, every possible result is built with the rule set
_CACHED = 4096  # beyond, distinct results kept per rule set as they occur


class _Results(dict[int, tuple[Match, ...]]):
    """The results of a large rule set by bit mask, built when first seen (at most
    :data:`_CACHED` kept)."""

    def __init__(self, matches: tuple[Match, ...]) -> None:
        super().__init__()
        self.matches = matches

    def __missing__(self, mask: int) -> tuple[Match, ...]:
        found = tuple(m for i, m in enumerate(self.matches) if mask >> i & 1)
        if len(self) < _CACHED:
            self[mask] = found
        return found


@dataclass(frozen=True, slots=True)
class ClassifySpec:
    dictionary: str
    field: str


@dataclass(frozen=True, slots=True)
class RuleSetSpec:
    """A compiled rule set. ``rules`` are in evaluation order (priority, then file order)."""

    key: str
    title: Mapping[str, str]
    on: frozenset[str]
    filter: Expression | None
    hit_policy: str
    rules: tuple[RuleSpec, ...]
    classify: ClassifySpec | None
    forms: tuple[str, ...]
    filter_test: Callable[[Mapping[str, Any]], Any] | None = field(default=None, repr=False,
                                                                   compare=False)
    # The whole set as one function giving the bit mask of the matching rules
    # (careloop.rules.flat for plain conditions, else careloop.rules.matcher).
    matcher: Callable[[Mapping[str, Any]], int] | None = field(
        default=None, repr=False, compare=False)
    # one Match per rule, and every result by its bit mask (built with the set when it has at
    # most _TABLED rules, else as results occur), so match() allocates nothing
    matches: tuple[Match, ...] = field(init=False, repr=False, compare=False)
    results: Sequence[tuple[Match, ...]] | _Results = field(init=False, repr=False,
                                                            compare=False)
    decide: Callable[[Mapping[str, Any]], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        matches = tuple(Match(rule) for rule in self.rules)
        results: Sequence[tuple[Match, ...]] | _Results = _Results(matches)
        if len(matches) <= _TABLED:
            results = tuple(tuple(m for i, m in enumerate(matches) if mask >> i & 1)
                            for mask in range(1 << len(matches)))
        object.__setattr__(self, "matches", matches)
        object.__setattr__(self, "results", results)
        object.__setattr__(self, "decide", self.matcher or self._match_slowly)

    def applies(self, context: Mapping[str, Any]) -> bool:
        if self.filter_test is not None:
            return bool(self.filter_test(context))
        return self.filter is None or bool(self.filter.evaluate(context))

    def match(self, context: Mapping[str, Any]) -> tuple[Match, ...]:
        """The rules that match ``context`` under the hit policy and ``stop`` flags, in
        evaluation order (a prebuilt tuple: nothing is allocated per call).

        >>> from careloop.engine.expressions import compile_expression as c
        >>> w = c("answers.overall < 3")
        >>> r = RuleSpec("low", {}, w, 100, False, (), ("answers.overall",), w.evaluate)
        >>> s = RuleSetSpec("s", {}, frozenset({"form.submitted"}), None, "all", (r,), None, ())
        >>> ctx = {"answers": {"overall": 2}}
        >>> [(m.rule.key, m.values_in(ctx)) for m in s.match(ctx)]
        [('low', {'answers.overall': 2})]
        """
        try:
            return self.results[self.decide(context)]
        except Exception:  # a genuine error: the engine's evaluator raises it, located
            return self.results[self._match_slowly(context)]

    def _match_slowly(self, context: Mapping[str, Any]) -> int:
        if not self.applies(context):
            return 0
        mask = 0
        for index, rule in enumerate(self.rules):
            if not rule.test(context):
                continue
            mask |= 1 << index
            if rule.stop or self.hit_policy == "first":
                break
        return mask


def lookup(context: Mapping[str, Any], dotted: str) -> Any:
    """``lookup({"a": {"b": 1}}, "a.b") == 1``; missing parts read as ``None``."""
    value: Any = context
    for part in dotted.split("."):
        if type(value) is dict or isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def watched_paths(expression: Expression) -> tuple[str, ...]:
    """Dotted data paths an expression reads: ``answers.overall``, ``answers.bp.systolic``…"""
    paths: list[str] = []
    for node in ast.walk(expression.tree):
        path = _dotted(node)
        if path is not None and "." in path and path not in paths:
            paths.append(path)
    # Keep only the longest chains (answers.bp.systolic, not also answers.bp).
    return tuple(p for p in paths if not any(o != p and o.startswith(p + ".") for o in paths))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        base = _dotted(node.value)
        key = node.slice.value
        return None if base is None or not isinstance(key, str | int) else f"{base}.{key}"
    return None


def answer_fields(expression: Expression) -> list[tuple[str, int | None]]:
    """Form fields named as ``answers.X`` / ``answers["X"]``, with their column in the text.

    >>> from careloop.engine.expressions import compile_expression as c
    >>> answer_fields(c('answers.overall < 3 and answers["comment"] != ""'))
    [('overall', 1), ('comment', 25)]
    """
    found: list[tuple[str, int | None]] = []
    lead = len(expression.source) - len(expression.source.lstrip())
    for node in ast.walk(expression.tree):
        if not isinstance(node, ast.Attribute | ast.Subscript):
            continue
        if not (isinstance(node.value, ast.Name) and node.value.id == "answers"):
            continue
        if isinstance(node, ast.Attribute):
            name: object = node.attr
        elif isinstance(node.slice, ast.Constant):
            name = node.slice.value
        else:
            continue
        if isinstance(name, str):
            column = None if node.col_offset is None else _char_column(
                expression.source[lead:], node.col_offset) + lead
            found.append((name, column))
    return sorted(found, key=lambda item: item[1] or 0)


def _char_column(text: str, byte_offset: int) -> int:
    first_line = text.split("\n")[0]
    return len(first_line.encode()[:byte_offset].decode(errors="ignore")) + 1
