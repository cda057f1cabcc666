"""Compile an already-checked :class:`Expression` into one Python function (once).

The engine's evaluator walks the syntax tree on every call; a rule set evaluates the same few
conditions for every event, so the rule engine turns each condition into Python source that calls
the engine's *own* operator table and lookup (``careloop.engine.expression_runtime``) — the same
null-safe semantics, without the per-call tree walk (Jinja's "compile once, run many").

Only the plain subset is compiled: names, fields, constant keys, single comparisons,
``and``/``or``/``not``, arithmetic, ``x if c else y`` and list literals. The source is generated
from the *checked* tree only: every constant and name goes through a table (bound to closure
variables ``_k<i>``), never into the text, so author text cannot inject code. Context reads are
hoisted (each path read once per call). An expression with function calls or chained comparisons
keeps ``Expression.evaluate`` (the engine's own compiled closures,
:mod:`careloop.engine.expression_compile`, measured 1.6–3× slower than this generated source for
the plain subset), and any exception on the fast path re-runs the engine's evaluator, so errors
carry the usual code and column.

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
    """Python source for one expression, with its constant and operator tables.

    Reads of the context (``answers.overall``: names, fields, constant keys) are hoisted: each
    distinct path is read once into a local (``_r<i>``) by a prologue line, and every use refers
    to the local. Reads are pure, and a read that fails (e.g. a field of a number) makes the
    caller re-run the engine's evaluator, so hoisting never changes a result or an error.
    """

    def __init__(self) -> None:
        self.constants: list[Any] = []
        self.temps = 0
        self.reads: dict[tuple[Any, ...], str] = {}
        self.prologue: list[str] = []

    def const(self, value: Any) -> str:
        self.constants.append(value)
        return f"_k{len(self.constants) - 1}"

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def take_prologue(self, indent: str) -> list[str]:
        lines, self.prologue = self.prologue, []
        return [f"{indent}{line}" for line in lines]

    def read(self, node: ast.AST) -> tuple[tuple[Any, ...], str] | None:
        """The local holding a pure read path (hoisted on first use), or ``None``."""
        if isinstance(node, ast.Name):
            path: tuple[Any, ...] = ("name", node.id)
            if path not in self.reads:
                self._hoist(path, f"ctx.get({self.const(node.id)})")
            return path, self.reads[path]
        key: Any
        if isinstance(node, ast.Attribute):
            key, is_field = node.attr, True
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and node.slice.value is not None:
            key, is_field = node.slice.value, False
        else:
            return None
        base = self.read(node.value)
        if base is None:
            return None
        path = (*base[0], type(key).__name__, key, is_field)
        if path not in self.reads:
            b, k = base[1], self.const(key)
            # Plain dicts (what contexts are made of) read directly; anything else goes through
            # the engine's lookup, which also raises the engine's errors.
            self._hoist(path, f"{b}.get({k}) if type({b}) is dict "
                              f"else _lookup({b}, {k}, field={is_field})")
        return path, self.reads[path]

    def _hoist(self, path: tuple[Any, ...], code: str) -> None:
        name = f"_r{len(self.reads)}"
        self.reads[path] = name
        self.prologue.append(f"{name} = {code}")

    def expr(self, node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return self.const(node.value)
        if isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
            found = self.read(node)
            if found is None:
                raise _NotCompiled(type(node).__name__)
            return found[1]
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

    def compare(self, operator: ast.cmpop, left: ast.expr, right: ast.expr) -> str:
        a = self.expr(left)
        is_in = isinstance(operator, ast.In | ast.NotIn)
        if is_in and isinstance(right, ast.List | ast.Tuple) \
                and all(isinstance(e, ast.Constant) for e in right.elts):
            values = self.const(tuple(e.value for e in right.elts))  # type: ignore[attr-defined]
            return f"({a} {'in' if isinstance(operator, ast.In) else 'not in'} {values})"
        b = self.expr(right)
        if is_in:  # a list read from the context: test directly, anything else via the engine
            t = self.temp()
            apply = self.const(OPERATORS[type(operator)])
            word = "in" if isinstance(operator, ast.In) else "not in"
            return f"({a} {word} {t} if type({t} := {b}) is list else {apply}({a}, {t}))"
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


def _compiled(name: str, source: _Source, body: list[str], label: str) -> Callable[..., Any]:
    """``def name(ctx): body`` inside a factory binding the constants ``_k<i>`` from the table
    (closure variables: fast to read, and never source text)."""
    names = [f"_k{i}" for i in range(len(source.constants))]
    lines = ["def _make(_K):"]
    if names:
        lines.append(f"    {', '.join(names)}, = _K")
    lines += [f"    def {name}(ctx):", *(f"    {line}" for line in body), f"    return {name}\n"]
    namespace: dict[str, Any] = {"_lookup": lookup, "_NUM": _NUMBERS,
                                 "__builtins__": {"type": type, "dict": dict, "list": list}}
    exec(compile("\n".join(lines), f"<{label}>", "exec"), namespace)
    fn: Callable[..., Any] = namespace["_make"](source.constants)
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
        lines: list[str] = []
        if flt is not None:
            test = source.expr(flt.tree.body)
            lines += [*source.take_prologue("    "), f"    if not ({test}):", "        return None"]
        tests = [source.expr(when.tree.body) for when, _ in rules]
        lines += [*source.take_prologue("    "), "    out = []"]
        for index, ((_, stop), test) in enumerate(zip(rules, tests, strict=True)):
            lines += [f"    if {test}:", f"        out.append({index})"]
            if stop or first:
                lines.append("        return out")
        lines.append("    return out")
    except _NotCompiled:
        return None
    return _compiled("matcher", source, lines, "rule set")


def fast(expression: Expression) -> Fn:
    """A function of the context with the value ``expression.evaluate`` would give."""
    source = _Source()
    try:
        body = source.expr(expression.tree.body)
    except _NotCompiled:
        return expression.evaluate
    compiled = _compiled("compiled", source,
                         [*source.take_prologue("    "), f"    return {body}"],
                         f"rule expression {expression.source[:40]!r}")

    def run(context: Mapping[str, Any]) -> Any:
        try:
            return compiled(context)
        except Exception:
            # The same value, or for a genuine error the engine's coded, located error.
            return expression.evaluate(context)

    return run
