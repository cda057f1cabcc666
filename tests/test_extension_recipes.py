"""The extension recipes of docs/architecture.md are what the example package does: each
``### Adding …`` recipe names files of ``tests/plugins/careloop_example/`` that exist, its example
modules are wired through the package's entry points, and no core file names the example package
(the newcomer's count of core files touched is 0 for every recipe)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "tests/plugins/careloop_example/"
CORE = ("engine", "forms", "flows", "rules", "reports", "web", "app_definitions")
CORE_FILES = ("__init__.py", "__main__.py", "pyproject.toml")
TEXT = {".py", ".html", ".js", ".css", ".json", ".yaml", ".yml", ".toml", ".mako", ".txt", ".md"}


def recipes(markdown: str) -> dict[str, str]:
    """``### Adding …`` heading → its text, inside ``## Extension recipes``."""
    section = markdown.split("\n## Extension recipes\n", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^### (Adding .+)$", section, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def named_files(text: str) -> list[str]:
    return [path for path in re.findall(r"`([^`\s]+)`", text) if path.startswith(EXAMPLE)]


def entry_point_modules() -> set[str]:
    project = tomllib.loads((ROOT / EXAMPLE / "pyproject.toml").read_text("utf-8"))["project"]
    return set(project["entry-points"]["careloop.plugins"].values())


def test_every_recipe_names_example_files_that_exist() -> None:
    found = recipes((ROOT / "docs" / "architecture.md").read_text("utf-8"))
    assert {"Adding a table and migration", "Adding translations, routes, templates"} <= set(found)
    for title, text in found.items():
        files = named_files(text)
        assert files, f"{title}: names no file of the example package"
        missing = [path for path in files if not (ROOT / path).exists()]
        assert not missing, f"{title}: {missing}"
        modules = {f"careloop_example.{Path(p).stem}" for p in files
                   if re.fullmatch(rf"{EXAMPLE}careloop_example/\w+\.py", p)}
        assert modules, f"{title}: names no example module"
        assert modules <= entry_point_modules(), f"{title}: a module is not an entry point"
        assert "Core files touched: 0" in text, title


def test_the_recipe_reader_sees_a_missing_file() -> None:
    doc = ("intro\n## Extension recipes\nx\n### Adding a thing\n"
           f"`{EXAMPLE}careloop_example/nothing_here.py` and `engine/registry.py`\n## Next\n")
    [(title, text)] = recipes(doc).items()
    assert title == "Adding a thing"
    assert named_files(text) == [f"{EXAMPLE}careloop_example/nothing_here.py"]
    assert not (ROOT / named_files(text)[0]).exists()


def test_no_core_file_names_the_example_package() -> None:
    files = [path for folder in CORE for path in (ROOT / folder).rglob("*")
             if path.suffix in TEXT and "__pycache__" not in path.parts]
    files += [ROOT / name for name in CORE_FILES]
    assert len(files) > 200
    naming = [str(path.relative_to(ROOT)) for path in files
              if re.search(r"careloop[_-]example", path.read_text("utf-8", errors="replace"))]
    assert naming == []
