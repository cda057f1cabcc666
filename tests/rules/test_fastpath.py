"""The compiled fast path gives exactly what the engine's evaluator gives (or the same error)."""

from __future__ import annotations

from typing import Any

import pytest

from careloop.engine.expressions import ExpressionError, compile_expression
from careloop.rules.fastpath import fast, fast_ruleset

EXPRESSIONS = [
    "answers.overall < 3", "answers.overall >= 4", "answers['overall'] <= 2.5",
    "'medication_guidance' in classification.negative", "event.form in ['a', 'b']",
    "event.form not in ('a',)", "answers.overall < 3 and answers.nps > 6",
    "answers.overall < 3 or patient.age >= 70", "not answers.overall",
    "answers.overall + 1 > 3", "-answers.overall < -2", "patient != None and patient.age > 1",
    "answers.overall if answers.overall else 0", "[answers.overall, 1]",
    "answers.overall == 2", "answers.overall is None", "1 < answers.overall < 4",
    "number(answers.q9) > 0", "patient.tags",
]
CONTEXTS: list[dict[str, Any]] = [
    {}, {"answers": {"overall": 2, "nps": 9}, "event": {"form": "a"},
         "classification": {"negative": ["medication_guidance"]}, "patient": {"age": 70}},
    {"answers": {"overall": None}, "patient": None, "classification": {"negative": []}},
    {"answers": {"overall": True}, "event": {"form": "c"}, "patient": {"age": "old"}},
    {"answers": {"overall": "2", "q9": "1"}, "patient": {"tags": ["x"]}},
    {"answers": [1, 2], "event": "text"},
]


def _outcome(fn: Any, ctx: dict[str, Any]) -> Any:
    try:
        return ("value", fn(ctx))
    except ExpressionError as exc:
        return ("error", exc.code, exc.column)


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_fast_equals_the_engine(text: str) -> None:
    expression = compile_expression(text)
    compiled = fast(expression)
    for ctx in CONTEXTS:
        assert _outcome(compiled, ctx) == _outcome(expression.evaluate, ctx), ctx


def test_a_whole_rule_set_decides_like_its_rules() -> None:
    c = compile_expression
    rules = [(c("answers.overall < 3"), False), (c("answers.overall < 2"), True),
             (c("answers.overall < 5"), False)]
    matcher = fast_ruleset(c("event.form == 'a'"), rules, first=False)
    assert matcher is not None
    assert matcher({"event": {"form": "b"}, "answers": {"overall": 1}}) is None
    assert matcher({"event": {"form": "a"}, "answers": {"overall": 1}}) == [0, 1]
    assert matcher({"event": {"form": "a"}, "answers": {"overall": 4}}) == [2]
    first = fast_ruleset(None, rules, first=True)
    assert first is not None and first({"answers": {"overall": 1}}) == [0]
    assert fast_ruleset(None, [(c("len(answers) > 1"), False)], first=False) is None


def test_reads_are_hoisted_once_and_a_failing_read_raises_for_the_fallback() -> None:
    c = compile_expression
    rules = [(c("answers.overall == 2"), True), (c("answers.overall.x == 1"), False),
             (c("answers.overall == 5 or 'a' in tags"), False)]
    matcher = fast_ruleset(c("event.form in ['a']"), rules, first=False)
    assert matcher is not None
    ctx: dict[str, Any] = {"event": {"form": "a"}, "answers": {"overall": {"x": 1}}, "tags": []}
    assert matcher(ctx) == [1]
    assert matcher({"event": {"form": "a"}, "answers": {}, "tags": ["a"]}) == [2]
    # ``answers.overall.x`` of a number: the engine's evaluator raises expr.runtime for rule 1,
    # but rule 0 stops first; the fast matcher raises, so RuleSetSpec.match re-runs slowly.
    with pytest.raises(Exception):  # noqa: B017 - any exception means "fall back"
        matcher({"event": {"form": "a"}, "answers": {"overall": 2}, "tags": []})
    assert rules[0][0].evaluate({"answers": {"overall": 2}}) is True
    with pytest.raises(ExpressionError):
        rules[1][0].evaluate({"answers": {"overall": 2}})
    from careloop.rules.spec import RuleSetSpec, RuleSpec

    specs = tuple(RuleSpec(f"r{i}", {}, when, 100, stop, (), (), fast(when))
                  for i, (when, stop) in enumerate(rules))
    ruleset = RuleSetSpec("s", {}, frozenset({"e"}), c("event.form in ['a']"), "all", specs, None,
                          (), matcher=matcher)
    found = ruleset.match({"event": {"form": "a"}, "answers": {"overall": 2}, "tags": []})
    assert [m.rule.key for m in found] == ["r0"]  # the slow path stops at r0, as the engine does
