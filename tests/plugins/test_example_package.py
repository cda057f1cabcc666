"""The example package is wired: every module in it is one entry point of ``careloop.plugins``
(a module written but not listed would never load), and once installed (``.ci/test``) its
entry points are exactly those its pyproject lists. Not installed, the second test skips, and a
skip fails the run under ``CARELOOP_NO_SKIPS=1`` (CI)."""

from __future__ import annotations

import ast
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from careloop.engine.plugins import PLUGIN_GROUP

PACKAGE = Path(__file__).resolve().parent / "careloop_example"
SOURCE = PACKAGE / "careloop_example"


def declared() -> dict[str, str]:
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text("utf-8"))["project"]
    return dict(project.get("entry-points", {}).get(PLUGIN_GROUP, {}))


def test_every_example_module_is_an_entry_point_and_implements_a_hook() -> None:
    modules = {f"careloop_example.{path.stem}" for path in SOURCE.glob("*.py")
               if path.stem != "__init__"}
    assert "careloop_example.robot_calls" in modules
    assert set(declared().values()) == modules
    for path in SOURCE.glob("*.py"):
        if path.stem != "__init__":  # read, not imported: a table module would join the metadata
            assert _implements_a_hook(path.read_text("utf-8")), path.name


def _implements_a_hook(source: str) -> bool:
    """A top-level ``register`` function or a function decorated ``@hookimpl``."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if node.name == "register" or any(d.startswith("hookimpl") for d in decorators):
                return True
    return False


def test_the_hook_check_tells_a_plugin_from_a_plain_module() -> None:
    assert _implements_a_hook("@hookimpl\ndef model_modules():\n    return []\n")
    assert _implements_a_hook("def register(registry):\n    pass\n")
    assert not _implements_a_hook("def helper():\n    pass\n")


def test_the_installed_entry_points_are_those_of_its_pyproject() -> None:
    try:
        dist = metadata.distribution("careloop-example")
    except metadata.PackageNotFoundError:
        pytest.fail("careloop-example is not installed: .ci/test installs it "
                    "(pip install -e tests/plugins/careloop_example)")
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == PLUGIN_GROUP}
    assert installed == declared()
