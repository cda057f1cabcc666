"""The builder's JSON API: validation, drafts, diff, publish, orphan flag, permissions, audit,
"try it" for rule sets, export that re-imports with no changes."""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine import store
from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow
from careloop.engine.registry import loaded_registry
from careloop.forms.runtime import submit

from .conftest import ROOT, login, make_user

KEY = "postpartum_day42"
URL = f"/api/v1/builder/{{}}/form/{KEY}"


def form_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "form", "key": KEY, "title": {"zh-CN": "产后42天", "en": "Postpartum day 42"},
        "default_locale": "zh-CN",
        "fields": [
            {"key": "lochia_normal", "type": "yes_no", "required": True,
             "label": {"zh-CN": "恶露正常？", "en": "Lochia normal?"}},
            {"key": "mood", "type": "rating", "label": {"zh-CN": "心情", "en": "Mood"}},
            {"key": "comment", "type": "long_text", "label": {"zh-CN": "其他", "en": "Other"},
             "visible_if": "answers.lochia_normal == 'no'"},
        ],
        "scores": [{"key": "mood_score", "method": "sum", "fields": ["mood"]}],
    }
    body.update(extra)
    return body


@pytest.fixture
def px(client: TestClient, apps: list[str]) -> TestClient:
    make_user("px_a", "px_office")
    login(client, "px_a")
    return client


def test_field_types_cover_the_registry(px: TestClient) -> None:
    palette = px.get("/api/v1/builder/field-types").json()
    names = {t["name"] for t in palette}
    assert names == set(loaded_registry().catalogue("field_type").names())
    rating = next(t for t in palette if t["name"] == "rating")
    assert "max" in rating["options"]  # the property panel's JSON Schema
    assert "sum" in px.get("/api/v1/builder/score-methods").json()


def test_validate_locates_a_condition_on_a_missing_field(px: TestClient) -> None:
    body = form_body()
    body["fields"][2]["visible_if"] = "answers.nope == 'no'"
    data = px.post(URL.format("validate"), json={"body": body}).json()
    assert data["ok"] is False
    [problem] = data["problems"]
    assert problem["code"] == "form.unknown-field-reference"
    assert problem["path"] == "$.fields[2].visible_if"
    assert problem["path_parts"] == ["fields", 2, "visible_if"]
    assert data["yaml"].splitlines()[problem["line"] - 1].strip().startswith("visible_if:")
    assert px.post(URL.format("validate"), json={"body": form_body()}).json()["ok"] is True


def test_validate_yaml_text_both_ways(px: TestClient) -> None:
    text = "kind: form\nkey: postpartum_day42\ntitle: {zh-CN: a, en: a}\nfields:\n" \
           "  - {key: a, type: ratng, label: {zh-CN: a, en: a}}\n"
    data = px.post(URL.format("validate"), json={"text": text}).json()
    assert [p["code"] for p in data["problems"]] == ["form.unknown-field-type"]
    assert data["problems"][0]["line"] == 5
    assert "rating" in (data["problems"][0]["hint"] or "")
    assert data["body"]["fields"][0]["type"] == "ratng"  # the JSON model of the same text
    broken = px.post(URL.format("validate"), json={"text": "kind: [\n"}).json()
    assert broken["ok"] is False and broken["body"] is None and broken["problems"][0]["line"]


def test_the_key_and_kind_stay_fixed(px: TestClient) -> None:
    data = px.post(URL.format("validate"), json={"body": form_body(key="other")}).json()
    assert "builder.key-changed" in [p["code"] for p in data["problems"]]


def test_draft_survives_a_reload_and_is_per_user(px: TestClient, client: TestClient) -> None:
    body = form_body()
    saved = px.put(URL.format("drafts"), json={"app": "obstetrics", "body": body})
    assert saved.status_code == 200 and saved.json()["ok"]
    again = px.get(URL.format("drafts")).json()
    assert again["has_draft"] is True and again["body"] == body and again["app"] == "obstetrics"
    make_user("px_b", "px_office")
    with TestClient(client.app, base_url="http://testserver") as other:
        login(other, "px_b")
        theirs = other.get(URL.format("drafts")).json()
    assert theirs["has_draft"] is False and theirs["body"]["fields"] == []
    assert px.put(URL.format("drafts"), json={"app": "nope", "body": body}).status_code == 404


def test_two_autosaves_at_once_keep_one_draft(px: TestClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The second of two simultaneous first autosaves (it did not see the other's row yet)
    replaces the draft's text instead of failing on the unique draft key (was a 500)."""
    from careloop.web import builder

    body = form_body()
    assert px.put(URL.format("drafts"), json={"app": "obstetrics", "body": body}).status_code \
        == 200
    real = builder.get_draft
    calls: list[int] = []

    def unseen_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return None if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(builder, "get_draft", unseen_once)
    changed = copy.deepcopy(body)
    changed["title"]["zh-CN"] = "改过的标题"
    answer = px.put(URL.format("drafts"), json={"app": "obstetrics", "body": changed})
    assert answer.status_code == 200, answer.text
    monkeypatch.setattr(builder, "get_draft", real)
    assert px.get(URL.format("drafts")).json()["body"]["title"]["zh-CN"] == "改过的标题"


def _audits(action: str) -> list[AuditRow]:
    with transaction() as session:
        rows = session.scalars(select(AuditRow).where(AuditRow.action == action)
                              .order_by(AuditRow.id)).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def test_publish_creates_versions_with_diff_and_audit(px: TestClient) -> None:
    first = px.post(URL.format("publish"), json={"app": "obstetrics", "body": form_body()})
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1
    same = px.post(URL.format("publish"), json={"app": "obstetrics", "body": form_body()})
    assert same.status_code == 409
    changed = form_body()
    changed["fields"][1]["label"] = {"zh-CN": "近两周心情", "en": "Mood (2 weeks)"}
    diff = px.post(URL.format("diff"), json={"app": "obstetrics", "body": changed}).json()
    assert diff["current_version"] == 1
    assert "+    zh-CN: 近两周心情" in diff["diff"] and "-    zh-CN: 心情" in diff["diff"]
    assert px.post(URL.format("publish"), json={"app": "obstetrics", "body": changed}) \
        .json()["version"] == 2
    with transaction() as session:
        versions = store.versions(session, "form", KEY)
        assert [v.version for v in versions] == [1, 2]
        assert versions[0].body == form_body()  # version 1 unchanged (immutable)
        assert versions[1].app_id == "obstetrics" and versions[1].created_by == "px_a"
    rows = _audits("builder.publish")
    assert [(r.outcome, r.object_id, r.details.get("version")) for r in rows] == [
        ("success", KEY, 1), ("failure", KEY, None), ("success", KEY, 2)]
    assert rows[0].actor == "px_a" and rows[0].actor_role == "px_office"
    # the draft is gone once published
    assert px.get(URL.format("drafts")).json()["has_draft"] is False


def test_an_invalid_or_foreign_definition_is_not_published(px: TestClient) -> None:
    bad = form_body()
    bad["fields"][2]["visible_if"] = "answers.nope == 'no'"
    response = px.post(URL.format("publish"), json={"app": "obstetrics", "body": bad})
    assert response.status_code == 422
    other = px.post("/api/v1/builder/publish/form/postpartum_42d",
                    json={"app": "satisfaction", "body": form_body(key="postpartum_42d")})
    assert other.status_code == 409  # postpartum_42d belongs to the obstetrics app
    with transaction() as session:
        assert store.current(session, "form", KEY) is None
        assert store.current(session, "form", "postpartum_42d").version == 1  # type: ignore


def test_removing_or_retyping_an_answered_field_is_flagged(px: TestClient,
                                                           engine: Engine) -> None:
    assert px.post(URL.format("publish"), json={"app": "obstetrics", "body": form_body()}) \
        .status_code == 200
    with transaction(engine) as session:
        submit(session, form_key=KEY, patient_id="p1",
               answers={"lochia_normal": "no", "mood": 4, "comment": "还好"})
    changed = form_body()
    del changed["fields"][2]                         # comment removed
    changed["fields"][1]["type"] = "integer"         # mood retyped
    changed["fields"][1].pop("label")
    changed["fields"][1]["label"] = {"zh-CN": "心情", "en": "Mood"}
    impact = px.post(URL.format("diff"), json={"app": "obstetrics", "body": changed}) \
        .json()["impact"]
    # named by their labels (the removed one's from the current version) and type titles,
    # the key kept apart for "高级"
    assert impact["orphaned"] == [{"field": "comment", "answers": 1,
                                   "label": {"zh-CN": "其他", "en": "Other"}}]
    assert impact["retyped"] == [{"field": "mood", "answers": 1, "from": "rating",
                                  "to": "integer", "label": {"zh-CN": "心情", "en": "Mood"},
                                  "from_title": {"zh-CN": "星级评分", "en": "Rating (stars)"},
                                  "to_title": {"zh-CN": "整数", "en": "Integer"}}]
    refused = px.post(URL.format("publish"), json={"app": "obstetrics", "body": changed})
    assert refused.status_code == 409 and refused.json()["code"] == "builder.orphans"
    done = px.post(URL.format("publish"), json={"app": "obstetrics", "body": changed,
                                                "confirm_orphans": True})
    assert done.status_code == 200 and done.json()["version"] == 2
    assert _audits("builder.publish")[-1].details["orphaned"] == ["comment"]


def test_permissions(client: TestClient, apps: list[str]) -> None:
    make_user("nurse_a", "nurse")
    login(client, "nurse_a")
    assert client.get("/api/v1/builder/field-types").status_code == 403
    assert client.post(URL.format("publish"), json={"app": "obstetrics",
                                                    "body": form_body()}).status_code == 403
    assert client.get("/builder", headers={"accept": "text/html"}).status_code == 403
    client.headers.pop("X-CSRF-Token")
    make_user("dir_a", "dept_director")
    login(client, "dir_a")
    assert client.get("/api/v1/builder/field-types").status_code == 200


def test_csrf_is_required(px: TestClient) -> None:
    px.headers.pop("X-CSRF-Token")
    assert px.post(URL.format("publish"), json={"app": "obstetrics",
                                                "body": form_body()}).status_code == 403


def test_preview_renders_the_patient_page(px: TestClient) -> None:
    html = px.post("/api/v1/builder/preview/form/" + KEY, json={"body": form_body()}) \
        .json()["html"]
    assert 'id="f-lochia_normal"' in html and "恶露正常？" in html


def test_try_a_draft_rule_set(px: TestClient) -> None:
    with transaction() as session:
        row = store.current(session, "ruleset", "followup_routing")
        assert row is not None
        body = copy.deepcopy(dict(row.body))
    event = {"form": "inpatient_satisfaction", "answers": {"overall": 3, "nps": 9}}
    url = "/api/v1/builder/rules/followup_routing/try"
    before = px.post(url, json={"body": body, "event": event}).json()
    assert "dissatisfied" not in [m["rule"] for m in before["matched"]]
    body["rules"][0]["when"] = "answers.overall <= 3"
    after = px.post(url, json={"body": body, "event": event}).json()
    assert "dissatisfied" in [m["rule"] for m in after["matched"]]
    assert any(a.get("do") == "create_task" or a.get("action") == "create_task"
               for a in after["actions"])
    with transaction() as session:  # nothing was done
        from careloop.engine.domain import Task
        assert session.scalars(select(Task)).first() is None
    body["rules"][0]["when"] = "answers.overal <= 3"
    assert px.post(url, json={"body": body, "event": event}).status_code == 422


def test_export_reimports_with_no_changes_and_validates(px: TestClient, engine: Engine,
                                                        tmp_path: Path) -> None:
    assert px.post(URL.format("publish"), json={"app": "obstetrics", "body": form_body()}) \
        .status_code == 200
    response = px.get("/builder/apps/obstetrics/export")
    assert response.status_code == 200
    zip_path = tmp_path / "obstetrics.zip"
    zip_path.write_bytes(response.content)
    assert f"forms/{KEY}.yaml" in zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    plan = import_bundle(zip_path, dry_run=True, engine=engine)
    assert plan.is_noop, plan.to_json()
    api_plan = px.post("/api/v1/builder/import", content=response.content)
    assert api_plan.status_code == 403  # px_office may not import bundles
    folder = tmp_path / "apps" / "obstetrics"
    zipfile.ZipFile(zip_path).extractall(folder)
    shutil.copytree(ROOT / "app_definitions" / "common", tmp_path / "apps" / "common")
    result = subprocess.run([str(Path(sys.executable).parent / "careloop"), "validate",
                             str(tmp_path / "apps")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_preview_of_an_empty_dataset_draws_no_sample_data(px: TestClient) -> None:
    body = {"kind": "chart", "key": "nps_tile", "title": {"zh-CN": "净推荐值", "en": "NPS"},
            "dataset": "satisfaction_by_department", "type": "bar",
            "encoding": {"x": "department", "y": "nps"}}
    data = px.post("/api/v1/builder/preview/chart/nps_tile", json={"body": body}).json()
    # issue 13: no page draws sample data for a hospital dataset, the builder's preview included
    assert data == {"image": None, "empty": True, "rows": 0,
                    "message": data["message"]} and "暂无数据" in data["message"]
    options = px.get("/api/v1/builder/charts").json()
    assert "satisfaction_by_department" in options["datasets"] and "bar" in options["types"]


def test_import_plan_needs_bundle_import(client: TestClient, apps: list[str]) -> None:
    make_user("admin_a", "system_admin")
    login(client, "admin_a")
    data = export_zip(client)
    plan = client.post("/api/v1/builder/import", content=data)
    assert plan.status_code == 200 and plan.json()["applied"] is False
    assert plan.json()["unchanged"] and not plan.json()["changed"]
    bad = client.post("/api/v1/builder/import", content=b"not a zip")
    assert bad.status_code == 422


def export_zip(client: TestClient) -> bytes:
    from careloop.engine.bundles import export_bundle

    return export_bundle("obstetrics")


def test_docs_name_every_builder_route() -> None:
    from careloop.web.routes_builder import router

    text = (ROOT / "docs" / "builder.md").read_text("utf-8")
    missing = [r.path for r in router.routes  # type: ignore[attr-defined]
               if r.path not in text]
    assert missing == []


def test_json_text_is_accepted_and_published_as_json(px: TestClient) -> None:
    import json

    text = json.dumps(form_body(), ensure_ascii=False, indent=2)
    checked = px.post(URL.format("validate"), json={"text": text}).json()
    assert checked["ok"] is True and checked["body"] == form_body()
    assert px.post(URL.format("publish"), json={"app": "obstetrics", "text": text}) \
        .status_code == 200
    with transaction() as session:
        row = store.current(session, "form", KEY)
        assert row is not None and row.source_path == f"forms/{KEY}.json"
        assert row.source_text == text


def test_running_flows_are_reported_and_stay_on_their_version(px: TestClient,
                                                               engine: Engine) -> None:
    from careloop.flows.models import FlowRun

    flow = {"kind": "flow", "key": "pp_followup", "title": {"zh-CN": "产后", "en": "PP"},
            "trigger": {"event": "encounter.discharged"},
            "steps": [{"key": "wait_1", "type": "wait", "duration": "3d"},
                      {"key": "send_form_1", "type": "send_form", "form": "postpartum_42d",
                       "template": "survey_invitation", "channels": ["wechat"]}]}
    url = "/api/v1/builder/{}/flow/pp_followup"
    assert px.post(url.format("publish"), json={"app": "obstetrics", "body": flow}) \
        .json()["version"] == 1
    with transaction(engine) as session:
        session.add(FlowRun(flow_key="pp_followup", flow_version=1, status="running",
                            patient_id="p1", context={}, idempotency_key="t1"))
    flow["steps"][0]["duration"] = "7d"
    impact = px.post(url.format("diff"), json={"app": "obstetrics", "body": flow}) \
        .json()["impact"]
    assert impact["running_flows"] == 1
    assert px.post(url.format("publish"), json={"app": "obstetrics", "body": flow}) \
        .json()["version"] == 2
    with transaction(engine) as session:
        run = session.scalars(select(FlowRun)).one()
        assert run.flow_version == 1


def test_a_change_that_breaks_a_sibling_is_reported_under_its_file(px: TestClient) -> None:
    with transaction() as session:
        row = store.current(session, "form", "inpatient_satisfaction")
        assert row is not None
        body = copy.deepcopy(dict(row.body))
    same = px.post("/api/v1/builder/validate/form/inpatient_satisfaction",
                   json={"app": "satisfaction", "body": body}).json()
    assert same["ok"] is True, same["problems"]
    body["fields"] = [f for f in body["fields"] if f["key"] != "overall"]
    for score in body.get("scores", []):
        if "overall" in score.get("fields", []):
            score["fields"] = [f for f in score["fields"] if f != "overall"]
    data = px.post("/api/v1/builder/validate/form/inpatient_satisfaction",
                   json={"app": "satisfaction", "body": body}).json()
    siblings = {p["file"] for p in data["problems"]} - {data["file"]}
    assert siblings and all(f.startswith("satisfaction/") for f in siblings)
    assert data["file"] == "forms/inpatient_satisfaction.yaml"
    refused = px.post("/api/v1/builder/publish/form/inpatient_satisfaction",
                      json={"app": "satisfaction", "body": body})
    assert refused.status_code == 422
