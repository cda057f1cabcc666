"""Text classification: the bundled dictionary against a data-driven list of comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from careloop.engine.check import check_documents
from careloop.engine.sources import load_file
from careloop.rules.classify import DictionarySpec

APP = Path(__file__).resolve().parents[2] / "app_definitions" / "satisfaction"
CASES = json.loads((APP / "tests" / "rules" / "feedback_categories.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def dictionary() -> DictionarySpec:
    result = check_documents([load_file(APP / "rules" / "feedback_categories.yaml")])
    assert result.problems == []
    spec: DictionarySpec = result.specs[("dictionary", "feedback_categories")]
    return spec


@pytest.mark.parametrize("case", CASES, ids=[c["text"] for c in CASES])
def test_comments_map_to_categories(dictionary: DictionarySpec, case: dict[str, object]) -> None:
    matches = dictionary.classify(case["text"])
    assert sorted(m.category for m in matches) == sorted(case["categories"])  # type: ignore[arg-type]
    assert sorted(m.category for m in matches if m.negative) == sorted(case["negative"])  # type: ignore[arg-type]


def test_synonyms_record_the_word_and_its_keyword(dictionary: DictionarySpec) -> None:
    [match] = dictionary.classify("护士的服药指导不清楚")
    assert match.words[0] == {"word": "服药指导", "term": "用药指导", "negated": True}


def test_empty_or_non_text_gives_nothing(dictionary: DictionarySpec) -> None:
    assert dictionary.classify("") == [] and dictionary.classify(None) == []
