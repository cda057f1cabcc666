"""The limits on author text and work (engine/limits.py), engine by engine: each refusal is a
located problem naming the limit, reached with bounded work: the Python calls made and the peak
of memory allocated are counted (not timed: a count does not move with the machine's load)."""

from __future__ import annotations

import io
import struct
import sys
import tracemalloc
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from careloop.engine.bundles import load_bundle
from careloop.engine.expression_runtime import MAX_WEIGHT, weight
from careloop.engine.expressions import ExpressionError, compile_expression
from careloop.engine.limits import LIMITS, LimitExceeded
from careloop.engine.sources import load_text
from careloop.engine.templates import BoundedSandbox

# Bounded work, counted: a refusal here costs at most ~200,000 Python calls (the template step
# budget, two calls a step) and 0.4 MB at the peak, the first of its kind in a process included.
# The unbounded work these limits prevent costs far more: the alias bomb expanded is 387 million
# values, the nested loops 100 million iterations, 'a' * 10**9 a gigabyte, 7**9999999 alone 3.5 MB.
CALLS = 1_000_000
# 8 MiB: twenty times the worst refusal measured, so another test's thread allocating in the same
# process (tracemalloc traces them all) does not fail this one; 'a' * 10**7 (10 MB) still does.
MEMORY = 8 * 1024 * 1024


class TooMuchWork(Exception):
    """More Python calls than the budget: the work is stopped there, not left to run on."""


@contextmanager
def bounded_work(calls: int = CALLS, memory: int = MEMORY) -> Iterator[None]:
    """Fails unless the block makes at most ``calls`` Python function calls (``sys.setprofile``;
    past the budget the block is interrupted by ``TooMuchWork``) and allocates at most ``memory``
    bytes above what it started with (the peak ``tracemalloc`` traced)."""
    made, over = 0, False

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal made, over
        if event == "call":
            made += 1
            if made > calls:
                over = True
                raise TooMuchWork(f"more than {calls:,} Python calls")

    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    previous = sys.getprofile()
    sys.setprofile(count)
    try:
        yield
    finally:
        sys.setprofile(previous)
        peak = tracemalloc.get_traced_memory()[1] - before
        if not tracing:
            tracemalloc.stop()
    assert not over, f"more than {calls:,} Python calls (the error was caught on the way)"
    assert peak <= memory, f"{peak:,} bytes allocated at the peak, more than {memory:,}"

BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n"
                  for p, n in zip("abcdefgh", "bcdefghi", strict=True)))


def codes(text: str, file: str = "d.yaml") -> list[tuple[str, int | None, int | None]]:
    with bounded_work():
        doc = load_text(text, file)
    return [(p.code, p.line, p.column) for p in doc.problems]


def test_yaml_alias_bomb_is_refused_before_it_is_expanded() -> None:
    assert len(BOMB) < 400
    assert codes(BOMB) == [("source.too-many-nodes", 1, 1)]


def test_many_aliases_are_refused_at_the_first_one_over() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * (LIMITS.source_aliases + 1)) + "]\n"
    [(code, line, column)] = codes(text)
    assert (code, line) == ("source.too-many-aliases", 2) and column == 5 + 4 * 100


def test_deep_nesting_is_located_where_it_goes_too_deep() -> None:
    assert codes("x: " + "[" * 10_000 + "]" * 10_000) == [("source.too-deep", 1, 4)]
    assert codes("x: " + "[1, " * 10_000) == [("source.too-deep", 1, 4)]
    assert codes("x:\n" + " [\n" * 10_000) == [("source.too-deep", 65, 2)]
    block = "".join(" " * i + f"k{i}:\n" for i in range(70)) + " " * 70 + "v: 1\n"
    assert codes(block) == [("source.too-deep", 64, 64)]
    assert codes('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "d.json")[0][0] == \
        "source.too-deep"


def test_an_alias_inside_itself_is_refused() -> None:
    assert codes("a: &x [1, *x]\n") == [("source.too-deep", 1, 4)]


def test_text_over_the_size_limit_is_not_parsed() -> None:
    assert codes("a: " + "x" * LIMITS.source_bytes) == [("source.too-large", 1, 1)]


def test_shipped_definitions_are_far_inside_the_limits() -> None:
    root = Path(__file__).resolve().parents[2] / "app_definitions"
    for path in root.rglob("*.yaml"):
        assert load_text(path.read_text("utf-8"), str(path)).ok, path


@pytest.mark.parametrize("text", [
    "[[1]*5000]*5000", "[[[1]*100]*100]*100", "['a'*9000]*20", "[[1]*5000]*10 + [[1]*5000]*10",
    "[[[1]*5000]*19, [[1]*5000]*19]", "{'a': [[1]*5000]*19, 'b': [[1]*5000]*19}",
])
def test_nested_repetition_counts_in_full(text: str) -> None:
    compile_expression("1").evaluate({})  # the function library is loaded once, not counted
    # at most 81,000 calls; weighed by walking every item, without the memo, up to 880,000
    with bounded_work(calls=300_000), pytest.raises(ExpressionError) as exc:
        compile_expression(text).evaluate({})
    assert exc.value.code == "expr.too-large" and exc.value.column is not None


def test_ordinary_lists_and_texts_still_build() -> None:
    assert compile_expression("[1, 2] * 3").evaluate({}) == [1, 2] * 3
    assert len(compile_expression("[[1]*5000]*10").evaluate({})) == 10
    assert compile_expression("'ab' * 3 + 'c'").evaluate({}) == "abababc"
    written_out = [[1] * 5000] * 5000
    with bounded_work():  # counted without walking its 25M items
        assert weight(written_out) > MAX_WEIGHT
    assert weight([[1] * 50] * 50) == 50 + 50 * 50


@pytest.mark.parametrize(("template", "limit"), [
    ("{{ (7**9999999) % 10 }}", "expr_integer"),
    ("{{ 'a' * 10**9 }}", "template_output"),
    ("{{ [1] * 10**6 }}", "template_items"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
     "template_steps"),
    ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
     "template_steps"),
    ("{{ '%0999999999d' % 1 }}", "template_output"),
    ("{{ '{:>999999999}'.format(1) }}", "template_output"),
    ("{{ 'x'|center(999999999) }}", "template_output"),
    ("{{ range(10**9)|list|length }}", "template_output"),
    ("{% for i in range(200) %}{{ 'x' * 1000 }}{% endfor %}", "template_output"),
])
def test_templates_render_within_bounds(template: str, limit: str) -> None:
    env = BoundedSandbox()
    with bounded_work(), pytest.raises(LimitExceeded) as exc:
        env.render(template, {})
    assert exc.value.problem.code == "template.too-large"
    assert f"limit: {limit} =" in exc.value.problem.message


def test_templates_people_write_still_render() -> None:
    env = BoundedSandbox()
    text = ("{{ '%.1f' % x }} {{ '{:.2f}'.format(y) }} {{ n * 2 }} {{ name ~ '您好' }}"
            "{% for i in range(3) %}{{ i }}{% endfor %}")
    assert env.render(text, {"x": 3.14159, "y": 2.5, "n": 4, "name": "王"}) == \
        "3.1 2.50 8 王您好012"
    assert "namespace" not in env.globals and "lipsum" not in env.globals


MANIFEST = "id: z\nname: {zh-CN: 甲, en: Z}\nversion: 0.1.0\nformat: 1\ndefault_locale: zh-CN\n"


def _zip(path: Path, files: dict[str, str], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_zip_expanding_far_more_than_text_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", {"app.yaml": MANIFEST,
                                     "forms/big.yaml": "x: [" + "1," * 2_000_000 + "1]"})
    assert path.stat().st_size < 10_000
    with pytest.raises(LimitExceeded) as exc:
        load_bundle(path)
    assert exc.value.problem.code == "bundle.zip-ratio"
    assert exc.value.problem.file is not None and exc.value.problem.file.endswith(
        "b.zip!forms/big.yaml")


def test_zip_whose_header_lies_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app.yaml", MANIFEST)
        archive.writestr("templates/t.yaml", "kind: template\n# " + "a" * 100_000)
    data = bytearray(buffer.getvalue())
    struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, 100)
    local = data.find(b"PK\x03\x04", data.find(b"PK\x03\x04") + 1)
    struct.pack_into("<I", data, local + 22, 100)
    path = tmp_path / "liar.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(LimitExceeded) as exc:
        load_bundle(path)
    assert exc.value.problem.code == "bundle.zip-size-mismatch"


def test_zip_with_too_many_entries_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    from careloop.engine import bundles, limits

    monkeypatch.setattr(bundles, "LIMITS", limits.replace(zip_entries=3))
    path = _zip(tmp_path / "many.zip", {"app.yaml": MANIFEST,
                                        **{f"forms/f{i}.yaml": "a: 1" for i in range(3)}})
    with pytest.raises(LimitExceeded) as exc:
        load_bundle(path)
    assert exc.value.problem.code == "bundle.zip-entries"
