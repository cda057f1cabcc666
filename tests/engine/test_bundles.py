import shutil
import zipfile
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
