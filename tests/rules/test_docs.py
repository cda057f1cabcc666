"""docs/rules.md covers every registered action, every rule kind and every error code."""

from __future__ import annotations

import re
from pathlib import Path

from careloop.engine.registry import loaded_registry

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "rules.md").read_text("utf-8")


def test_every_action_is_documented() -> None:
    missing = [n for n in loaded_registry().catalogue("action").names() if f"`{n}`" not in DOC]
    assert missing == []


def test_every_kind_and_code_is_documented() -> None:
    codes = set()
    for path in (ROOT / "rules").rglob("*.py"):
        codes.update(re.findall(r'"(rules\.[a-z][a-z0-9-]*)"', path.read_text("utf-8")))
    assert len(codes) > 10
    missing = sorted(c for c in codes | {"ruleset", "decision_table", "dictionary"}
                     if f"`{c}`" not in DOC)
    assert missing == []
