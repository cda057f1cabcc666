"""The one safe expression language of every engine (rules, flows, forms, reports).

An expression is a single Python-like value expression over plain data: ``answers.overall <= 2 and
contains(answers.comment, "用药")``. :func:`compile_expression` parses and checks the text *once*
against a static whitelist of syntax (defence in depth) and compiles the kept tree into closures
(:mod:`careloop.engine.expression_compile`); :meth:`Expression.evaluate` runs them, and re-runs the
reference evaluator (a locked-down :class:`simpleeval.EvalWithCompoundTypes` subclass) only to
report an error with its code and column. Nothing but the registered function library can be
called, attributes are dictionary keys (never Python attributes), missing data reads as ``None``,
and every limit (length, depth, number size, evaluation steps) fails
with a coded :class:`ExpressionError`. See ``docs/expressions.md``.

    >>> compile_expression("answers.score >= 4").evaluate({"answers": {"score": 5}})
    True
    >>> compile_expression("patient.address.city").evaluate({"patient": {}}) is None
    True
"""

from __future__ import annotations

import ast
import inspect
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NoReturn

from careloop.engine.errors import CareloopError, Path, Problem, did_you_mean
from careloop.engine.expression_compile import Program, compile_tree
from careloop.engine.expression_runtime import (
    MAX_INTEGER,
    MAX_SEQUENCE,
    OPERATORS,
    EvalFault,
    Evaluator,
    check_value,
    to_json_value,
)
from careloop.engine.functions import CATALOGUE, FunctionSpec
from careloop.engine.limits import LIMITS
from careloop.engine.registry import loaded_registry

MAX_LENGTH = LIMITS.expr_length  # characters of expression text
MAX_DEPTH = LIMITS.expr_depth  # nesting of syntax nodes
MAX_STEPS = LIMITS.expr_steps  # node evaluations, plus one per list item a function receives

__all__ = [
    "MAX_DEPTH", "MAX_INTEGER", "MAX_LENGTH", "MAX_SEQUENCE", "MAX_STEPS", "Expression",
    "ExpressionError", "compile_expression", "function_names", "to_json_value",
]

# Attribute / key names refused statically even where they would only read a dict key.
FORBIDDEN_ATTRIBUTES = frozenset(
    {"format", "format_map", "mro", "gi_frame", "gi_code", "gi_yieldfrom", "gi_running",
     "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "f_trace", "tb_frame", "tb_next",
     "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await", "co_code", "co_consts"}
)
FORBIDDEN_CALLS = frozenset(
    {"eval", "exec", "open", "compile", "getattr", "setattr", "delattr", "type", "globals",
     "locals", "vars", "dir", "input", "help", "breakpoint", "memoryview", "object", "super",
     "classmethod", "staticmethod", "property", "exit", "quit", "print", "id", "hasattr"}
)

_OPERATOR_NODES = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_ALLOWED_NODES = (ast.Expression, ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Slice,
                  ast.Call, ast.keyword, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
                  ast.IfExp, ast.List, ast.Tuple, ast.Dict)
_SYNTAX_NAMES = {
    ast.Lambda: "a lambda", ast.NamedExpr: "assignment (:=)", ast.JoinedStr: "an f-string",
    ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
    ast.Set: "a set literal", ast.Starred: "* unpacking", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield",
}


class ExpressionError(CareloopError):
    """Raised when an expression cannot be compiled or is refused, or fails when evaluated.

    ``code`` is one of ``expr.syntax``, ``expr.forbidden``, ``expr.unknown-name``,
    ``expr.unknown-function``, ``expr.arguments`` (wrong arguments to a function),
    ``expr.too-long``, ``expr.too-deep``, ``expr.too-large``, ``expr.budget`` or ``expr.runtime``;
    ``column`` is the 1-based column of the offending part of ``expression``.
    """

    def __init__(self, code: str, message: str, expression: str, column: int | None = None,
                 hint: str | None = None) -> None:
        self.code = code
        self.message = message
        self.expression = expression
        self.column = column
        self.hint = hint
        super().__init__(f"{code}: {message}" + (f" ({hint})" if hint else ""))

    def to_problem(self, path: Path = (), *, file: str | None = None, line: int | None = None,
                   column_offset: int | None = None) -> Problem:
        """This error as a :class:`Problem`; ``column_offset`` is the file column where the
        expression text starts (so the problem points at the offending part)."""
        column = None
        if column_offset is not None and self.column is not None:
            column = column_offset + self.column - 1
        return Problem(self.code, f"{self.message} in expression `{self.expression}`", path=path,
                       file=file, line=line, column=column, hint=self.hint)


def _column(text: str, lineno: int | None, col_offset: int | None, *, in_bytes: bool) -> int | None:
    """1-based character column within ``text`` of a parser position."""
    if lineno is None or col_offset is None:
        return None
    lines = text.split("\n")
    lineno = min(max(lineno, 1), len(lines))
    line = lines[lineno - 1]
    chars = len(line.encode()[:col_offset].decode(errors="ignore")) if in_bytes else col_offset
    return sum(len(prev) + 1 for prev in lines[: lineno - 1]) + min(chars, len(line)) + 1


def _function_table() -> dict[str, FunctionSpec]:
    return dict(loaded_registry().catalogue(CATALOGUE).items())


def function_names() -> list[str]:
    """Names of every registered expression function, in registration order."""
    return list(_function_table())


@lru_cache(maxsize=256)
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func)


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled, checked expression; evaluate it any number of times (it is never re-parsed)."""

    source: str
    names: frozenset[str]
    functions: frozenset[str]
    tree: ast.Expression = field(repr=False, compare=False)
    table: Mapping[str, FunctionSpec] = field(repr=False, compare=False)
    program: Program | None = field(default=None, repr=False, compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The value of the expression with top-level names read from ``context``.

        Runs the compiled closures (:mod:`careloop.engine.expression_compile`); on any failure
        there, the reference evaluator runs and raises the coded, located error.

        Raises:
            ExpressionError: ``expr.runtime`` (e.g. ``"a" - 1``), ``expr.too-large`` or
                ``expr.budget`` — never any other exception.
        """
        program = self.program
        if program is not None and program.budget == MAX_STEPS:
            try:
                return program.run(context)
            except Exception:  # the reference evaluator decides the error
                pass
        return self.evaluate_reference(context)

    def evaluate_reference(self, context: Mapping[str, Any]) -> Any:
        """:meth:`evaluate` by the reference tree-walking evaluator, which meters every step and
        locates errors (what the compiled fast path falls back to; also its test oracle)."""
        evaluator = Evaluator(self.source, context, self.table, MAX_STEPS)
        try:
            return evaluator.eval(self.source, previously_parsed=self.tree.body)
        except EvalFault as fault:
            lead = len(self.source) - len(self.source.lstrip())
            raise _error(fault.code, fault.message, self.source, fault.node, lead=lead) from None


def _error(code: str, message: str, text: str, node: ast.AST | None = None,
           hint: str | None = None, lead: int = 0) -> ExpressionError:
    column = None
    if node is not None:
        column = _column(text[lead:], getattr(node, "lineno", None),
                         getattr(node, "col_offset", None), in_bytes=True)
        column = None if column is None else column + lead
    return ExpressionError(code, message, text, column, hint)


def _parse(text: str, lead: int) -> ast.Expression:
    body = text[lead:]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(body, mode="eval")
    except SyntaxError as exc:
        msg = exc.msg or "invalid syntax"
        if "too many nested" in msg:
            raise ExpressionError("expr.too-deep", msg, text) from None
        statement = _statement(body)
        if statement is not None:
            raise _error("expr.forbidden", f"{statement[0]} is not allowed: an expression is one "
                         "value", text, statement[1], lead=lead) from None
        column = _column(body, exc.lineno, exc.offset - 1 if exc.offset else 10**9, in_bytes=False)
        raise ExpressionError("expr.syntax", msg, text,
                              None if column is None else column + lead) from None
    except (RecursionError, MemoryError):
        raise ExpressionError("expr.too-deep", "expression nested too deeply", text) from None
    except ValueError as exc:  # e.g. NUL bytes on some Python versions
        raise ExpressionError("expr.syntax", str(exc), text) from None


def _statement(body: str) -> tuple[str, ast.stmt] | None:
    """If ``body`` is Python statements rather than one expression, what kind (for the message)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = ast.parse(body, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for stmt in module.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            return "import", stmt
        if isinstance(stmt, ast.Assign | ast.AugAssign | ast.AnnAssign):
            return "assignment", stmt
        if not isinstance(stmt, ast.Expr):
            return f"the statement '{type(stmt).__name__.lower()}'", stmt
    return ("more than one expression", module.body[1]) if len(module.body) > 1 else None


def _refused_key(key: str) -> bool:
    return key.startswith(("_", "func_")) or key in FORBIDDEN_ATTRIBUTES


def compile_expression(text: str, names: Collection[str] | None = None) -> Expression:
    """Parse and check ``text`` once; the result evaluates without re-parsing.

    Args:
        text: the expression, e.g. ``'answers.overall <= 2'``.
        names: the allowed top-level names (``None``: any name is allowed).

    Raises:
        ExpressionError: with a stable ``code`` (see the class) if the text is refused.
    """
    if not isinstance(text, str):
        raise ExpressionError("expr.syntax", "an expression must be text", repr(text))
    if len(text) > MAX_LENGTH:
        raise ExpressionError("expr.too-long", f"expression longer than {MAX_LENGTH} characters",
                              text[:MAX_LENGTH], MAX_LENGTH)
    lead = len(text) - len(text.lstrip())
    if not text.strip():
        raise ExpressionError("expr.syntax", "empty expression", text)
    tree = _parse(text, lead)
    table = _function_table()
    used_names: set[str] = set()
    used_functions: set[str] = set()
    stack: list[tuple[ast.AST, int, bool]] = [(tree.body, 1, False)]
    while stack:
        node, depth, in_sum = stack.pop()
        if isinstance(node, _OPERATOR_NODES):
            continue

        def fail(code: str, message: str, hint: str | None = None, at: ast.AST = node) -> NoReturn:
            raise _error(code, message, text, at, hint, lead)

        if depth > MAX_DEPTH:
            fail("expr.too-deep", f"expression nested deeper than {MAX_DEPTH} levels",
                 "for a long sum use sum([a, b, ...])" if in_sum else None)
        if not isinstance(node, _ALLOWED_NODES):
            fail("expr.forbidden", f"{_SYNTAX_NAMES.get(type(node), type(node).__name__)} "
                 "is not allowed")
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.Constant):
            value = node.value
            if value is not None and type(value) not in (bool, int, float, str):
                fail("expr.forbidden", f"{type(value).__name__} literals are not allowed")
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    check_value(value)
                except EvalFault as fault:
                    fail(fault.code, fault.message)
        elif isinstance(node, ast.Name):
            if _refused_key(node.id):
                fail("expr.forbidden", f"name {node.id!r} is not allowed")
            if names is not None and node.id not in names:
                fail("expr.unknown-name", f"unknown name {node.id!r}", did_you_mean(node.id, names))
            used_names.add(node.id)
        elif isinstance(node, ast.Attribute) and _refused_key(node.attr):
            fail("expr.forbidden", f"field {node.attr!r} is not allowed")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            if isinstance(node.slice.value, str) and _refused_key(node.slice.value):
                fail("expr.forbidden", f"key {node.slice.value!r} is not allowed")
        elif isinstance(node, ast.BinOp | ast.UnaryOp | ast.Compare):
            ops = node.ops if isinstance(node, ast.Compare) else [node.op]
            for operator in ops:
                if type(operator) not in OPERATORS:
                    fail("expr.forbidden", f"operator {type(operator).__name__} is not allowed")
        elif isinstance(node, ast.Dict) and None in node.keys:
            fail("expr.forbidden", "** unpacking is not allowed")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                fail("expr.forbidden", f"method calls are not allowed ('.{func.attr}(...)')",
                     f"call a function instead, e.g. {func.attr}(x)" if func.attr in table
                     else None)
            if not isinstance(func, ast.Name):
                fail("expr.forbidden", "only named functions can be called")
            if func.id in FORBIDDEN_CALLS or _refused_key(func.id):
                fail("expr.forbidden", f"calling {func.id!r} is not allowed")
            if func.id not in table:
                fail("expr.unknown-function", f"unknown function {func.id!r}",
                     did_you_mean(func.id, table))
            if any(k.arg is None for k in node.keywords):
                fail("expr.forbidden", "** unpacking is not allowed")
            try:
                _signature(table[func.id].func).bind(*node.args,
                                                     **{str(k.arg): k for k in node.keywords})
            except TypeError as exc:
                fail("expr.arguments", f"{func.id}(): {exc}", f"use {table[func.id].signature}")
            used_functions.add(func.id)
            children = [*node.args, *node.keywords]
        stack.extend((child, depth + 1, isinstance(node, ast.BinOp)) for child in children)
    return Expression(text, frozenset(used_names), frozenset(used_functions), tree, table,
                      compile_tree(tree, table, MAX_STEPS))


