"""The definition corpus: ``valid/**`` compiles clean; each ``invalid/**/<case>`` gives exactly the
CLI text in ``<case>.errors.txt`` (set CARELOOP_UPDATE_GOLDEN=1 to rewrite them after a wording
change, then read the diff)."""

import os
import re
from pathlib import Path

import pytest

from careloop.engine.errors import summary_line
from careloop.engine.validate import validate_paths

from .conftest import without_extensions

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "definitions"
SUFFIXES = (".yaml", ".yml", ".json")


def cases(kind: str) -> list[object]:
    return [pytest.param(p, id=p.relative_to(CORPUS / kind).as_posix())
            for p in sorted((CORPUS / kind).rglob("*")) if p.suffix in SUFFIXES]


@pytest.mark.parametrize("path", cases("valid"))
def test_valid_definitions_compile_clean(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    report = validate_paths([path.relative_to(ROOT)])
    assert report.problems == []


@pytest.mark.parametrize("path", cases("invalid"))
def test_invalid_definitions_give_their_exact_errors(path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    report = validate_paths([path.relative_to(ROOT)])
    text = "\n".join([*(p.render() for p in report.problems),
                      summary_line(report.problems, report.files)]) + "\n"
    text = without_extensions(text)  # the corpus records the core's own lists of names
    expected = path.with_suffix(".errors.txt")
    if os.environ.get("CARELOOP_UPDATE_GOLDEN") == "1":
        expected.write_text(text, "utf-8")
    assert report.errors, "an invalid case must have errors"
    assert _comparable(text) == _comparable(expected.read_text("utf-8"))


def _comparable(text: str) -> str:
    """A list of allowed values cut at twelve (``one of 'a', … 'l' …``) is compared by its code,
    place and suggestion: an installed extension's names sort into the first twelve."""
    return re.sub(r"expected one of [^\n]*? … \(", "expected one of … (", text)
