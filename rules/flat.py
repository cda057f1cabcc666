"""A rule set of plain conditions decided by one Python function built from the checked trees.

Most rule sets compare answers with constants: ``answers.overall < 3``,
``'medication_guidance' in classification.negative or answers.medication_clear == 'no'``,
``event.form in ['a', 'b']``. For such a set this module builds *one* function — every path read
once into a local, each condition a plain ``if`` setting a bit of the result — because the
engine's closures (:mod:`careloop.rules.matcher`) cost one Python call per condition and per
``or``, which keeps them about 4× the hand-written time (docs/performance-rules.md).

The function is built as a Python syntax tree (``ast`` nodes), never as text:

* it is made only from trees :func:`careloop.engine.expressions.compile_expression` has checked,
  and only from the shapes below — anything else leaves the set to the closures;
* constants are ``ast.Constant`` nodes holding the checked literal (``str``, ``int``, ``float``,
  ``bool``, ``None`` or a tuple of them), so no definition text is ever parsed or pasted; names
  are ``ctx``, ``_m``, numbered locals ``_r<i>`` and a fixed table of helpers;
* :func:`_verify` walks the finished tree before it is compiled and refuses any node, name,
  attribute or constant outside that table (defence in depth), and the function is made with
  ``types.FunctionType`` over globals holding only the helpers and no builtins — nothing is
  ``exec``-ed or ``eval``-ed.

The shapes (``P`` a path of a name and constant keys, ``C`` a constant):
``P < C`` (and ``<=``, ``>``, ``>=``; ``C`` a number), ``P == C``, ``P != C``, ``P is C``,
``P is not C``, ``P in [C, ...]``, ``P not in [C, ...]``, ``C in P``, ``C not in P``, ``P``,
``C``, ``not x``, ``x and y``, ``x or y``. The plain case (a dict holding a number, a plain
value, a list, or nothing) is decided inline; any other value raises, and
:meth:`careloop.rules.spec.RuleSetSpec.match` re-runs the set through ``Expression.evaluate``
(closures, then the reference evaluator with its coded, located error). So the function returns
the result the reference evaluator gives, or raises. It has no loop and calls only ``dict.get``
and the helpers, so its work is bounded by the size of the checked conditions.

    >>> from careloop.engine.expressions import compile_expression as c
    >>> m = flat_matcher(c("x.a > 0"), [(c("x.a > 1"), False), (c("x.a > 2"), True),
    ...                                 (c("x.a > 3"), False)], False)
    >>> m is not None and (m({"x": {"a": 0}}), m({"x": {"a": 2}}), m({"x": {"a": 5}}))
    (0, 1, 3)
"""

from __future__ import annotations

import ast
import math
import types
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from careloop.engine.expression_compile import Fallback
from careloop.engine.expression_runtime import lookup
from careloop.engine.expressions import MAX_STEPS, Expression

Matcher = Callable[[Mapping[str, Any]], int]

_NUMBERS = frozenset({int, float})
# values compared inline: ``==``, ``in`` on them cannot fail (never a function or a type)
_PLAIN = frozenset({type(None), bool, int, float, str, list, dict})
_CONSTANTS = (type(None), bool, int, float, str)
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _read(container: Any, key: Any, is_field: bool) -> Any:
    """A key of anything but a plain dict, as the closures read it (functions refused)."""
    if callable(container):
        raise Fallback
    return lookup(container, key, field=is_field)


def _refuse() -> NoReturn:
    raise Fallback


def _ordered_none(value: Any) -> bool:
    """``None < 3`` is false (the engine's null-safe ordering); any other non-number: the
    closures and the reference evaluator decide."""
    if value is None:
        return False
    raise Fallback


def _in_none(value: Any) -> bool:
    """``'x' in None`` is false; a text or a dict: the closures and the reference decide."""
    if value is None:
        return False
    raise Fallback


# The only names the built function may use besides ``ctx``, ``_m`` and ``_r<i>``.
HELPERS: Mapping[str, Any] = types.MappingProxyType({
    "type": type, "dict": dict, "list": list, "_NUMBERS": _NUMBERS, "_PLAIN": _PLAIN,
    "_read": _read, "_refuse": _refuse, "_ordered_none": _ordered_none, "_in_none": _in_none,
})


class _Outside(Exception):
    """A condition outside the shapes this module builds (the closures decide the set)."""


def _name(id_: str) -> ast.Name:
    return ast.Name(id=id_, ctx=ast.Load())


def _const(value: Any) -> ast.Constant:
    return ast.Constant(value=value)


def _call(func: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=_name(func), args=list(args), keywords=[])


def _is_type(value: ast.expr, type_name: str) -> ast.Compare:
    """``type(value) is <type_name>``"""
    return ast.Compare(left=_call("type", value), ops=[ast.Is()], comparators=[_name(type_name)])


def _type_in(value: ast.expr, table: str) -> ast.Compare:
    """``type(value) in <table>``"""
    return ast.Compare(left=_call("type", value), ops=[ast.In()], comparators=[_name(table)])


def _if(test: ast.expr, body: ast.expr, orelse: ast.expr) -> ast.IfExp:
    return ast.IfExp(test=test, body=body, orelse=orelse)


def _constant(node: ast.AST) -> Any:
    """The value of a checked literal (``-3`` included), or :class:`_Outside`."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in _NUMBERS:
        number: Any = node.operand.value
        return _constant(ast.Constant(value=-number))
    if not isinstance(node, ast.Constant) or type(node.value) not in _CONSTANTS:
        raise _Outside
    if type(node.value) is float and not math.isfinite(node.value):
        raise _Outside
    return node.value


def _step(first: ast.expr, base: str, part: Any, is_field: bool) -> Callable[[], ast.expr]:
    """``base.get(part) if type(base) is dict else _read(base, part, is_field)`` (``first``
    evaluates ``base``: its name, or its read where it is read only here)."""
    return lambda: _if(_is_type(first, "dict"),
                       ast.Call(func=ast.Attribute(value=_name(base), attr="get", ctx=ast.Load()),
                                args=[_const(part)], keywords=[]),
                       _call("_read", _name(base), _const(part), _const(is_field)))


class _Builder:
    """Builds the tests; ``uses`` (from a first, counting pass) says how often each path is
    read: a path read more than once is read into its local by a statement before the tests,
    a path read once is read where it is used (``(_r1 := ...)``), so a read that an ``or``
    skips costs nothing."""

    def __init__(self, uses: Counter[tuple[Any, ...]] | None = None) -> None:
        self.uses = uses
        self.counts: Counter[tuple[Any, ...]] = Counter()
        self.reads: dict[tuple[Any, ...], str] = {}
        self.pending: list[ast.stmt] = []

    def take(self) -> list[ast.stmt]:
        lines, self.pending = self.pending, []
        return lines

    def path(self, node: ast.AST) -> tuple[ast.expr, ast.Name]:
        """A path's value: the expression to evaluate first (which may read it) and the local
        holding it afterwards."""
        keys: list[tuple[Any, bool]] = []
        while isinstance(node, ast.Attribute | ast.Subscript):
            if isinstance(node, ast.Attribute):
                keys.append((node.attr, True))
            elif isinstance(node.slice, ast.Constant) and node.slice.value is not None:
                keys.append((_constant(node.slice), False))
            else:
                raise _Outside
            node = node.value
        if not isinstance(node, ast.Name):
            raise _Outside
        keys.reverse()
        key: tuple[Any, ...] = ("name", node.id)
        name = node.id
        first, local = self._read(key, lambda: ast.Call(
            func=ast.Attribute(value=_name("ctx"), attr="get", ctx=ast.Load()),
            args=[_const(name)], keywords=[]))
        for part, is_field in keys:
            key = (*key, type(part).__name__, part, is_field)
            # ``base.get(part) if type(base) is dict else _read(base, part, is_field)``
            first, local = self._read(key, _step(first, local, part, is_field))
        return first, _name(local)

    def _read(self, key: tuple[Any, ...], value: Callable[[], ast.expr]) -> tuple[ast.expr, str]:
        self.counts[key] += 1
        found = self.reads.get(key)
        if found is not None:
            return _name(found), found
        found = self.reads[key] = f"_r{len(self.reads)}"
        if self.uses is not None and self.uses[key] == 1:
            return ast.NamedExpr(target=ast.Name(id=found, ctx=ast.Store()), value=value()), found
        self.pending.append(ast.Assign(targets=[ast.Name(id=found, ctx=ast.Store())],
                                       value=value(), lineno=1))
        return _name(found), found

    def test(self, node: ast.AST) -> ast.expr:
        """A condition as an expression whose truth is the condition's truth."""
        if isinstance(node, ast.BoolOp):
            op = ast.And() if isinstance(node.op, ast.And) else ast.Or()
            return ast.BoolOp(op=op, values=[self.test(v) for v in node.values])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ast.UnaryOp(op=ast.Not(), operand=self.test(node.operand))
        if isinstance(node, ast.Constant | ast.UnaryOp):  # ``not`` is handled above
            return _const(_constant(node))
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return self.compare(node.ops[0], node.left, node.comparators[0])
        first, v = self.path(node)  # a bare path: its truth, for a plain value
        return _if(_type_in(first, "_PLAIN"), v, _call("_refuse"))

    def compare(self, operator: ast.cmpop, left: ast.expr, right: ast.expr) -> ast.expr:
        if isinstance(operator, ast.In | ast.NotIn):
            if isinstance(right, ast.List | ast.Tuple):  # P in [C, ...]
                values = tuple(_constant(e) for e in right.elts)
                first, v = self.path(left)
                word: ast.cmpop = ast.In() if isinstance(operator, ast.In) else ast.NotIn()
                return _if(_type_in(first, "_PLAIN"),
                           ast.Compare(left=v, ops=[word], comparators=[_const(values)]),
                           _call("_refuse"))
            c = _const(_constant(left))  # C in P
            first, v = self.path(right)
            found = _if(_is_type(first, "list"),
                        ast.Compare(left=c, ops=[ast.In()], comparators=[v]),
                        _call("_in_none", v))
            return found if isinstance(operator, ast.In) else ast.UnaryOp(op=ast.Not(),
                                                                          operand=found)
        c = _const(_constant(right))
        first, v = self.path(left)
        if isinstance(operator, _ORDERING):
            if type(c.value) not in _NUMBERS:
                raise _Outside
            order = type(operator)()
            return _if(_type_in(first, "_NUMBERS"),
                       ast.Compare(left=v, ops=[order], comparators=[c]),
                       _call("_ordered_none", v))
        if isinstance(operator, ast.Is | ast.IsNot) \
                and not any(c.value is s for s in (None, True, False)):
            raise _Outside  # identity is the same object only for the singletons
        if isinstance(operator, ast.Eq | ast.NotEq | ast.Is | ast.IsNot):
            op = type(operator)()
            return _if(_type_in(first, "_PLAIN"), ast.Compare(left=v, ops=[op], comparators=[c]),
                       _call("_refuse"))
        raise _Outside


def _usable(expression: Expression) -> bool:
    """Only conditions the engine compiled under the full step budget (as the closures)."""
    program = expression.program
    return program is not None and program.budget == MAX_STEPS


def build(flt: Expression | None, rules: Sequence[tuple[Expression, bool]],
          first: bool) -> ast.Module | None:
    """The syntax tree of ``def ruleset(ctx)``, or ``None`` when a condition is outside the
    shapes above."""
    if (flt is not None and not _usable(flt)) or not all(_usable(w) for w, _ in rules):
        return None
    counting = _Builder()
    try:
        for condition in ([flt] if flt is not None else []) + [w for w, _ in rules]:
            counting.test(condition.tree.body)
    except _Outside:
        return None
    b = _Builder(counting.counts)
    body: list[ast.stmt] = []
    mask = ast.Name(id="_m", ctx=ast.Store())
    try:
        if flt is not None:  # a set whose filter fails costs only the filter's reads
            test = b.test(flt.tree.body)
            body += [*b.take(), ast.If(test=ast.UnaryOp(op=ast.Not(), operand=test),
                                       body=[ast.Return(value=_const(0))], orelse=[])]
        tests = [b.test(when.tree.body) for when, _ in rules]
    except _Outside:
        return None
    body += [*b.take(), ast.Assign(targets=[mask], value=_const(0), lineno=1)]
    for index, ((_, stop), test) in enumerate(zip(rules, tests, strict=True)):
        then: list[ast.stmt] = [ast.AugAssign(target=ast.Name(id="_m", ctx=ast.Store()),
                                              op=ast.BitOr(), value=_const(1 << index))]
        if stop or first:
            then.append(ast.Return(value=_name("_m")))
        body.append(ast.If(test=test, body=then, orelse=[]))
    body.append(ast.Return(value=_name("_m")))
    args = ast.arguments(posonlyargs=[], args=[ast.arg(arg="ctx")], kwonlyargs=[],
                         kw_defaults=[], defaults=[])
    function = ast.FunctionDef(name="ruleset", args=args, body=body, decorator_list=[],
                               returns=None, type_comment=None, lineno=1)
    return ast.fix_missing_locations(ast.Module(body=[function], type_ignores=[]))


_NODES = (ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Assign, ast.AugAssign,
          ast.If, ast.Return, ast.IfExp, ast.NamedExpr, ast.BoolOp, ast.UnaryOp, ast.Compare,
          ast.Call,
          ast.Attribute, ast.Name, ast.Constant, ast.Load, ast.Store, ast.And, ast.Or, ast.Not,
          ast.BitOr, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq, ast.Is, ast.IsNot,
          ast.In, ast.NotIn)


def _verify(module: ast.Module) -> None:
    """Refuse anything in the built tree outside the fixed table (a bug here, never input)."""
    (function,) = module.body
    if not isinstance(function, ast.FunctionDef) or function.decorator_list:
        raise ValueError("one plain function expected")
    for node in ast.walk(module):
        if not isinstance(node, _NODES):
            raise ValueError(f"unexpected node {type(node).__name__}")
        if isinstance(node, ast.Name):
            numbered = node.id.startswith("_r") and node.id[2:].isdigit()
            if not (node.id in HELPERS or node.id in ("ctx", "_m") or numbered):
                raise ValueError(f"unexpected name {node.id!r}")
        elif isinstance(node, ast.Attribute) and node.attr != "get":
            raise ValueError(f"unexpected attribute {node.attr!r}")
        elif isinstance(node, ast.Constant):
            value: Any = node.value
            items = value if type(value) is tuple else (value,)
            if any(type(item) not in _CONSTANTS for item in items):
                raise ValueError(f"unexpected constant of type {type(node.value).__name__}")
        elif isinstance(node, ast.Call) and not (
                (isinstance(node.func, ast.Name) and node.func.id in HELPERS)
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "get")):
            raise ValueError("unexpected call")


def flat_matcher(flt: Expression | None, rules: Sequence[tuple[Expression, bool]],
                 first: bool) -> Matcher | None:
    """One function deciding a rule set: a bit mask of the matching rules (bit ``i`` for rule
    ``i``; ``0`` when the filter fails or nothing matched), stopping after a ``stop`` rule or
    the first match when ``first``. ``None`` when a condition is outside the shapes above."""
    module = build(flt, rules, first)
    if module is None:
        return None
    _verify(module)
    try:
        code = compile(module, "<rule set>", "exec")
    except (RecursionError, MemoryError, ValueError, SyntaxError):
        return None
    (function_code,) = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    namespace: dict[str, Any] = {"__builtins__": {}, **HELPERS}
    matcher: Matcher = types.FunctionType(function_code, namespace, "ruleset")
    return matcher
