"""A restart (``careloop up``) or ``careloop bundle import`` never overwrites what staff published
in the builder: untouched definitions follow the bundle, builder edits stay live, and a
definition changed on both sides is a conflict an administrator resolves either way."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from careloop.engine import store
from careloop.engine.bundles import open_conflicts
from careloop.engine.cli import cli
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow, DefinitionRow
from careloop.web.cli import up

from .conftest import ROOT, login, make_user

KEY = "postpartum_42d"
FILE = f"obstetrics/forms/{KEY}.yaml"
PUBLISH = f"/api/v1/builder/publish/form/{KEY}"
TITLE = "title: {zh-CN: 产后42天随访, en: Postpartum day-42 follow-up}"


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    """A copy of the apps the ``apps`` fixture imported, as ``careloop up --bundles`` reads."""
    target = tmp_path / "apps"
    for name in ("common", "discharge", "cardiology", "obstetrics", "satisfaction"):
        shutil.copytree(ROOT / "app_definitions" / name, target / name)
    return target


@pytest.fixture
def px(client: TestClient, apps: list[str]) -> TestClient:
    make_user("px_a", "px_office")
    login(client, "px_a")
    return client


def publish(client: TestClient, zh_title: str) -> int:
    """Publish the obstetrics form with another title through the builder's API."""
    text = (ROOT / "app_definitions" / FILE).read_text("utf-8")
    assert TITLE in text
    text = text.replace(TITLE, f"title: {{zh-CN: {zh_title}, en: Postpartum day-42 follow-up}}")
    response = client.post(PUBLISH, json={"app": "obstetrics", "text": text})
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


def edit_bundle(bundles: Path, zh_title: str) -> None:
    path = bundles / FILE
    text, n = re.subn(r"^title: .*$", f"title: {{zh-CN: {zh_title}, en: Postpartum day-42 "
                      "follow-up}", path.read_text("utf-8"), count=1, flags=re.MULTILINE)
    assert n == 1
    path.write_text(text, "utf-8")


def restart(bundles: Path) -> str:
    """What ``careloop up`` does on every start, minus serving."""
    result = CliRunner().invoke(up, ["--no-serve", "--bundles", str(bundles)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def bundle_import(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["bundle", "import", *args], catch_exceptions=False)
    return result.exit_code, result.output


def live(kind: str = "form", key: str = KEY) -> tuple[int, str] | None:
    with transaction() as session:
        row = store.current(session, kind, key)
        return (row.version, row.title["zh-CN"]) if row is not None else None


def versions(kind: str = "form", key: str = KEY) -> list[tuple[int, str]]:
    with transaction() as session:
        return [(r.version, r.title["zh-CN"]) for r in store.versions(session, kind, key)]


def test_a_restart_keeps_what_the_builder_published(px: TestClient, bundles: Path) -> None:
    assert publish(px, "产后42天随访（科室版）") == 2
    out = restart(bundles)
    assert live() == (2, "产后42天随访（科室版）")
    assert versions() == [(1, "产后42天随访"), (2, "产后42天随访（科室版）")]
    assert "bundle obstetrics 0.1.0: added 0, changed 0, removed 0, kept (published in the " \
           "builder) 1" in out
    assert "conflict" not in out
    code, out = bundle_import("--format", "json", str(bundles / "obstetrics"))
    plan = json.loads(out)
    assert code == 0 and plan["kept"] == [f"form/{KEY}"] and plan["conflicts"] == []
    assert plan["applied"] is False and live() == (2, "产后42天随访（科室版）")


def test_a_bundle_only_change_still_applies(px: TestClient, bundles: Path) -> None:
    publish(px, "产后42天随访（科室版）")
    template = bundles / "common" / "templates" / "revisit_reminder.yaml"
    template.write_text(template.read_text("utf-8").replace("复诊提醒\n", "复诊提醒（新版）\n"),
                        "utf-8")
    out = restart(bundles)
    assert "bundle common 0.1.0: added 0, changed 1, removed 0" in out
    assert live("template", "revisit_reminder") == (2, "复诊提醒（新版）")
    assert live() == (2, "产后42天随访（科室版）")
    # and once the bundle and the builder agree again, the definition follows the bundle
    edit_bundle(bundles, "产后42天随访（科室版）")
    restart(bundles)
    edit_bundle(bundles, "产后42天随访（第三版）")
    restart(bundles)
    assert live() == (3, "产后42天随访（第三版）")


def _conflict_listed(bundles: Path) -> None:
    out = restart(bundles)
    assert "conflicts, not applied: 1" in out
    assert f"form/{KEY}: published in the builder (version 2 stays live) and the bundle " \
           "changed it" in out and "/admin/bundles/conflicts" in out
    assert live() == (2, "产后42天随访（科室版）")
    code, out = bundle_import("--dry-run", str(bundles / "obstetrics"))
    assert code == 0 and "conflicts (not applied): 1" in out and f"form/{KEY}" in out
    code, out = bundle_import("--format", "json", str(bundles / "obstetrics"))
    plan = json.loads(out)
    assert plan["conflicts"] == [{"ref": f"form/{KEY}", "live_version": 2, "bundle": "changed"}]
    assert plan["changed"] == [] and plan["applied"] is False
    with transaction() as session:
        [conflict] = open_conflicts(session)  # stored once, however often it is seen
        assert (conflict.app_id, conflict.kind, conflict.key, conflict.live_version) == (
            "obstetrics", "form", KEY, 2)
        assert "产后42天随访（新版包）" in (conflict.source_text or "")


def _admin_page(client: TestClient) -> str:
    make_user("sysadmin", "system_admin")
    login(client, "sysadmin")
    assert "/admin/bundles/conflicts" in client.get("/admin/bundles").text
    page = client.get("/admin/bundles/conflicts")
    assert page.status_code == 200
    assert "产后42天随访（科室版）" in page.text and "保留构建器的版本" in page.text
    assert "采用应用包的版本" in page.text and "None" not in page.text
    assert "UTC" not in page.text and "+00:00" not in page.text
    match = re.search(r'data-conflict="(\d+)"', page.text)
    assert match
    return match.group(1)


def _post(client: TestClient, url: str) -> int:
    token = client.headers["X-CSRF-Token"]
    return client.post(url, data={"csrf_token": token}, follow_redirects=False).status_code


def test_changed_on_both_sides_is_a_conflict_kept_as_the_builders(
        px: TestClient, bundles: Path) -> None:
    publish(px, "产后42天随访（科室版）")
    edit_bundle(bundles, "产后42天随访（新版包）")
    _conflict_listed(bundles)
    conflict_id = _admin_page(px)
    assert _post(px, f"/admin/bundles/conflicts/{conflict_id}/builder") == 303
    assert _post(px, f"/admin/bundles/conflicts/{conflict_id}/builder") == 404  # settled
    with transaction() as session:
        assert open_conflicts(session) == []
        [row] = session.scalars(select(AuditRow).where(
            AuditRow.action == "bundle.resolve_conflict")).all()
        assert (row.actor, row.object_id, row.details["keep"]) == ("sysadmin", KEY, "builder")
    out = restart(bundles)
    assert "conflict" not in out and "kept (published in the builder) 1" in out
    assert live() == (2, "产后42天随访（科室版）")
    assert versions() == [(1, "产后42天随访"), (2, "产后42天随访（科室版）")]
    assert "没有待处理的冲突" in px.get("/admin/bundles/conflicts").text


def test_changed_on_both_sides_is_a_conflict_taken_from_the_bundle(
        px: TestClient, bundles: Path) -> None:
    publish(px, "产后42天随访（科室版）")
    edit_bundle(bundles, "产后42天随访（新版包）")
    _conflict_listed(bundles)
    conflict_id = _admin_page(px)
    assert _post(px, f"/admin/bundles/conflicts/{conflict_id}/bundle") == 303
    assert live() == (3, "产后42天随访（新版包）")
    assert versions() == [(1, "产后42天随访"), (2, "产后42天随访（科室版）"),
                          (3, "产后42天随访（新版包）")]  # nothing old deleted or rewritten
    out = restart(bundles)
    assert "conflict" not in out and "kept" not in out
    assert "bundle obstetrics 0.1.0: added 0, changed 0, removed 0" in out
    assert live() == (3, "产后42天随访（新版包）")
    # the bundle's next change applies again: nobody touched the definition since
    edit_bundle(bundles, "产后42天随访（新版包2）")
    restart(bundles)
    assert live() == (4, "产后42天随访（新版包2）")


def test_a_definition_created_in_the_builder_is_not_removed_by_a_restart(
        px: TestClient, bundles: Path) -> None:
    body = json.loads(json.dumps({
        "kind": "form", "key": "postpartum_day7", "default_locale": "zh-CN",
        "title": {"zh-CN": "产后7天", "en": "Postpartum day 7"},
        "fields": [{"key": "ok", "type": "yes_no", "label": {"zh-CN": "还好吗？", "en": "OK?"}}]}))
    response = px.post("/api/v1/builder/publish/form/postpartum_day7",
                       json={"app": "obstetrics", "body": body})
    assert response.status_code == 200, response.text
    out = restart(bundles)
    assert "removed 0" in out and live("form", "postpartum_day7") == (1, "产后7天")


def test_a_definition_the_bundle_removed_but_the_builder_changed_is_a_conflict(
        px: TestClient, bundles: Path) -> None:
    publish(px, "产后42天随访（科室版）")
    (bundles / FILE).unlink()
    out = restart(bundles)
    assert "and the bundle removed it" in out and live() == (2, "产后42天随访（科室版）")
    conflict_id = _admin_page(px)
    assert "删除了此定义" in px.get("/admin/bundles/conflicts").text
    assert _post(px, f"/admin/bundles/conflicts/{conflict_id}/bundle") == 303
    assert live() is None and len(versions()) == 2  # retired, not deleted
    out = restart(bundles)
    assert "conflict" not in out


def test_keeping_a_definition_the_bundle_removed_makes_it_the_builders(
        px: TestClient, bundles: Path) -> None:
    publish(px, "产后42天随访（科室版）")
    (bundles / FILE).unlink()
    restart(bundles)
    conflict_id = _admin_page(px)
    assert _post(px, f"/admin/bundles/conflicts/{conflict_id}/builder") == 303
    out = restart(bundles)
    assert "conflict" not in out and live() == (2, "产后42天随访（科室版）")
    with transaction() as session:
        assert session.scalars(select(DefinitionRow).where(
            DefinitionRow.key == KEY, DefinitionRow.retired_at.is_not(None))).all() == []


def test_conflicts_are_listed_and_resolved_from_the_command_line(px: TestClient,
                                                                 bundles: Path) -> None:
    publish(px, "产后42天随访（科室版）")
    edit_bundle(bundles, "产后42天随访（新版包）")
    restart(bundles)
    result = CliRunner().invoke(cli, ["bundle", "conflicts", "--format", "json"])
    [conflict] = json.loads(result.stdout)["conflicts"]
    assert (conflict["ref"], conflict["live_version"], conflict["bundle"]) == (
        f"form/{KEY}", 2, "changed")
    result = CliRunner().invoke(cli, ["bundle", "resolve", str(conflict["id"]), "--keep",
                                      "bundle"])
    assert result.exit_code == 0 and "version 3 is live" in result.output
    assert live() == (3, "产后42天随访（新版包）")
    result = CliRunner().invoke(cli, ["bundle", "resolve", str(conflict["id"]), "--keep",
                                      "builder"])
    assert result.exit_code == 1 and "no open conflict" in result.output
    assert "0 open conflict(s)" in CliRunner().invoke(cli, ["bundle", "conflicts"]).output
