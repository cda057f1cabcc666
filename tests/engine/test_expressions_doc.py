"""Every ```expr example in docs/expressions.md runs, and every registered function has one."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from careloop.engine.clock import frozen_now
from careloop.engine.expressions import (
    ExpressionError,
    compile_expression,
    function_names,
    to_json_value,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "expressions.md"
BLOCK = re.compile(r"^```expr\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Example:
    line: int
    expression: str
    expected: str
    context: dict[str, Any]
    now: datetime | None


def _examples() -> list[Example]:
    text = DOC.read_text(encoding="utf-8")
    examples = []
    for match in BLOCK.finditer(text):
        context: dict[str, Any] = {}
        now = None
        body: list[str] = []
        expected = None
        for raw in match.group(1).splitlines():
            if raw.startswith("context:"):
                context = json.loads(raw.removeprefix("context:"))
            elif raw.startswith("now:"):
                now = datetime.fromisoformat(raw.removeprefix("now:").strip())
            elif raw.startswith("=>"):
                expected = raw.removeprefix("=>").strip()
            else:
                body.append(raw)
        line = text.count("\n", 0, match.start()) + 1
        assert expected is not None, f"docs/expressions.md:{line}: example without '=>'"
        examples.append(Example(line, "\n".join(body).strip(), expected, context, now))
    return examples


EXAMPLES = _examples()


def _run(example: Example) -> Any:
    compiled = compile_expression(example.expression)
    if example.now is None:
        return compiled.evaluate(example.context)
    with frozen_now(example.now):
        return compiled.evaluate(example.context)


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 30


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"line{e.line}")
def test_doc_example(example: Example) -> None:
    if example.expected.startswith("error "):
        with pytest.raises(ExpressionError) as exc:
            _run(example)
        assert exc.value.code == example.expected.removeprefix("error ").strip()
        return
    actual = json.dumps(to_json_value(_run(example)), ensure_ascii=False, sort_keys=True)
    expected = json.dumps(json.loads(example.expected), ensure_ascii=False, sort_keys=True)
    assert actual == expected, f"docs/expressions.md:{example.line}: {example.expression}"


def test_every_registered_function_has_an_example() -> None:
    called: set[str] = set()
    for example in EXAMPLES:
        for node in ast.walk(ast.parse(example.expression, mode="eval")):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.add(node.func.id)
    missing = sorted(set(function_names()) - called)
    assert not missing, f"functions without an example in docs/expressions.md: {missing}"


def test_every_limit_in_the_doc_matches_the_code() -> None:
    from careloop.engine import expressions

    text = DOC.read_text(encoding="utf-8")
    assert f"{expressions.MAX_LENGTH:,} characters" in text
    assert f"{expressions.MAX_DEPTH} levels" in text
    assert f"{expressions.MAX_STEPS:,} steps" in text
    assert f"{expressions.MAX_SEQUENCE:,} characters / items" in text
    assert expressions.MAX_INTEGER == 10**18 and "10¹⁸" in text
