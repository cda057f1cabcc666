"""Compile an already-checked :class:`Expression` into one Python function (once).

The engine's evaluator walks the syntax tree on every call; a rule set evaluates the same few
conditions for every event, so the rule engine turns each condition into Python source that calls
the engine's *own* operator table and lookup (``careloop.engine.expression_runtime``) — the same
null-safe semantics, without the per-call tree walk (Jinja's "compile once, run many").

Only the plain subset is compiled: names, fields, constant keys, single comparisons,
``and``/``or``/``not``, arithmetic, ``x if c else y`` and list literals. The source is generated
from the *checked* tree only: every constant and name goes through a table (``_K[i]``), never
into the text, so author text cannot inject code. An expression with function calls or chained
comparisons keeps the engine's evaluator, and any exception on the fast path re-runs the engine's
evaluator, so errors carry the usual code and column.

    >>> from careloop.engine.expressions import compile_expression
    >>> test = fast(compile_expression("answers.overall < 3 and 'x' in tags"))
    >>> test({"answers": {"overall": 2}, "tags": ["x"]}), test({"answers": {}})
    (True, False)
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

from careloop.engine.expression_runtime import OPERATORS, lookup
from careloop.engine.expressions import Expression

Fn = Callable[[Mapping[str, Any]], Any]

_ORDERING = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_NUMBERS = (int, float)


class _NotCompiled(Exception):
    """Raised while generating source for syntax the fast path leaves to the engine."""


class _Source:
    """Python source for one expression, with its constant and operator tables."""

    def __init__(self) -> None:
        self.constants: list[Any] = []
        self.temps = 0

    def const(self, value: Any) -> str:
        self.constants.append(value)
        return f"_K[{len(self.constants) - 1}]"

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def expr(self, node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return self.const(node.value)
        if isinstance(node, ast.Name):
            return f"ctx.get({self.const(node.id)})"
        if isinstance(node, ast.Attribute):
            return self.field(self.expr(node.value), self.const(node.attr), True)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            return self.field(self.expr(node.value), self.const(node.slice.value), False)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return self.compare(node.ops[0], node.left, node.comparators[0])
        if isinstance(node, ast.BoolOp):
            joiner = " and " if isinstance(node.op, ast.And) else " or "
            return "(" + joiner.join(self.expr(v) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return f"(not {self.expr(node.operand)})"
            return f"{self.const(OPERATORS[type(node.op)])}({self.expr(node.operand)})"
        if isinstance(node, ast.BinOp):
            apply = self.const(OPERATORS[type(node.op)])
            return f"{apply}({self.expr(node.left)}, {self.expr(node.right)})"
        if isinstance(node, ast.IfExp):
            return (f"({self.expr(node.body)} if {self.expr(node.test)} "
                    f"else {self.expr(node.orelse)})")
        if isinstance(node, ast.List | ast.Tuple):
            items = ", ".join(self.expr(e) for e in node.elts)
            return f"[{items}]" if isinstance(node, ast.List) else f"({items},)"
        raise _NotCompiled(type(node).__name__)

    def field(self, base: str, key: str, is_field: bool) -> str:
        # Plain dicts (what contexts are made of) read directly; anything else goes through the
        # engine's lookup, which also raises the engine's errors.
        t = self.temp()
        return (f"({t}.get({key}) if type({t} := {base}) is dict "
                f"else _lookup({t}, {key}, field={is_field}))")

    def compare(self, operator: ast.cmpop, left: ast.expr, right: ast.expr) -> str:
        a = self.expr(left)
        if isinstance(operator, ast.In | ast.NotIn) and isinstance(right, ast.List | ast.Tuple) \
                and all(isinstance(e, ast.Constant) for e in right.elts):
            values = self.const(tuple(e.value for e in right.elts))  # type: ignore[attr-defined]
            return f"({a} {'in' if isinstance(operator, ast.In) else 'not in'} {values})"
        b = self.expr(right)
        symbol = _ORDERING.get(type(operator))
        if symbol is not None and isinstance(right, ast.Constant) \
                and type(right.value) in _NUMBERS:
            t = self.temp()
            apply = self.const(OPERATORS[type(operator)])
            return f"({t} {symbol} {b} if type({t} := {a}) in _NUM else {apply}({t}, {b}))"
        if isinstance(operator, ast.Eq | ast.NotEq | ast.Is | ast.IsNot):
            text = {ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not"}
            return f"({a} {text[type(operator)]} {b})"
        return f"{self.const(OPERATORS[type(operator)])}({a}, {b})"


def _compiled(name: str, source: _Source, text: str, label: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {"_K": source.constants, "_lookup": lookup, "_NUM": _NUMBERS,
                                 "__builtins__": {"type": type, "dict": dict}}
    exec(compile(text, f"<{label}>", "exec"), namespace)
    fn: Callable[..., Any] = namespace[name]
    return fn


def fast_ruleset(flt: Expression | None, rules: list[tuple[Expression, bool]],
                 first: bool) -> Callable[[Mapping[str, Any]], list[int] | None] | None:
    """One function deciding a whole rule set: ``None`` if the filter fails, else the indexes
    of the matching rules (stopping after a ``stop`` rule, or the first match when ``first``).
    ``None`` is returned instead of a function when some condition is outside the fast subset.

        >>> from careloop.engine.expressions import compile_expression as c
        >>> m = fast_ruleset(c("x > 0"), [(c("x > 1"), False), (c("x > 2"), True),
        ...                                (c("x > 3"), False)], False)
        >>> m({"x": 0}), m({"x": 2}), m({"x": 5})
        (None, [0], [0, 1])
    """
    source = _Source()
    try:
        lines = ["def matcher(ctx):"]
        if flt is not None:
            lines.append(f"    if not ({source.expr(flt.tree.body)}):\n        return None")
        lines.append("    out = []")
        for index, (when, stop) in enumerate(rules):
            lines.append(f"    if {source.expr(when.tree.body)}:\n        out.append({index})")
            if stop or first:
                lines.append("        return out")
        lines.append("    return out\n")
    except _NotCompiled:
        return None
    return _compiled("matcher", source, "\n".join(lines), "rule set")


def fast(expression: Expression) -> Fn:
    """A function of the context with the value ``expression.evaluate`` would give."""
    source = _Source()
    try:
        body = source.expr(expression.tree.body)
    except _NotCompiled:
        return expression.evaluate
    compiled = _compiled("compiled", source, f"def compiled(ctx):\n    return {body}\n",
                         f"rule expression {expression.source[:40]!r}")

    def run(context: Mapping[str, Any]) -> Any:
        try:
            return compiled(context)
        except Exception:
            # The same value, or for a genuine error the engine's coded, located error.
            return expression.evaluate(context)

    return run
