"""A whole rule set decided by one function over the conditions' compiled closures.

Every condition is compiled once by the engine (:mod:`careloop.engine.expression_compile`, the
one compiled form of the expression language); this module only strings a rule set's programs
together — filter, then each rule in order, stopping after a ``stop`` rule or the first match
under ``hit_policy: first`` — so one call decides the set. The result is a bit mask (bit ``i`` for
the ``i``-th rule in evaluation order, ``0`` when the filter fails or nothing matched), from which
:meth:`careloop.rules.spec.RuleSetSpec.match` returns a prebuilt tuple of matches. A set of plain
conditions (comparisons of paths with constants, ``and``/``or``/``not``) is decided faster by
:mod:`careloop.rules.flat`; this module decides every other set.

A program that cannot decide (a runtime error, a refused value, a budget it might exceed) raises;
:meth:`careloop.rules.spec.RuleSetSpec.match` then re-runs the set through
``Expression.evaluate``, which gives the reference evaluator's coded, located error.

    >>> from careloop.engine.expressions import compile_expression as c
    >>> m = ruleset_matcher(c("x > 0"), [(c("x > 1"), False), (c("x > 2"), True),
    ...                                  (c("x > 3"), False)], False)
    >>> m is not None and (m({"x": 0}), m({"x": 2}), m({"x": 5}))
    (0, 1, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from careloop.engine.expressions import MAX_STEPS, Expression

Matcher = Callable[[Mapping[str, Any]], int]


def _run(expression: Expression) -> Callable[[Mapping[str, Any]], Any] | None:
    program = expression.program
    if program is None or program.budget != MAX_STEPS:
        return None
    return program.run


def ruleset_matcher(flt: Expression | None, rules: Sequence[tuple[Expression, bool]],
                    first: bool) -> Matcher | None:
    """One function deciding a rule set: the bit mask of the matching rules (``0`` if the filter
    fails). ``None`` instead of a function when a condition has no compiled program (only the
    reference evaluator may run it)."""
    test = _run(flt) if flt is not None else None
    if flt is not None and test is None:
        return None
    plan: list[tuple[int, Callable[[Mapping[str, Any]], Any], bool]] = []
    for index, (when, stop) in enumerate(rules):
        run = _run(when)
        if run is None:
            return None
        plan.append((index, run, stop or first))

    if not any(last for _, _, last in plan):  # every rule is tested
        runs = tuple((1 << index, run) for index, run, _ in plan)

        def every(context: Mapping[str, Any]) -> int:
            if test is not None and not test(context):
                return 0
            mask = 0
            for bit, run in runs:
                if run(context):
                    mask |= bit
            return mask

        return every

    steps = tuple((1 << index, run, last) for index, run, last in plan)

    def matcher(context: Mapping[str, Any]) -> int:
        if test is not None and not test(context):
            return 0
        mask = 0
        for bit, run, last in steps:
            if run(context):
                mask |= bit
                if last:
                    return mask
        return mask

    return matcher
