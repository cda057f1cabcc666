"""docs/flows.md documents every registered step type, channel adapter, event type and code."""

from __future__ import annotations

import re
from pathlib import Path

from careloop.flows.ingest import EVENT_TYPES

from ..conftest import core_registry

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "flows.md").read_text("utf-8")


def test_every_step_type_and_adapter_is_documented() -> None:
    registry = core_registry()  # an extension documents its own types
    for name in registry.catalogue("step_type").names():
        assert f"### `{name}`" in DOC, name
    for name in registry.catalogue("channel_adapter").names():
        assert f"| `{name}` |" in DOC, name
    for name in EVENT_TYPES:
        assert f"`{name}`" in DOC, name


def test_every_error_code_is_documented() -> None:
    codes: set[str] = set()
    for path in (ROOT / "flows").glob("*.py"):
        codes |= set(re.findall(r'"((?:flow|calendar)\.[a-z-]+)"', path.read_text("utf-8")))
    for path in (ROOT / "flows" / "schema").glob("*.json"):
        codes |= set(re.findall(r'"x-error-code": "([a-z.-]+)"', path.read_text("utf-8")))
    assert len(codes) > 15  # the scan itself works
    missing = sorted(c for c in codes if f"`{c}`" not in DOC)
    assert missing == []
