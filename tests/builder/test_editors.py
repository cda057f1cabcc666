"""Who may edit which app: the manifest's ``editors`` (role, optionally one department) decides,
for drafts, publishing, the editor page and the builder's home page."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from careloop.engine import store
from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.engine.models import BundleRow
from careloop.engine.validate import validate_paths
from careloop.web import admin, builder
from careloop.web.permissions import Grant, Principal

from .conftest import PASSWORD, login
from .test_api import form_body

URL = "/api/v1/builder/{}/form/postpartum_day42"


def _director(username: str, department: str) -> None:
    with transaction() as session:
        if session.get(Department, department) is None:
            session.add(Department(id=department, name={"zh-CN": department, "en": department},
                                   kind="department"))
            session.flush()
        user = admin.create_user(session, username=username, display_name=username,
                                 password=PASSWORD)
        admin.grant(session, user, "dept_director", department)


def _principal(*grants: tuple[str, str | None]) -> Principal:
    return Principal(user_id=1, username="u", display_name="u",
                     grants=tuple(Grant(r, d) for r, d in grants), scope=None)


def test_the_obstetrics_director_edits_obstetrics_only(client: TestClient,
                                                       apps: list[str]) -> None:
    _director("obs_dir", "obstetrics")
    login(client, "obs_dir")
    saved = client.put("/api/v1/builder/drafts/form/postpartum_day42",
                       json={"app": "obstetrics", "body": form_body()})
    assert saved.status_code == 200, saved.text
    published = client.post(URL.format("publish"), json={"app": "obstetrics",
                                                         "body": form_body()})
    assert published.status_code == 200 and published.json()["version"] == 1

    # satisfaction's manifest names px_office only
    other = form_body(key="ward_check")
    refused = client.put("/api/v1/builder/drafts/form/ward_check",
                         json={"app": "satisfaction", "body": other})
    assert refused.status_code == 403 and refused.json()["code"] == "builder.not_editor"
    refused = client.post("/api/v1/builder/publish/form/ward_check",
                          json={"app": "satisfaction", "body": other})
    assert refused.status_code == 403 and refused.json()["code"] == "builder.not_editor"
    page = client.get("/builder/edit/ruleset/followup_routing?app=satisfaction",
                      headers={"accept": "text/html"})
    assert page.status_code == 403
    with transaction() as session:
        assert store.current(session, "form", "ward_check") is None
        assert store.current(session, "ruleset", "followup_routing") is not None

    home = client.get("/builder", headers={"accept": "text/html"}).text
    assert 'data-app="obstetrics" data-editable="yes"' in home
    assert 'data-app="satisfaction" data-editable="no"' in home
    assert '<option value="satisfaction">' not in home  # not offered for a new definition


def test_a_director_of_another_department_may_not(client: TestClient, apps: list[str]) -> None:
    _director("card_dir", "cardiology")
    login(client, "card_dir")
    refused = client.post(URL.format("publish"), json={"app": "obstetrics",
                                                       "body": form_body()})
    assert refused.status_code == 403 and refused.json()["code"] == "builder.not_editor"
    assert client.get("/builder/edit/form/postpartum_42d",
                      headers={"accept": "text/html"}).status_code == 403


def test_may_edit_rules() -> None:
    with_editors = BundleRow(id="a", manifest={"departments": ["obstetrics"], "editors": [
        {"role": "px_office"}, {"role": "dept_director", "department": "obstetrics"}]})
    without = BundleRow(id="b", manifest={})
    assert builder.may_edit(_principal(("px_office", None)), with_editors)
    assert builder.may_edit(_principal(("dept_director", "obstetrics")), with_editors)
    assert builder.may_edit(_principal(("dept_director", None)), with_editors)
    assert not builder.may_edit(_principal(("dept_director", "cardiology")), with_editors)
    # a role without builder.edit never edits, even when a manifest names it
    named = BundleRow(id="c", manifest={"editors": [{"role": "nurse"}]})
    assert not builder.may_edit(_principal(("nurse", None)), named)
    # no editors: hospital-wide builder.edit grants only
    assert builder.may_edit(_principal(("px_office", None)), without)
    assert not builder.may_edit(_principal(("dept_director", "obstetrics")), without)


def test_an_unknown_editor_role_is_located(tmp_path: Path) -> None:
    app = tmp_path / "demo"
    app.mkdir()
    (app / "app.yaml").write_text(
        "id: demo\nname: {zh-CN: 演示, en: Demo}\nversion: 1.0.0\nformat: 1\n"
        "default_locale: zh-CN\neditors:\n  - {role: head_nurce}\n", "utf-8")
    problems = validate_paths([app]).problems
    assert [(p.code, p.line, p.path) for p in problems] == [
        ("bundle.unknown-role", 7, ("editors", 0, "role"))]
    assert "head_nurse" in (problems[0].hint or "")


def test_bundles_declare_their_editors(engine: object) -> None:
    root = Path(__file__).resolve().parents[2] / "app_definitions"
    for name in ("common", "obstetrics"):
        import_bundle(root / name, engine=engine, actor="test")  # type: ignore[arg-type]
    with transaction() as session:
        row = session.get(BundleRow, "obstetrics")
        assert row is not None
        assert {"role": "dept_director", "department": "obstetrics"} in row.manifest["editors"]

