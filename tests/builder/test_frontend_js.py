"""The builder's front end checked with Node: ``.ci/js`` installs the dev tooling of
web/frontend/ from its lockfile, lints web/static/builder/ with eslint and runs the unit tests of
its pure modules (``node --test``: graph checks, inputs from a schema, label and diff helpers).
Node missing fails the test (never a skip).

The unit tests read the step types as the server describes them from
web/frontend/test/step-types.json; a test here checks that file is the server's current answer
(so the JS tests cannot drift from the step-type contract). Regenerate it with
``python tests/builder/test_frontend_js.py --write``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "web" / "frontend" / "test" / "step-types.json"
KEEP = ("name", "title", "edges", "modes", "pauses", "forks", "join", "icon", "defaults", "delay",
        "required", "labels")
WITH_OPTIONS = ("wait", "decision", "parallel", "phone_robot")


def _projection() -> list[dict[str, Any]]:
    """The server's step types (built-ins, the example phone_robot) as the JS tests read them."""
    from careloop.web.builder import step_palette

    out = []
    for t in sorted(step_palette(), key=lambda t: str(t["name"])):
        row = {k: t[k] for k in KEEP}
        if t["name"] in WITH_OPTIONS:
            row["options"] = {k: v for k, v in t["options"].items() if k != "retry"}
        out.append(row)
    return out


def test_the_js_tests_read_the_servers_step_types() -> None:
    from careloop.engine.registry import loaded_registry

    if loaded_registry().catalogue("step_type").get("phone_robot") is None:
        from careloop_example import phone_robot

        phone_robot.register(loaded_registry())
    expected = json.loads(json.dumps(_projection(), ensure_ascii=False))
    found = json.loads(FIXTURE.read_text("utf-8"))
    assert found == expected, (
        f"{FIXTURE.relative_to(ROOT)} is not the server's step types: "
        "run python tests/builder/test_frontend_js.py --write")


def test_eslint_and_the_node_unit_tests_pass() -> None:
    assert shutil.which("node") and shutil.which("npm"), (
        "node and npm are needed for the builder's lint and unit tests (Debian: nodejs npm)")
    result = subprocess.run(["bash", str(ROOT / ".ci" / "js")], cwd=ROOT, capture_output=True,
                            text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert "# fail 0" in result.stdout and "# pass " in result.stdout, result.stdout[-3000:]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    FIXTURE.write_text(json.dumps(_projection(), ensure_ascii=False, indent=1) + "\n", "utf-8")
