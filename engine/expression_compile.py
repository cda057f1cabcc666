"""The fast path of the expression language: a checked tree compiled once into Python closures.

:func:`compile_tree` turns the tree that :func:`careloop.engine.expressions.compile_expression`
has already checked into a tree of small Python functions, one per syntax node, each calling the
*same* operator functions (:data:`~careloop.engine.expression_runtime.OPERATORS`), the same
null-safe :func:`~careloop.engine.expression_runtime.lookup` and the same registered function
library as the reference evaluator. No Python source is generated and nothing is ``exec``-ed:
constants, names and keys are bound as closure variables.

The fast path never decides an error. Any exception inside it (a runtime error, a refused value,
a budget that might be exceeded) makes ``Expression.evaluate`` re-run the reference evaluator,
which produces the coded, located :class:`~careloop.engine.expressions.ExpressionError` — so the
code, column and message of an error are exactly those of the reference evaluator. The fast path
only ever *returns* a value when the reference evaluator would return the same value.

The step budget is checked statically: the language has no loops, so an expression evaluates each
syntax node at most once and its node count is a bound on the reference evaluator's node steps.
Only function calls can charge more at run time (one step per list item they receive); each call
node gets an equal share of the budget left after the nodes, and a call whose arguments exceed
that share hands the evaluation to the reference evaluator, which meters exactly.

    >>> import ast
    >>> from careloop.engine.functions import CATALOGUE
    >>> from careloop.engine.registry import loaded_registry
    >>> table = dict(loaded_registry().catalogue(CATALOGUE).items())
    >>> program = compile_tree(ast.parse("a.b + 1 if a.b >= 2 else 0", mode="eval"), table, 100)
    >>> program is not None and program.run({"a": {"b": 4}})
    5
"""

from __future__ import annotations

import ast
import math
import operator as op
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from careloop.engine.expression_runtime import (
    MAX_INTEGER,
    OPERATORS,
    check_value,
    literal,
    lookup,
)
from careloop.engine.functions import FunctionSpec

Node = Callable[[Mapping[str, Any]], Any]

_NUMBERS = frozenset({int, float})
_SIZED = (list, tuple, dict)
_NOT_EVALUATED = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.keyword)


class Fallback(Exception):
    """Raised on the fast path when only the reference evaluator can decide (never escapes
    ``Expression.evaluate``)."""


@dataclass(frozen=True, slots=True)
class Program:
    """A compiled expression: ``run(context)`` gives the value or raises (then the caller
    re-runs the reference evaluator); ``budget`` is the step limit it was compiled for."""

    run: Node
    budget: int
    nodes: int


def count_nodes(tree: ast.AST) -> int:
    """How many syntax nodes the reference evaluator may evaluate (an upper bound of its node
    steps: each node is evaluated at most once)."""
    return sum(1 for node in ast.walk(tree) if not isinstance(node, _NOT_EVALUATED))


def compile_tree(tree: ast.Expression, table: Mapping[str, FunctionSpec],
                 budget: int) -> Program | None:
    """The closures of an already-checked tree, or ``None`` if the static node count alone
    exceeds ``budget`` (the reference evaluator then decides, with its coded error)."""
    nodes = count_nodes(tree.body)
    if nodes > budget:
        return None
    calls = sum(1 for node in ast.walk(tree.body) if isinstance(node, ast.Call))
    share = (budget - nodes) // calls if calls else 0
    return Program(_Compiler(table, share).node(tree.body), budget, nodes)


def _plain(value: Any) -> Any:
    """The reference evaluator refuses functions and types as values."""
    if callable(value):
        raise Fallback
    return value


def _read_path(node: ast.AST) -> tuple[str, tuple[tuple[Any, bool], ...]] | None:
    """``answers.overall`` / ``a['b'].c``: a name and constant keys (``(key, is_field)``), or
    ``None`` for any other shape."""
    keys: list[tuple[Any, bool]] = []
    while True:
        if isinstance(node, ast.Attribute):
            keys.append((node.attr, True))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and node.slice.value is not None:
            keys.append((node.slice.value, False))
        else:
            break
        node = node.value
    if not isinstance(node, ast.Name) or not keys:
        return None
    return node.id, tuple(reversed(keys))


def _path_read(name: str, keys: tuple[tuple[Any, bool], ...]) -> Node:
    """One closure reading a whole path: plain dicts directly, anything else through the
    engine's :func:`lookup` (which raises its errors); a function as a value is refused, as
    the reference evaluator refuses it."""
    if len(keys) == 1:
        ((key, is_field),) = keys

        def read_one(ctx: Mapping[str, Any]) -> Any:
            value = ctx.get(name)
            if type(value) is dict:
                value = value.get(key)
            else:
                if callable(value):
                    raise Fallback
                value = lookup(value, key, field=is_field)
            if callable(value):
                raise Fallback
            return value

        return read_one

    def read(ctx: Mapping[str, Any]) -> Any:
        value = ctx.get(name)
        for key, is_field in keys:
            if type(value) is dict:
                value = value.get(key)
            else:
                if callable(value):
                    raise Fallback
                value = lookup(value, key, field=is_field)
        if callable(value):
            raise Fallback
        return value

    return read


def _ordering_constant(operator: ast.cmpop, left: Node, constant: Any) -> Node | None:
    """``x < 3``: numbers compared directly, anything else by the engine's operator."""
    apply = OPERATORS[type(operator)]
    c = constant
    if isinstance(operator, ast.Lt):
        def lt(ctx: Mapping[str, Any]) -> Any:
            a = left(ctx)
            return a < c if type(a) in _NUMBERS else apply(a, c)
        return lt
    if isinstance(operator, ast.LtE):
        def le(ctx: Mapping[str, Any]) -> Any:
            a = left(ctx)
            return a <= c if type(a) in _NUMBERS else apply(a, c)
        return le
    if isinstance(operator, ast.Gt):
        def gt(ctx: Mapping[str, Any]) -> Any:
            a = left(ctx)
            return a > c if type(a) in _NUMBERS else apply(a, c)
        return gt
    if isinstance(operator, ast.GtE):
        def ge(ctx: Mapping[str, Any]) -> Any:
            a = left(ctx)
            return a >= c if type(a) in _NUMBERS else apply(a, c)
        return ge
    if isinstance(operator, ast.Eq):
        return lambda ctx: left(ctx) == c
    if isinstance(operator, ast.NotEq):
        return lambda ctx: left(ctx) != c
    return None


def _fused(operator: ast.cmpop, name: str, key: Any, constant: Any, constant_right: bool,
           general: Node) -> Node | None:
    """``answers.overall < 3``, ``event.form == 'a'``, ``'x' in classification.negative``: the
    read of a one-key path and the comparison in one closure for the common case (a plain
    dict holding a number, a plain value, a list); any other case runs ``general``, the
    unfused closure, which decides exactly as before."""
    c = constant
    if constant_right and type(c) in _NUMBERS and isinstance(operator, ast.Lt | ast.LtE
                                                              | ast.Gt | ast.GtE):
        compare: Callable[[Any, Any], Any] = {ast.Lt: op.lt, ast.LtE: op.le, ast.Gt: op.gt,
                                              ast.GtE: op.ge}[type(operator)]
        if isinstance(operator, ast.Lt):
            def lt(ctx: Mapping[str, Any]) -> Any:
                v = ctx.get(name)
                if type(v) is dict:
                    v = v.get(key)
                    if type(v) in _NUMBERS:
                        return v < c
                return general(ctx)
            return lt
        if isinstance(operator, ast.GtE):
            def ge(ctx: Mapping[str, Any]) -> Any:
                v = ctx.get(name)
                if type(v) is dict:
                    v = v.get(key)
                    if type(v) in _NUMBERS:
                        return v >= c
                return general(ctx)
            return ge

        def ordering(ctx: Mapping[str, Any]) -> Any:
            v = ctx.get(name)
            if type(v) is dict:
                v = v.get(key)
                if type(v) in _NUMBERS:
                    return compare(v, c)
            return general(ctx)
        return ordering
    if constant_right and isinstance(operator, ast.Eq | ast.NotEq):
        equal = isinstance(operator, ast.Eq)

        def eq(ctx: Mapping[str, Any]) -> Any:
            v = ctx.get(name)
            if type(v) is dict:
                v = v.get(key)
                if not callable(v):
                    return (v == c) if equal else (v != c)
            return general(ctx)
        return eq
    if not constant_right and isinstance(operator, ast.In | ast.NotIn):
        inside = isinstance(operator, ast.In)

        def member(ctx: Mapping[str, Any]) -> Any:
            v = ctx.get(name)
            if type(v) is dict:
                v = v.get(key)
                if type(v) is list:
                    return (c in v) if inside else (c not in v)
            return general(ctx)
        return member
    return None


def _membership(is_in: bool, item: Node, container: Node) -> Node:
    """``x in xs``: a list tested directly (``in`` on a list compares with ``==`` and cannot
    fail), anything else by the engine's operator."""
    apply = OPERATORS[ast.In]

    def member(ctx: Mapping[str, Any]) -> Any:
        a, b = item(ctx), container(ctx)
        return a in b if type(b) is list else apply(a, b)

    if is_in:
        return member
    return lambda ctx: not member(ctx)


class _Compiler:
    def __init__(self, table: Mapping[str, FunctionSpec], share: int) -> None:
        self.table = table
        self.share = share

    def node(self, node: ast.AST) -> Node:
        method: Callable[[Any], Node] | None = getattr(self, f"c_{type(node).__name__}", None)
        if method is None:  # not reachable for a checked tree; keeps the fast path total
            raise TypeError(f"cannot compile {type(node).__name__}")
        return method(node)

    # --- leaves and lookups ---------------------------------------------------------------------

    def c_Constant(self, node: ast.Constant) -> Node:
        value = node.value
        return lambda ctx: value

    def c_Name(self, node: ast.Name) -> Node:
        name = node.id

        def read(ctx: Mapping[str, Any]) -> Any:
            value = ctx.get(name)
            if callable(value):
                raise Fallback
            return value

        return read

    def c_Attribute(self, node: ast.Attribute) -> Node:
        path = _read_path(node)
        if path is not None:
            return _path_read(*path)
        return self._field(self.node(node.value), node.attr, is_field=True)

    def c_Subscript(self, node: ast.Subscript) -> Node:
        path = _read_path(node)
        if path is not None:
            return _path_read(*path)
        base = self.node(node.value)
        if isinstance(node.slice, ast.Constant):
            return self._field(base, node.slice.value, is_field=False)
        index = self.node(node.slice)

        def read(ctx: Mapping[str, Any]) -> Any:
            container = base(ctx)
            return _plain(lookup(container, index(ctx), field=False))

        return read

    @staticmethod
    def _field(base: Node, key: Any, *, is_field: bool) -> Node:
        if key is None:  # lookup gives None for a None key, once the container is evaluated
            def nothing(ctx: Mapping[str, Any]) -> Any:
                base(ctx)
                return None

            return nothing

        def read(ctx: Mapping[str, Any]) -> Any:
            container = base(ctx)
            if type(container) is dict:
                value = container.get(key)
            else:
                value = lookup(container, key, field=is_field)
            if callable(value):
                raise Fallback
            return value

        return read

    def c_Slice(self, node: ast.Slice) -> Node:
        parts = [None if part is None else self.node(part)
                 for part in (node.lower, node.upper, node.step)]
        lower, upper, step = parts

        def build(ctx: Mapping[str, Any]) -> slice:
            return slice(None if lower is None else lower(ctx),
                         None if upper is None else upper(ctx),
                         None if step is None else step(ctx))

        return build

    # --- operators ------------------------------------------------------------------------------

    def c_BinOp(self, node: ast.BinOp) -> Node:
        apply = OPERATORS[type(node.op)]
        left, right = self.node(node.left), self.node(node.right)
        plain = {ast.Add: op.add, ast.Sub: op.sub, ast.Mult: op.mul}.get(type(node.op))
        if plain is None:
            return lambda ctx: apply(left(ctx), right(ctx))
        fast = plain

        def arithmetic(ctx: Mapping[str, Any]) -> Any:
            a, b = left(ctx), right(ctx)
            if type(a) in _NUMBERS and type(b) in _NUMBERS:
                result = fast(a, b)
                if type(result) is int:
                    if -MAX_INTEGER <= result <= MAX_INTEGER:
                        return result
                elif math.isfinite(result):
                    return result
            return apply(a, b)  # sequences, None, limits: the engine's operator decides

        return arithmetic

    def c_UnaryOp(self, node: ast.UnaryOp) -> Node:
        operand = self.node(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda ctx: not operand(ctx)
        apply = OPERATORS[type(node.op)]
        return lambda ctx: apply(operand(ctx))

    def c_BoolOp(self, node: ast.BoolOp) -> Node:
        values = [self.node(v) for v in node.values]
        is_and = isinstance(node.op, ast.And)
        if len(values) == 2:
            first, second = values
            if is_and:
                return lambda ctx: first(ctx) and second(ctx)
            return lambda ctx: first(ctx) or second(ctx)

        def chain(ctx: Mapping[str, Any]) -> Any:
            result: Any = False
            for value in values:
                result = value(ctx)
                if bool(result) is not is_and:
                    break
            return result

        return chain

    def c_Compare(self, node: ast.Compare) -> Node:
        right = node.comparators[0]
        if len(node.ops) == 1 and isinstance(node.ops[0], ast.In | ast.NotIn) \
                and isinstance(right, ast.List | ast.Tuple) \
                and all(isinstance(e, ast.Constant) for e in right.elts):
            # ``x in ["a", "b"]``: the literal is built once (``in`` on a list or a tuple of
            # constants compares with == and cannot fail).
            item = self.node(node.left)
            values = tuple(e.value for e in right.elts)  # type: ignore[attr-defined]
            inside = isinstance(node.ops[0], ast.In)
            general: Node = (lambda ctx: item(ctx) in values) if inside else (
                lambda ctx: item(ctx) not in values)
            path = _read_path(node.left)
            if path is None or len(path[1]) != 1:
                return general
            name, ((key, _),) = path

            def listed(ctx: Mapping[str, Any]) -> Any:
                v = ctx.get(name)
                if type(v) is dict:
                    v = v.get(key)
                    if not callable(v):
                        return (v in values) if inside else (v not in values)
                return general(ctx)

            return listed
        if len(node.ops) == 1:
            return self._compare_nodes(node.ops[0], node.left, right)
        operands = [self.node(node.left), *(self.node(c) for c in node.comparators)]
        ops = [OPERATORS[type(o)] for o in node.ops]

        def chained(ctx: Mapping[str, Any]) -> Any:
            right = operands[0](ctx)
            result: Any = True
            for apply, operand in zip(ops, operands[1:], strict=True):
                if not result:
                    break
                left, right = right, operand(ctx)
                result = apply(left, right)
            return result

        return chained

    def _compare_nodes(self, operator: ast.cmpop, left: ast.expr, right: ast.expr) -> Node:
        """One comparison, specialised where a side is a constant (``answers.overall < 3``,
        ``'x' in tags``): one closure call less, and the constant's type known."""
        general = self._general_compare(operator, left, right)
        path = _read_path(left) if isinstance(right, ast.Constant) else _read_path(right)
        if path is None or len(path[1]) != 1:
            return general
        constant = right if isinstance(right, ast.Constant) else left
        if not isinstance(constant, ast.Constant):
            return general
        return _fused(operator, path[0], path[1][0][0], constant.value,
                      constant is right, general) or general

    def _general_compare(self, operator: ast.cmpop, left: ast.expr, right: ast.expr) -> Node:
        if isinstance(right, ast.Constant) and (type(right.value) in _NUMBERS
                                                or isinstance(operator, ast.Eq | ast.NotEq)):
            special = _ordering_constant(operator, self.node(left), right.value)
            if special is not None:
                return special
        if isinstance(operator, ast.In | ast.NotIn):
            return _membership(isinstance(operator, ast.In), self.node(left), self.node(right))
        return self._compare(operator, self.node(left), self.node(right))

    @staticmethod
    def _compare(operator: ast.cmpop, left: Node, right: Node) -> Node:
        apply = OPERATORS[type(operator)]
        if isinstance(operator, ast.Eq):
            return lambda ctx: left(ctx) == right(ctx)
        if isinstance(operator, ast.NotEq):
            return lambda ctx: left(ctx) != right(ctx)
        plain = {ast.Lt: op.lt, ast.LtE: op.le, ast.Gt: op.gt, ast.GtE: op.ge}.get(type(operator))
        if plain is None:
            return lambda ctx: apply(left(ctx), right(ctx))
        fast = plain

        def ordering(ctx: Mapping[str, Any]) -> Any:
            a, b = left(ctx), right(ctx)
            if type(a) in _NUMBERS and type(b) in _NUMBERS:
                return fast(a, b)
            return apply(a, b)  # None is False; other types: the engine's operator decides

        return ordering

    def c_IfExp(self, node: ast.IfExp) -> Node:
        test, body, orelse = self.node(node.test), self.node(node.body), self.node(node.orelse)
        return lambda ctx: body(ctx) if test(ctx) else orelse(ctx)

    # --- literals -------------------------------------------------------------------------------

    def c_List(self, node: ast.List) -> Node:
        items = [self.node(e) for e in node.elts]
        return lambda ctx: literal([item(ctx) for item in items])

    def c_Tuple(self, node: ast.Tuple) -> Node:
        items = [self.node(e) for e in node.elts]
        return lambda ctx: literal(tuple([item(ctx) for item in items]))

    def c_Dict(self, node: ast.Dict) -> Node:
        pairs = [(self.node(k), self.node(v)) for k, v in zip(node.keys, node.values, strict=True)
                 if k is not None]
        return lambda ctx: literal({key(ctx): value(ctx) for key, value in pairs})

    # --- function calls -------------------------------------------------------------------------

    def c_Call(self, node: ast.Call) -> Node:
        assert isinstance(node.func, ast.Name)  # guaranteed by the static check
        func = self.table[node.func.id].func
        args = [self.node(a) for a in node.args]
        keywords = [(str(k.arg), self.node(k.value)) for k in node.keywords]
        share = self.share

        def call(ctx: Mapping[str, Any]) -> Any:
            values = [a(ctx) for a in args]
            named = {name: value(ctx) for name, value in keywords}
            charge = 0
            for value in (*values, *named.values()):
                if isinstance(value, _SIZED):
                    charge += len(value)
            if charge > share:
                raise Fallback  # the reference evaluator meters this call exactly
            return _plain(check_value(func(*values, **named)))

        return call
