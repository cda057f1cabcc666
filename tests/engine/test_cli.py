import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine

from careloop.engine.cli import _add_engine_commands, cli

ROOT = Path(__file__).resolve().parents[2]
_add_engine_commands()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_validate_app_definitions_is_clean() -> None:
    code, out = run("validate", str(ROOT / "app_definitions"))
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("ok: ")


def test_validate_reports_every_error_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: templat\nkey: a\n", "utf-8")
    (tmp_path / "b.yaml").write_text("kind: template\nkey: b\n  bad: [\n", "utf-8")
    code, out = run("validate", str(tmp_path))
    lines = out.strip().splitlines()
    assert code == 1
    assert "a.yaml:1:7: definition.unknown-kind at $.kind" in lines[0]
    assert "(did you mean 'template'?)" in lines[0]
    assert "b.yaml:3:" in lines[1] and "source.syntax" in lines[1]
    assert lines[-1] == "invalid: 2 files, 2 errors"


def test_validate_json_and_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: templat\nkey: a\n", "utf-8")
    code, out = run("validate", "--format", "json", str(tmp_path))
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert data["errors"][0]["code"] == "definition.unknown-kind"
    assert data["errors"][0]["line"] == 1 and data["errors"][0]["path"] == "$.kind"
    code, _ = run("validate", str(tmp_path / "missing"))
    assert code == 2


def test_schema_export_writes_self_contained_schemas(tmp_path: Path) -> None:
    code, _ = run("schema", "export", str(tmp_path))
    assert code == 0
    schema = json.loads((tmp_path / "template.schema.json").read_text("utf-8"))
    assert schema["$schema"].endswith("2020-12/schema")
    assert "sms" in schema["properties"]["channels"]["items"]["enum"]
    assert "$ref" not in json.dumps(schema).replace('"$ref": "#/', "")  # only local refs
    assert (tmp_path / "app.schema.json").exists()


def test_bundle_import_plan_json_and_export(engine: Engine, tmp_path: Path) -> None:
    bundle = tmp_path / "common"
    shutil.copytree(ROOT / "app_definitions" / "common", bundle)
    code, out = run("bundle", "import", "--dry-run", "--format", "json", str(bundle))
    plan = json.loads(out)
    assert code == 0 and set(plan) >= {"added", "changed", "unchanged", "removed"}
    assert "template/survey_invitation" in plan["added"] and plan["applied"] is False
    code, out = run("bundle", "import", str(bundle))
    assert code == 0 and "applied" in out
    code, out = run("bundle", "export", "common", "-o", str(tmp_path / "c.zip"))
    assert code == 0
    code, out = run("bundle", "import", "--format", "json", str(tmp_path / "c.zip"))
    again = json.loads(out)
    assert again["added"] == [] and again["changed"] == [] and len(again["unchanged"]) >= 5
    code, out = run("bundle", "export", "nope", "-o", str(tmp_path / "n.zip"))
    assert code == 1 and "no app 'nope'" in out


def test_invalid_bundle_is_refused_with_exit_1(engine: Engine, tmp_path: Path) -> None:
    bundle = tmp_path / "common"
    shutil.copytree(ROOT / "app_definitions" / "common", bundle)
    (bundle / "templates" / "x.yaml").write_text("kind: template\nkey: x\n", "utf-8")
    code, out = run("bundle", "import", str(bundle))
    assert code == 1
    assert "nothing was changed" in out and "schema.missing-key" in out


def test_audit_verify(engine: Engine) -> None:
    code, out = run("audit", "verify")
    assert code == 0 and "intact" in out


def test_version_loads_no_engine_or_plugin() -> None:
    """``careloop --version`` answers before any engine, plugin or web framework is imported
    (issue 18: the CLI starts at once); a command still finds every engine's commands."""
    import subprocess
    import sys

    probe = ("import sys\n"
             "from careloop.engine.cli import main\n"
             "sys.argv = ['careloop', '--version']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('fastapi', 'sqlalchemy', 'careloop_example') or m.startswith(("
             "'careloop.flows', 'careloop.forms', 'careloop.rules', 'careloop.reports', "
             "'careloop.web', 'careloop.engine.registry')))\n"
             "print('LOADED', loaded)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert "careloop, version" in out
    assert "LOADED []" in out, out
    code, text = run("outbox", "--help")
    assert code == 0 and "retry" in text
