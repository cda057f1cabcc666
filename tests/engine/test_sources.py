from careloop.engine.sources import load_text


def test_positions_of_values_and_keys() -> None:
    doc = load_text("kind: form\nfields:\n  - key: a\n    type: numbr\n", "f.yaml")
    assert doc.ok
    assert doc.position(("fields", 0, "type")) == (4, 11)
    assert doc.key_position(("fields", 0, "type")) == (4, 5)
    # A path below a scalar falls back to the nearest ancestor that has a position.
    assert doc.position(("fields", 0, "type", "x")) == (4, 11)


def test_yaml_12_scalars_on_yes_and_dates_stay_text() -> None:
    doc = load_text("on: form.submitted\nyes: no\nday: 2026-01-01\nflag: true\nn: 3\n", "r.yaml")
    assert doc.data == {"on": "form.submitted", "yes": "no", "day": "2026-01-01", "flag": True,
                        "n": 3}


def test_duplicate_key_is_an_error_at_the_second_key() -> None:
    doc = load_text("key: a\ntitle: x\nkey: b\n", "d.yaml")
    [problem] = doc.problems
    assert problem.code == "source.duplicate-key"
    assert (problem.line, problem.column) == (3, 1)
    assert "line 1, column 1" in problem.message
    assert doc.data == {"key": "a", "title": "x"} or doc.data is None


def test_yaml_syntax_error_has_line_and_column() -> None:
    doc = load_text("a: [1, 2\nb: 3\n", "s.yaml")
    [problem] = doc.problems
    assert problem.code == "source.syntax"
    assert problem.line == 2
    assert problem.render().startswith("s.yaml:2:")


def test_json_syntax_error_and_json_positions() -> None:
    bad = load_text('{"a": 1,\n "b": }', "x.json")
    assert [(p.code, p.line, p.column) for p in bad.problems] == [("source.syntax", 2, 7)]
    good = load_text('{"kind": "template",\n "key": "k"}', "x.json")
    assert good.ok and good.position(("key",)) == (2, 9)


def test_merge_keys_and_empty_files_are_refused() -> None:
    merged = load_text("base: &b {x: 1}\nother:\n  <<: *b\n", "m.yaml")
    assert [p.code for p in merged.problems] == ["source.merge-key"]
    empty = load_text("", "e.yaml")
    assert [p.code for p in empty.problems] == ["source.empty"]


def test_expression_position_accounts_for_quotes() -> None:
    doc = load_text('when: "answers.x > 1"\nplain: answers.y\n', "e.yaml")
    # column 9 of the expression text is the 'x' in answers.x
    assert doc.expression_position(("when",), 9) == (1, 16)
    assert doc.expression_position(("plain",), 9) == (2, 16)
