"""Each bundle's form test cases (app_definitions/<app>/tests/forms/*.yaml): inputs → expected
validity, errors (field paths), scores, bands and discarded answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from careloop.forms.logic import evaluate
from careloop.forms.testing import form_from_yaml

APPS = Path(__file__).resolve().parents[2] / "app_definitions"


def _cases() -> list[Any]:
    out = []
    for path in sorted(APPS.glob("*/tests/forms/*.yaml")):
        data = yaml.safe_load(path.read_text("utf-8"))
        form = path.parents[2] / "forms" / f"{data['form']}.yaml"
        for case in data["cases"]:
            out.append(pytest.param(form, case, id=f"{path.parents[2].name}/{data['form']}: "
                                                    f"{case['name']}"))
    return out


CASES = _cases()


def test_every_bundle_form_has_cases() -> None:
    forms = {p.stem for p in APPS.glob("*/forms/*.yaml")}
    tested = {param.values[0].stem for param in CASES}
    assert forms == tested


@pytest.mark.parametrize(("form", "case"), CASES)
def test_bundle_case(form: Path, case: dict[str, Any]) -> None:
    spec = form_from_yaml(form.read_text("utf-8"), str(form))
    result = evaluate(spec, case["answers"], locale="zh-CN")
    expect = case["expect"]
    assert result.valid == expect["valid"], result.errors
    if "errors" in expect:
        assert [e["path"] for e in result.errors] == expect["errors"]
    for key, value in expect.get("scores", {}).items():
        assert result.scores[key] == pytest.approx(value), key
    for key, value in expect.get("bands", {}).items():
        assert result.bands[key] == value, key
    for key in expect.get("absent", []):
        assert key not in result.answers
