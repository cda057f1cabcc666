from careloop.engine.check import check_documents, content_hash
from careloop.engine.sources import load_text

TEMPLATE = """\
kind: template
key: demo
title: {zh-CN: 演示, en: Demo}
channels: [sms]
variables: [name]
body:
  zh-CN: "{{ name }}您好"
  en: "Hello {{ name }}"
"""


def check(*texts: str) -> list[tuple[str, str, int | None, int | None]]:
    docs = [load_text(t, f"d{i}.yaml") for i, t in enumerate(texts)]
    return [(p.code, p.json_path, p.line, p.column) for p in check_documents(docs).problems]


def test_valid_template_compiles_to_a_frozen_spec() -> None:
    result = check_documents([load_text(TEMPLATE, "t.yaml")])
    assert result.ok
    spec = result.specs[("template", "demo")]
    assert spec.render("zh-CN", {"name": "张三"}) == (None, "张三您好")
    assert spec.render("fr", {"name": "Li"}) == (None, "张三您好".replace("张三", "Li"))


def test_unknown_key_points_at_the_key_with_a_hint() -> None:
    text = TEMPLATE.replace("channels:", "chanels:")
    result = check_documents([load_text(text, "t.yaml")])
    [problem] = result.problems
    assert (problem.code, problem.line, problem.column) == ("schema.unknown-key", 4, 1)
    assert problem.hint == "did you mean 'channels'?"


def test_registry_enum_and_custom_code() -> None:
    problems = check(TEMPLATE.replace("[sms]", "[sms, wechatt]"))
    assert problems == [("template.unknown-channel", "$.channels[1]", 4, 17)]


def test_all_errors_are_collected_in_one_pass() -> None:
    broken = TEMPLATE.replace("key: demo", "key: Demo").replace("en: Demo}", "}")
    problems = check(broken, "kind: nope\nkey: x\n", "- a list\n")
    codes = sorted(code for code, *_ in problems)
    assert codes == ["definition.not-a-mapping", "definition.unknown-kind", "schema.missing-key",
                     "schema.pattern"]


def test_meaning_check_undeclared_template_variable() -> None:
    problems = check(TEMPLATE.replace('"Hello {{ name }}"', '"Hello {{ nmae }}"'))
    assert problems == [("template.undeclared-variable", "$.body.en", 8, 7)]


def test_duplicate_definition_keys_across_files() -> None:
    problems = check(TEMPLATE, TEMPLATE)
    assert problems == [("definition.duplicate-key", "$.key", 2, 6)]


def test_content_hash_ignores_formatting_but_not_meaning() -> None:
    a = load_text(TEMPLATE, "a.yaml").data
    b = load_text(TEMPLATE.replace("channels: [sms]", "channels:\n  - sms  # comment"),
                  "b.yaml").data
    c = load_text(TEMPLATE.replace("您好", "你好"), "c.yaml").data
    assert content_hash(a) == content_hash(b) != content_hash(c)
