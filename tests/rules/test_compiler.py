"""Checking rule sets: located problems beyond the corpus in tests/definitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from careloop.engine.check import check_documents
from careloop.engine.cli import cli
from careloop.engine.sources import load_text
from careloop.rules.spec import RuleSetSpec

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


def test_a_condition_naming_a_field_the_form_lacks_fails_validate_with_its_place(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(cli, ["validate", "tests/rules/data/unknown_field"])
    assert result.exit_code != 0
    assert result.output == (DATA / "unknown_field.errors.txt").read_text("utf-8")


RULESET = """\
kind: ruleset
key: r
title: {zh-CN: 规则, en: Rules}
on: [form.submitted]
hit_policy: %s
rules:
  - key: normal
    when: "answers.overall < 4"
    then: [{do: tag, tag: normal}]
  - key: urgent
    priority: 500
    when: "answers.overall < 2"
    stop: %s
    then: [{do: tag, tag: urgent}]
  - key: always
    priority: 0
    when: "True"
    then: [{do: tag, tag: seen}]
"""


@pytest.mark.parametrize(("policy", "stop", "overall", "expected"), [
    ("all", "false", 1, ["urgent", "normal", "always"]),
    ("all", "true", 1, ["urgent"]),
    ("all", "false", 3, ["normal", "always"]),
    ("first", "false", 3, ["normal"]),
    ("first", "false", 5, ["always"]),
])
def test_priority_hit_policy_and_stop(policy: str, stop: str, overall: int,
                                      expected: list[str]) -> None:
    result = check_documents([load_text(RULESET % (policy, stop), "r.yaml")])
    assert result.ok, [p.render() for p in result.problems]
    spec: RuleSetSpec = result.specs[("ruleset", "r")]
    assert [m.rule.key for m in spec.match({"answers": {"overall": overall}})] == expected


def test_the_trace_records_the_values_a_condition_saw() -> None:
    spec = check_documents([load_text(RULESET % ("all", "false"), "r.yaml")]).specs[
        ("ruleset", "r")]
    ctx = {"answers": {"overall": 1}}
    first = spec.match(ctx)[0]
    assert first.values_in(ctx) == {"answers.overall": 1}


def test_a_message_must_give_every_template_variable() -> None:
    template = ("kind: template\nkey: hello\ntitle: {zh-CN: 问候, en: Hello}\nchannels: [sms]\n"
                "variables: [name, link]\nbody: {zh-CN: '{{ name }} {{ link }}'}\n")
    ruleset = ("kind: ruleset\nkey: r\ntitle: {zh-CN: 规则, en: Rules}\non: [form.submitted]\n"
               "rules:\n  - key: a\n    when: 'True'\n    then:\n"
               "      - {do: notify, template: hello, channel: sms, values: {name: x}}\n")
    result = check_documents([load_text(template, "t.yaml"), load_text(ruleset, "r.yaml")])
    assert [(p.code, p.line, p.message) for p in result.errors] == [
        ("rules.missing-template-values", 9, "template 'hello' needs values for ['link']")]
