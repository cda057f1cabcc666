"""A whole rule set decided by one function over the conditions' compiled closures.

Every condition is compiled once by the engine (:mod:`careloop.engine.expression_compile`, the
one compiled form of the expression language); this module only strings a rule set's programs
together — filter, then each rule in order, stopping after a ``stop`` rule or the first match
under ``hit_policy: first`` — so one call decides the set. No source is generated and nothing is
``exec``-ed.

A program that cannot decide (a runtime error, a refused value, a budget it might exceed) raises;
:meth:`careloop.rules.spec.RuleSetSpec.match` then re-runs the set through
``Expression.evaluate``, which gives the reference evaluator's coded, located error.

    >>> from careloop.engine.expressions import compile_expression as c
    >>> m = ruleset_matcher(c("x > 0"), [(c("x > 1"), False), (c("x > 2"), True),
    ...                                  (c("x > 3"), False)], False)
    >>> m is not None and (m({"x": 0}), m({"x": 2}), m({"x": 5}))
    (None, [0], [0, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from careloop.engine.expressions import MAX_STEPS, Expression

Matcher = Callable[[Mapping[str, Any]], list[int] | None]


def _run(expression: Expression) -> Callable[[Mapping[str, Any]], Any] | None:
    program = expression.program
    if program is None or program.budget != MAX_STEPS:
        return None
    return program.run


def ruleset_matcher(flt: Expression | None, rules: Sequence[tuple[Expression, bool]],
                    first: bool) -> Matcher | None:
    """One function deciding a rule set: ``None`` if the filter fails, else the indexes of the
    matching rules. ``None`` instead of a function when a condition has no compiled program
    (only the reference evaluator may run it)."""
    test = _run(flt) if flt is not None else None
    if flt is not None and test is None:
        return None
    plan: list[tuple[int, Callable[[Mapping[str, Any]], Any], bool]] = []
    for index, (when, stop) in enumerate(rules):
        run = _run(when)
        if run is None:
            return None
        plan.append((index, run, stop or first))

    if not any(last for _, _, last in plan):  # every rule is tested: one comprehension
        runs = tuple((index, run) for index, run, _ in plan)

        def every(context: Mapping[str, Any]) -> list[int] | None:
            if test is not None and not test(context):
                return None
            return [index for index, run in runs if run(context)]

        return every

    def matcher(context: Mapping[str, Any]) -> list[int] | None:
        if test is not None and not test(context):
            return None
        out: list[int] = []
        for index, run, last in plan:
            if run(context):
                out.append(index)
                if last:
                    return out
        return out

    return matcher
