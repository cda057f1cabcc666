import json
import shutil
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from careloop.engine import store
from careloop.engine.bundles import BundleError, export_bundle, import_bundle
from careloop.engine.db import transaction
from careloop.engine.errors import DefinitionInvalid
from careloop.engine.models import AuditRow, DefinitionRow

ROOT = Path(__file__).resolve().parents[2]
COMMON = ROOT / "app_definitions" / "common"
N_COMMON = sum(1 for p in COMMON.rglob("*.yaml") if p.name != "app.yaml"
               and "tests" not in p.relative_to(COMMON).parts)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    target = tmp_path / "common"
    shutil.copytree(COMMON, target)
    return target


def count_definitions(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(DefinitionRow)).scalar_one())


def test_import_then_import_again_is_a_noop(engine: Engine, bundle: Path) -> None:
    first = import_bundle(bundle)
    assert first.applied and len(first.refs("added")) == N_COMMON
    assert count_definitions(engine) == N_COMMON
    second = import_bundle(bundle)
    assert not second.applied and second.is_noop
    assert len(second.refs("unchanged")) == N_COMMON
    assert count_definitions(engine) == N_COMMON


def test_dry_run_changes_nothing(engine: Engine, bundle: Path) -> None:
    plan = import_bundle(bundle, dry_run=True)
    assert plan.refs("added") and not plan.applied
    assert count_definitions(engine) == 0


def test_one_invalid_file_refuses_the_whole_bundle(engine: Engine, bundle: Path) -> None:
    import_bundle(bundle)
    # change a valid file *and* break another: neither change may land
    valid = bundle / "templates" / "revisit_reminder.yaml"
    valid.write_text(valid.read_text("utf-8").replace("复诊提醒", "复诊提醒（新）"), "utf-8")
    (bundle / "templates" / "broken.yaml").write_text(
        "kind: template\nkey: broken\ntitle: {zh-CN: 坏, en: Bad}\nvariables: []\n"
        "body: {zh-CN: '{{ x }}'}\n", "utf-8")
    with pytest.raises(DefinitionInvalid) as exc:
        import_bundle(bundle)
    assert [p.code for p in exc.value.problems] == ["template.undeclared-variable"]
    assert exc.value.problems[0].file is not None
    assert exc.value.problems[0].file.endswith("templates/broken.yaml")
    with transaction(engine) as session:
        assert store.current(session, "template", "revisit_reminder").version == 1  # type: ignore[union-attr]
    assert count_definitions(engine) == N_COMMON


def test_changed_definition_gets_a_new_version_old_stays(engine: Engine, bundle: Path) -> None:
    import_bundle(bundle)
    path = bundle / "templates" / "revisit_reminder.yaml"
    path.write_text(path.read_text("utf-8").replace("复诊提醒\n", "复诊提醒（新版）\n"), "utf-8")
    plan = import_bundle(bundle)
    assert plan.refs("changed") == ["template/revisit_reminder"]
    assert "复诊提醒（新版）" in plan.to_json()["diffs"]["template/revisit_reminder"]
    with transaction(engine) as session:
        v1 = store.get_version(session, "template", "revisit_reminder", 1)
        v2 = store.get_version(session, "template", "revisit_reminder")
        assert (v1.title["zh-CN"], v2.version) == ("复诊提醒", 2)
        assert v2.title["zh-CN"] == "复诊提醒（新版）"
        assert store.compile_row(v1).key == "revisit_reminder"


def test_removed_definition_is_retired_not_deleted(engine: Engine, bundle: Path) -> None:
    import_bundle(bundle)
    (bundle / "templates" / "complaint_receipt.yaml").unlink()
    plan = import_bundle(bundle)
    assert plan.refs("removed") == ["template/complaint_receipt"]
    with transaction(engine) as session:
        assert store.current(session, "template", "complaint_receipt") is None
        assert store.get_version(session, "template", "complaint_receipt", 1).retired_at
    shutil.copy(COMMON / "templates" / "complaint_receipt.yaml", bundle / "templates")
    again = import_bundle(bundle)
    assert again.refs("added") == ["template/complaint_receipt"]
    with transaction(engine) as session:
        assert store.current(session, "template", "complaint_receipt").version == 1  # type: ignore[union-attr]


def test_export_reimports_with_no_changes(engine: Engine, bundle: Path, tmp_path: Path) -> None:
    import_bundle(bundle)
    archive = tmp_path / "common.zip"
    archive.write_bytes(export_bundle("common"))
    with zipfile.ZipFile(archive) as zf:
        assert "app.yaml" in zf.namelist()
    plan = import_bundle(archive)
    assert plan.is_noop and len(plan.refs("unchanged")) == N_COMMON


def test_key_owned_by_another_app_is_refused(engine: Engine, bundle: Path, tmp_path: Path) -> None:
    import_bundle(bundle)
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = other / "app.yaml"
    manifest.write_text(manifest.read_text("utf-8").replace("id: common", "id: other"), "utf-8")
    with pytest.raises(DefinitionInvalid) as exc:
        import_bundle(other)
    assert {p.code for p in exc.value.problems} == {"bundle.key-owned-by-other-app"}


def test_import_is_audited_in_the_same_transaction(engine: Engine, bundle: Path) -> None:
    import_bundle(bundle, actor="admin")
    with transaction(engine) as session:
        rows = session.scalars(select(AuditRow)).all()
    assert [(r.actor, r.action, r.object_id) for r in rows] == [
        ("admin", "bundle.import", "common")]


def test_unsafe_zip_and_missing_manifest(engine: Engine, tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("app.yaml", "id: x\n")
        zf.writestr("../escape.yaml", "kind: template\n")
    with pytest.raises(BundleError) as exc:
        import_bundle(evil)
    assert "unsafe member" in str(exc.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DefinitionInvalid) as exc2:
        import_bundle(empty)
    assert [p.code for p in exc2.value.problems] == ["bundle.no-manifest"]


def test_bad_manifest_is_located(engine: Engine, bundle: Path) -> None:
    manifest = bundle / "app.yaml"
    manifest.write_text(manifest.read_text("utf-8").replace("0.1.0", "one"), "utf-8")
    with pytest.raises(DefinitionInvalid) as exc:
        import_bundle(bundle)
    [problem] = exc.value.problems
    assert (problem.code, problem.line) == ("bundle.bad-version", 5)


def test_required_app_must_be_imported_first(engine: Engine, tmp_path: Path) -> None:
    app = tmp_path / "dept"
    (app / "templates").mkdir(parents=True)
    (app / "app.yaml").write_text(
        "id: dept\nname: {zh-CN: 科室, en: Dept}\nversion: 1.0.0\nformat: 1\n"
        "default_locale: zh-CN\nrequires: [common]\n", "utf-8")
    with pytest.raises(DefinitionInvalid) as exc:
        import_bundle(app)
    [problem] = exc.value.problems
    assert (problem.code, problem.json_path, problem.line) == (
        "bundle.missing-requirement", "$.requires[0]", 6)
    import_bundle(COMMON)
    assert import_bundle(app).applied


def test_list_bundles_orders_required_apps_first() -> None:
    from careloop.engine.bundles import list_bundles

    names = [p.name for p in list_bundles([ROOT / "app_definitions"])]
    assert names[0] == "common" and "satisfaction" in names


# --- several bundles: ordered by requires ---------------------------------------------------


def make_app(root: Path, app_id: str, requires: list[str]) -> Path:
    app = root / app_id
    (app / "templates").mkdir(parents=True)
    (app / "app.yaml").write_text(
        f"id: {app_id}\nname: {{zh-CN: 应用{app_id}, en: App {app_id}}}\nversion: 1.0.0\n"
        f"format: 1\ndefault_locale: zh-CN\nrequires: [{', '.join(requires)}]\n", "utf-8")
    (app / "templates" / f"{app_id}_hello.yaml").write_text(
        f"kind: template\nkey: {app_id}_hello\ntitle: {{zh-CN: 问候{app_id}, en: Hello}}\n"
        "channels: [sms]\nvariables: [patient_name]\n"
        "body: {zh-CN: '{{ patient_name }}您好', en: 'Hello {{ patient_name }}'}\n", "utf-8")
    return app


def run_cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from careloop.engine.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_bundle_import_orders_the_bundles_given_by_requires(engine: Engine,
                                                            tmp_path: Path) -> None:
    c = make_app(tmp_path, "c_app", ["b_app"])
    b = make_app(tmp_path, "b_app", ["a_app"])
    a = make_app(tmp_path, "a_app", [])
    code, out = run_cli("bundle", "import", "--dry-run", "--format", "json", str(c), str(b),
                        str(a))
    assert code == 0, out
    data = json.loads(out)
    assert [p["app"] for p in data["bundles"]] == ["a_app", "b_app", "c_app"]
    assert data["applied"] is False and all(p["errors"] == [] for p in data["bundles"])
    assert count_definitions(engine) == 0  # the dry run planned b after a, then wrote nothing
    code, out = run_cli("bundle", "import", str(c), str(b), str(a))
    assert code == 0, out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("app ")] == [
        "a_app", "b_app", "c_app"]
    assert count_definitions(engine) == 3


def test_a_folder_of_bundles_is_imported_in_requires_order(engine: Engine,
                                                           tmp_path: Path) -> None:
    make_app(tmp_path, "a_late", ["z_first"])  # alphabetically first, but requires z_first
    make_app(tmp_path, "z_first", [])
    code, out = run_cli("bundle", "import", "--format", "json", str(tmp_path))
    assert code == 0, out
    assert [p["app"] for p in json.loads(out)["bundles"]] == ["z_first", "a_late"]


def test_a_cycle_or_a_missing_requirement_is_an_error_naming_the_bundles(
        engine: Engine, tmp_path: Path) -> None:
    a = make_app(tmp_path / "cycle", "a_app", ["b_app"])
    b = make_app(tmp_path / "cycle", "b_app", ["a_app"])
    code, out = run_cli("bundle", "import", str(a), str(b))
    assert code == 1
    assert "bundle.requires-cycle" in out and "a_app" in out and "b_app" in out
    assert "a_app/app.yaml:6:" in out and "b_app/app.yaml:6:" in out
    assert "nothing was changed" in out and count_definitions(engine) == 0
    d = make_app(tmp_path / "missing", "d_app", ["nowhere"])
    code, out = run_cli("bundle", "import", "--format", "json", str(d))
    assert code == 1
    [error] = json.loads(out)["errors"]
    assert error["code"] == "bundle.missing-requirement" and "nowhere" in error["message"]
    assert error["file"].endswith("d_app/app.yaml")
    code, out = run_cli("bundle", "import", str(tmp_path / "missing" / "d_app" / "templates"))
    assert code == 2 and "neither a bundle" in out


def test_migration_0009_records_the_imported_version_not_the_builders(tmp_path: Path) -> None:
    """An upgraded database keeps what was published in the builder before the upgrade."""
    import sqlalchemy as sa
    from alembic import command

    from careloop.engine.migrate import alembic_config, upgrade

    db, drop = _fresh_database(tmp_path)
    try:
        upgrade(db, "0008")
        now = datetime(2026, 11, 1, tzinfo=UTC)
        meta = sa.MetaData()
        meta.reflect(db, only=["bundles", "definitions", "audit_log"])
        with db.begin() as conn:
            conn.execute(meta.tables["bundles"].insert(), [{
                "id": "obstetrics", "name": {"zh-CN": "产科"}, "version": "0.1.0", "format": 1,
                "default_locale": "zh-CN", "manifest": {}, "manifest_text": "", "imported_at": now,
                "updated_at": now}])
            conn.execute(meta.tables["definitions"].insert(), [
                {"kind": "form", "key": "f", "version": v, "content_hash": f"sha256:{v}",
                 "title": {}, "body": {}, "source_text": "", "source_path": "forms/f.yaml",
                 "app_id": "obstetrics", "created_at": now, "created_by": by}
                for v, by in ((1, "cli"), (2, "px_a"))])
            conn.execute(meta.tables["audit_log"].insert(), [{
                "at": now, "actor": "px_a", "action": "builder.publish", "object_type": "form",
                "object_id": "f", "outcome": "success", "details": {"version": 2},
                "prev_hash": "0", "hash": "h1"}])
        upgrade(db)
        with db.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT kind, key, app_id, version, content_hash FROM definition_imports")).all()
        assert [tuple(r) for r in rows] == [("form", "f", "obstetrics", 1, "sha256:1")]
        cfg = alembic_config(db)
        with db.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")  # reversible
        assert "definition_imports" not in sa.inspect(db).get_table_names()
    finally:
        db.dispose()
        drop()


def _fresh_database(tmp_path: Path) -> tuple[Engine, Callable[[], None]]:
    """An empty database of the kind the suite runs on (SQLite file or a new PostgreSQL schema)."""
    import os
    import secrets

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from careloop.engine.db import make_engine

    url = os.environ.get("CARELOOP_DATABASE_URL")
    if not url or make_url(url).get_backend_name() != "postgresql":
        return make_engine(f"sqlite:///{tmp_path / 'old.db'}"), lambda: None
    schema = f"careloop_mig_{secrets.token_hex(4)}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return make_engine(url, connect_args={"options": f"-csearch_path={schema}"}), drop
