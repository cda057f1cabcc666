"""``engine/`` names no package above it: what forms, flows, rules, reports and web add comes
through the plugin hooks (``engine/hookspecs.py``), never from a list in the engine."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UPPER = re.compile(r"\bcareloop\.(forms|flows|rules|reports|web)\b")


def _names_upper(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        found += [f"{where}:{node.lineno}: {hit[0]}"
                  for hit in map(UPPER.search, names) if hit]
    return found


def test_no_engine_module_imports_or_names_an_upper_package() -> None:
    files = sorted((ROOT / "engine").rglob("*.py"))
    assert len(files) > 30  # the scan sees the engine (its migrations included)
    offenders = [hit for path in files
                 for hit in _names_upper(path.read_text("utf-8"), str(path.relative_to(ROOT)))]
    assert offenders == []


def test_the_scan_catches_an_import_a_from_import_and_a_string() -> None:
    source = ('import careloop.forms.fields\nfrom careloop.rules import actions\n'
              'MODULES = ("careloop.web.models", "careloop.engine.domain")\n')
    assert [hit.split(": ")[1] for hit in _names_upper(source, "probe.py")] == [
        "careloop.forms", "careloop.rules", "careloop.web"]
