"""Docs coverage: every error code the code base can emit is listed in docs/errors.md (or in the
engine's own reference doc)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "forms", "flows", "rules", "reports", "web")
CODE = re.compile(r"""["']((?:source|schema|definition|bundle|template|expr|ref|form|flow|"""
                  r"""calendar|rules|ruleset|decision|dictionary|dataset|chart|dashboard|"""
                  r"""alert|report|scenario)\.[a-z][a-z0-9-]*)["']""")
# Strings of the same shape that are not problem codes (audit actions, event types).
FILE_SUFFIXES = {"html", "json", "yaml", "yml", "zip", "py", "js", "css", "txt", "csv", "xlsx",
                 "png", "svg", "pdf"}  # "dashboard.html" is a template name, not a code
NOT_CODES = {"bundle.import", "bundle.zip", "form.submitted", "report.export", "flow.started"}


def emitted_codes() -> set[str]:
    codes: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            codes.update(CODE.findall(path.read_text("utf-8")))
        for path in (ROOT / package).rglob("schema/*.json"):
            codes.update(re.findall(r'"x-error-code":\s*"([^"]+)"', path.read_text("utf-8")))
    return {c for c in codes - NOT_CODES if c.rsplit(".", 1)[1] not in FILE_SUFFIXES}


def documented_text() -> str:
    return "\n".join(p.read_text("utf-8") for p in (ROOT / "docs").glob("*.md"))


def test_every_error_code_is_documented() -> None:
    text = documented_text()
    missing = sorted(c for c in emitted_codes() if f"`{c}`" not in text)
    assert missing == [], f"undocumented error codes: {json.dumps(missing)}"


def test_the_scan_finds_known_codes() -> None:
    assert {"source.duplicate-key", "expr.forbidden", "bundle.bad-version"} <= emitted_codes()
