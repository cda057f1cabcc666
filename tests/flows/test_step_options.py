"""Each step is checked against its own type's options schema (flows/step_types.py): an option
another type owns is an error located at that option and naming the step; a wait takes exactly
one of its modes; a step type's edges decide reachability."""

from __future__ import annotations

from careloop.engine.check import check_documents
from careloop.engine.sources import load_text

HEAD = "kind: flow\nkey: opts\ntitle: {zh-CN: 选项, en: Options}\ntrigger: {manual: true}\n"


def _problems(steps: str) -> list[str]:
    result = check_documents([load_text(HEAD + steps, "opts.yaml")])
    return [f"{p.location()} {p.code} at {p.json_path}: {p.message}" for p in result.problems]


def test_a_wait_carrying_other_types_options_fails_at_each_option() -> None:
    found = _problems("steps:\n"
                      "  - key: pause\n"
                      "    type: wait\n"
                      "    duration: 1d\n"
                      "    url: https://his.example.org\n"
                      "    approvers: [{role: nurse}]\n"
                      "    branches: [done]\n"
                      "  - {key: done, type: end}\n")
    assert found == [
        "opts.yaml:9:5 flow.unknown-option at $.steps[0].url: step 'pause' of type wait has no "
        "option 'url'",
        "opts.yaml:10:5 flow.unknown-option at $.steps[0].approvers: step 'pause' of type wait "
        "has no option 'approvers'",
        "opts.yaml:11:5 flow.unknown-option at $.steps[0].branches: step 'pause' of type wait "
        "has no option 'branches'"]


def test_a_wait_takes_exactly_one_mode_and_values_are_checked_by_its_schema() -> None:
    two = _problems("steps:\n  - {key: pause, type: wait, duration: 1d, event: a.b}\n"
                    "  - {key: done, type: end}\n")
    assert [p.split(" ", 1)[1] for p in two] == [
        "flow.bad-option at $.steps[0]: step 'pause' of type wait takes exactly one of "
        "'duration', 'until', 'event'"]
    bad = _problems("steps:\n  - {key: pause, type: wait, duration: soon}\n"
                    "  - {key: done, type: end}\n")
    assert [p.split(" ", 1)[1].split(":")[0] for p in bad] == [
        "flow.bad-duration at $.steps[0].duration"]


def test_an_end_step_has_no_next_and_a_decision_no_url() -> None:
    found = _problems("steps:\n  - {key: done, type: end, next: done}\n")
    assert [p.split(" ", 2)[1] for p in found] == ["flow.unknown-option"]
    found = _problems("steps:\n  - {key: d, type: decision, if: 'context.x == 1', then: z,"
                      " url: x}\n  - {key: z, type: end}\n")
    assert [p.split(" ", 2)[1] for p in found] == ["flow.unknown-option"]
