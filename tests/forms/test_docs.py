"""Docs coverage: every field type, score method and form error code is in docs/forms.md."""

from __future__ import annotations

import re
from pathlib import Path

from careloop.engine.registry import loaded_registry

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs/forms.md").read_text("utf-8")


def test_every_field_type_and_score_method_is_documented() -> None:
    registry = loaded_registry()
    for sort in ("field_type", "score_method"):
        missing = [n for n in registry.catalogue(sort).names() if f"`{n}`" not in DOC]
        assert missing == [], sort


def test_every_author_error_code_is_documented() -> None:
    source = "".join(p.read_text("utf-8") for p in (ROOT / "forms").glob("*.py"))
    source += (ROOT / "forms/schema/form.json").read_text("utf-8")
    codes = set(re.findall(r'"(form\.[a-z]+(?:-[a-z]+)+)"', source))
    assert codes and [c for c in sorted(codes) if f"`{c}`" not in DOC] == []


def test_every_message_is_translated() -> None:
    import json

    zh = json.loads((ROOT / "forms/data/i18n/zh-CN.json").read_text("utf-8"))
    en = json.loads((ROOT / "forms/data/i18n/en.json").read_text("utf-8"))
    assert set(zh) == set(en) and all(k.startswith("forms.") for k in zh)
