"""The evaluation side of the expression language: operators, null-safe lookups, the evaluator.

:mod:`careloop.engine.expressions` compiles and checks; this module walks the checked tree with a
locked-down :class:`simpleeval.EvalWithCompoundTypes`. Failures are raised as :class:`EvalFault`
carrying the offending node; ``Expression.evaluate`` turns them into ``ExpressionError``.
"""

from __future__ import annotations

import ast
import math
import operator as op
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

import simpleeval

from careloop.engine.errors import CareloopError
from careloop.engine.functions import FunctionSpec
from careloop.engine.limits import LIMITS

MAX_INTEGER = LIMITS.expr_integer  # largest integer literal or integer result
MAX_SEQUENCE = LIMITS.expr_items  # longest text or list built by + or *
# what a built value may hold, nested items and characters counted in full: ``[[1]*5000]*5000``
# is one list of 5000 references to one list, but 25 million items once stored or sent
MAX_WEIGHT = 10 * LIMITS.expr_items
_CONTAINERS = (list, tuple, dict)


class EvalFault(Exception):
    """Raised by the evaluator (and its operators) for a coded failure; ``node`` is the innermost
    syntax node being evaluated when it happened (filled in on the way out)."""

    def __init__(self, code: str, message: str, node: ast.AST | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.node = node


def kind(value: object) -> str:
    names = {type(None): "null", bool: "bool", int: "number", float: "number", str: "text",
             list: "list", tuple: "list", dict: "object", date: "date", datetime: "date-time"}
    return names.get(type(value), type(value).__name__)


def check_value(value: Any) -> Any:
    """Refuse numbers and built sequences beyond the limits."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        raise EvalFault("expr.too-large", f"number larger than {MAX_INTEGER:.0e}")
    if isinstance(value, float) and not math.isfinite(value):
        raise EvalFault("expr.too-large", "number too large")
    if isinstance(value, complex):
        raise EvalFault("expr.runtime", "result is not a real number")
    return value


def weight(value: Any, cap: int = MAX_WEIGHT) -> int:
    """How much ``value`` holds when written out: one per item of every list, tuple and dict at
    every level plus the characters of every text, a value shared N times counted N times
    (``[[1]*5000]*5000`` weighs 25,010,000). Counting stops soon after ``cap``, and costs one
    visit per *distinct* container, so it is cheap however large the value is written out."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return 0
    memo: dict[int, int] = {}

    def visit(item: Any, depth: int) -> int:
        if isinstance(item, str):
            return len(item)
        if not isinstance(item, _CONTAINERS) or depth > 100:
            return 0 if depth <= 100 else cap + 1
        known = memo.get(id(item))
        if known is not None:
            return known
        total = len(item)
        children = (item.values() if isinstance(item, dict) else item)
        for child in children:
            if total > cap:
                break
            total += visit(child, depth + 1)
        if isinstance(item, dict):
            total += sum(len(k) for k in item if isinstance(k, str))
        memo[id(item)] = total
        return total

    return visit(value, 0)


def check_weight(value: Any, what: str) -> None:
    """Refuse a built value that holds more than :data:`MAX_WEIGHT` items and characters."""
    if weight(value) > MAX_WEIGHT:
        raise EvalFault("expr.too-large", f"{what} would build more than {MAX_WEIGHT:,} items "
                        "and characters (nested items counted in full)")


def literal(value: Any) -> Any:
    """A list, tuple or dict literal's value, refused if it holds more than :data:`MAX_WEIGHT`
    (only worth counting when it holds containers: text alone is bounded by the source)."""
    items = value.values() if isinstance(value, dict) else value
    if any(isinstance(item, _CONTAINERS) for item in items):
        check_weight(value, "the literal")
    return value


def _arithmetic(symbol: str, func: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        sized = (str, list, tuple)
        if symbol == "+" and isinstance(a, sized) and isinstance(b, sized):
            if len(a) + len(b) > MAX_SEQUENCE:
                raise EvalFault("expr.too-large", f"'+' would build more than {MAX_SEQUENCE} items")
            if not isinstance(a, str) and weight(a) + weight(b) > MAX_WEIGHT:
                check_weight([a, b], "'+'")
        if symbol == "*":
            seq, n = (a, b) if isinstance(a, sized) else (b, a)
            if isinstance(seq, sized) and isinstance(n, int) and not isinstance(n, bool):
                if n * len(seq) > MAX_SEQUENCE:
                    raise EvalFault("expr.too-large",
                                    f"'*' would build more than {MAX_SEQUENCE} items")
                if n > 0 and n * weight(seq) > MAX_WEIGHT:
                    raise EvalFault("expr.too-large", f"'*' would build more than {MAX_WEIGHT:,} "
                                    "items and characters (nested items counted in full)")
        if symbol == "%" and not isinstance(a, int | float):
            raise EvalFault("expr.runtime", f"cannot apply '%' to {kind(a)}: it needs numbers")
        if symbol == "**":
            _check_power(a, b)
        try:
            return check_value(func(a, b))
        except ZeroDivisionError:
            raise EvalFault("expr.runtime", f"division by zero in '{symbol}'") from None
        except OverflowError:
            raise EvalFault("expr.too-large", f"'{symbol}' result too large") from None
        except TypeError:
            raise EvalFault("expr.runtime",
                         f"cannot apply '{symbol}' to {kind(a)} and {kind(b)}") from None

    return apply


def _check_power(base: Any, exponent: Any) -> None:
    if (isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0
            and exponent * (abs(base).bit_length() - 1) > MAX_INTEGER.bit_length()):
        raise EvalFault("expr.too-large", f"'**' result larger than {MAX_INTEGER:.0e}")


def _ordering(symbol: str, func: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def apply(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        try:
            return bool(func(a, b))
        except TypeError:
            raise EvalFault("expr.runtime",
                         f"cannot compare {kind(a)} and {kind(b)} with '{symbol}'") from None

    return apply


def _member(item: Any, container: Any) -> bool:
    if container is None:
        return False
    try:
        return item in container
    except TypeError:
        message = f"cannot test {kind(item)} 'in' {kind(container)}"
        raise EvalFault("expr.runtime", message) from None


def _unary(symbol: str, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(a: Any) -> Any:
        if a is None:
            return None
        try:
            return check_value(func(a))
        except TypeError:
            raise EvalFault("expr.runtime", f"cannot apply unary '{symbol}' to {kind(a)}") from None

    return apply


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _arithmetic("+", op.add), ast.Sub: _arithmetic("-", op.sub),
    ast.Mult: _arithmetic("*", op.mul), ast.Div: _arithmetic("/", op.truediv),
    ast.FloorDiv: _arithmetic("//", op.floordiv), ast.Mod: _arithmetic("%", op.mod),
    ast.Pow: _arithmetic("**", op.pow),
    ast.Eq: op.eq, ast.NotEq: op.ne,
    ast.Lt: _ordering("<", op.lt), ast.LtE: _ordering("<=", op.le),
    ast.Gt: _ordering(">", op.gt), ast.GtE: _ordering(">=", op.ge),
    ast.In: _member, ast.NotIn: lambda a, b: not _member(a, b),
    ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b,
    ast.USub: _unary("-", op.neg), ast.UAdd: _unary("+", op.pos), ast.Not: op.not_,
}



class Evaluator(simpleeval.EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval's tree walker with our operators, null-safe lookups and a step budget."""

    def __init__(self, source: str, context: Mapping[str, Any],
                 table: Mapping[str, FunctionSpec], max_steps: int) -> None:
        super().__init__(operators=dict(OPERATORS), functions={}, names={})
        self.expr = source
        self.context = context
        self.table = table
        self.max_steps = max_steps
        self.steps = 0
        self.nodes = {
            ast.Constant: self._eval_constant, ast.Name: self._eval_name,
            ast.Attribute: self._eval_attribute, ast.Subscript: self._eval_subscript,
            ast.Slice: self._eval_slice, ast.Call: self._eval_call, ast.BinOp: self._eval_binop,
            ast.UnaryOp: self._eval_unaryop, ast.BoolOp: self._eval_boolop,
            ast.Compare: self._eval_compare, ast.IfExp: self._eval_ifexp,
            ast.List: self._eval_list, ast.Tuple: self._eval_tuple, ast.Dict: self._eval_dict,
        }

    def _charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > self.max_steps:
            raise EvalFault("expr.budget", f"evaluation took more than {self.max_steps} steps")

    def _eval(self, node: ast.AST) -> Any:
        try:
            self._charge(1)
            return super()._eval(node)
        except CareloopError:
            raise
        except EvalFault as fault:
            if fault.node is None:
                fault.node = node
            raise
        except simpleeval.FeatureNotAvailable as exc:
            code, message = "expr.forbidden", str(exc)
        except simpleeval.IterableTooLong as exc:
            code, message = "expr.too-large", str(exc)
        except Exception as exc:
            code, message = "expr.runtime", f"{type(exc).__name__}: {exc}"
        raise EvalFault(code, message, node) from None

    def _eval_list(self, node: ast.List) -> Any:
        return literal(super()._eval_list(node))

    def _eval_tuple(self, node: ast.Tuple) -> Any:
        return literal(super()._eval_tuple(node))

    def _eval_dict(self, node: ast.Dict) -> Any:
        return literal(super()._eval_dict(node))

    def _check_disallowed_items(self, item: Any) -> None:
        if callable(item) or isinstance(item, type):
            raise EvalFault("expr.forbidden", "functions are not values")

    @staticmethod
    def _eval_constant(node: ast.Constant) -> Any:
        return node.value

    def _eval_name(self, node: ast.Name) -> Any:
        return self.context.get(node.id)

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        return lookup(self._eval(node.value), node.attr, field=True)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        return lookup(container, self._eval(node.slice), field=False)

    def _eval_call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)  # guaranteed by the static check
        spec = self.table[node.func.id]
        args = [self._eval(a) for a in node.args]
        kwargs = {str(k.arg): self._eval(k.value) for k in node.keywords}
        self._charge(sum(len(v) for v in [*args, *kwargs.values()]
                         if isinstance(v, list | tuple | dict)))
        try:
            return check_value(spec.func(*args, **kwargs))
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise EvalFault("expr.runtime", f"{spec.name}(): {exc}") from None


def lookup(container: Any, key: Any, *, field: bool) -> Any:
    """``a.b`` / ``a[k]``: dict key, list index or text slice; missing gives ``None``."""
    if container is None or key is None:
        return None
    if isinstance(container, Mapping):
        return container.get(key)
    if isinstance(container, list | tuple | str) and not field:
        if isinstance(key, slice):
            return container[key]
        if isinstance(key, int) and not isinstance(key, bool):
            return container[key] if -len(container) <= key < len(container) else None
    what = f"field {key!r}" if field else f"[{key!r}]"
    raise EvalFault("expr.runtime", f"cannot read {what} of {kind(container)}")



def to_json_value(value: Any) -> Any:
    """A result as JSON data: dates become ISO text, tuples lists."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    return value
