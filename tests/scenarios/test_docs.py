"""docs/scenarios.md documents every step type, expectation and error code, and its example is
the shipped scenario, byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

from careloop.engine.registry import loaded_registry

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "scenarios.md").read_text("utf-8")


def test_every_step_type_and_expectation_is_documented() -> None:
    registry = loaded_registry()
    steps, expectations = (registry.catalogue(sort).names()
                           for sort in ("scenario_step", "scenario_expectation"))
    assert len(steps) == 10 and len(expectations) == 11
    for name in steps:
        assert f"### `{name}`" in DOC, name
    for name in expectations:
        assert f"| `{name}` |" in DOC, name


def test_every_error_code_is_documented() -> None:
    folder = ROOT / "web" / "scenarios"
    codes = set()
    for path in [*folder.glob("*.py"), *folder.glob("schema/*.json")]:
        codes |= set(re.findall(r'"(scenario\.[a-z-]+)"', path.read_text("utf-8")))
    assert len(codes) > 10  # the scan itself works
    assert sorted(c for c in codes if f"| `{c}` |" not in DOC) == []


def test_the_example_is_the_shipped_scenario() -> None:
    shipped = (ROOT / "app_definitions" / "discharge" / "scenarios"
               / "discharge_day3_answered.yaml").read_text("utf-8")
    assert f"```yaml\n{shipped}```" in DOC
