"""``careloop expr``: check and evaluate expressions from the command line.

    $ careloop expr check 'answers.overall <= 2' --names answers
    ok
    names: answers
    $ careloop expr eval 'days_between("2026-01-01", "2026-01-31")'
    30

Exit codes: 0 success, 1 the expression is refused or fails, 2 usage error (bad ``--context``).
"""

from __future__ import annotations

import json
import unicodedata
from datetime import datetime
from typing import Any

import click

from careloop.engine.clock import frozen_now
from careloop.engine.expressions import (
    ExpressionError,
    compile_expression,
    to_json_value,
)
from careloop.engine.functions import CATALOGUE
from careloop.engine.registry import loaded_registry


def _width(text: str) -> int:
    """Terminal columns taken by ``text`` (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def render_error(error: ExpressionError) -> str:
    """The expression, a caret under the offending column, and ``code: message (hint)``.

    >>> from careloop.engine.expressions import compile_expression
    >>> try:
    ...     compile_expression("1 + foo(2)")
    ... except ExpressionError as exc:
    ...     print(render_error(exc))
    1 + foo(2)
        ^
    expr.unknown-function: unknown function 'foo'
    """
    lines = [error.expression]
    if error.column is not None and "\n" not in error.expression:
        before = error.expression[: error.column - 1]
        lines.append(" " * _width(before) + "^")
    lines.append(f"{error.code}: {error.message}" + (f" ({error.hint})" if error.hint else ""))
    return "\n".join(lines)


def _parse_names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


@click.group("expr")
def expr() -> None:
    """Check and evaluate expressions (see docs/expressions.md)."""


@expr.command("check")
@click.argument("expression")
@click.option("--names", help="Comma-separated allowed top-level names, e.g. answers,patient.")
def check_command(expression: str, names: str | None) -> None:
    """Compile EXPRESSION; print ``ok`` and the names it uses, or the error."""
    try:
        compiled = compile_expression(expression, _parse_names(names))
    except ExpressionError as exc:
        click.echo(render_error(exc), err=True)
        raise SystemExit(1) from None
    click.echo("ok")
    click.echo("names: " + (", ".join(sorted(compiled.names)) or "(none)"))
    if compiled.functions:
        click.echo("functions: " + ", ".join(sorted(compiled.functions)))


def _context(value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--context") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--context")
    return data


def _now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date-time: {value!r}", param_hint="--now") from None


@expr.command("eval")
@click.argument("expression")
@click.option("--context", "context_json", help='Names as a JSON object, e.g. {"answers": {}}.')
@click.option("--now", "now_text", help="Pretend it is this ISO date-time (naive: hospital time).")
def eval_command(expression: str, context_json: str | None, now_text: str | None) -> None:
    """Evaluate EXPRESSION and print its value as JSON."""
    context = _context(context_json)
    at = _now(now_text)
    try:
        compiled = compile_expression(expression)
        if at is None:
            value = compiled.evaluate(context)
        else:
            with frozen_now(at):
                value = compiled.evaluate(context)
    except ExpressionError as exc:
        click.echo(render_error(exc), err=True)
        raise SystemExit(1) from None
    click.echo(json.dumps(to_json_value(value), ensure_ascii=False))


@expr.command("functions")
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True)
def functions_command(lang: str) -> None:
    """List every expression function with its signature and description."""
    for _, spec in loaded_registry().catalogue(CATALOGUE).items():
        click.echo(f"{spec.signature:32} {spec.doc_zh if lang == 'zh' else spec.doc_en}")
