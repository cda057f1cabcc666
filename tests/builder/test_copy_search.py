"""Start from a template or a copy, and search across apps (issue 21, point 5), through the
builder's API (SQLite and PostgreSQL) and the builder home in Chromium.

The obstetrics department's head nurse copies the postpartum form for a gynaecology follow-up:
the new key is proposed from the title, everything is copied into her draft, the original is
untouched; a search finds a definition by a label inside it, in the page's language.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect, sync_playwright
from sqlalchemy import Engine, select

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.engine.models import AuditRow
from careloop.web import admin
from careloop.web.builder_copy import propose_key
from careloop.web.builder_models import BuilderDraft

from .conftest import ARGS, CHROMIUM, make_user, signed_in
from .conftest import login as sign_in

TITLE = {"zh-CN": "妇科术后随访", "en": "Gynaecology post-op follow-up"}


def test_a_key_is_proposed_from_the_english_title_and_is_never_taken() -> None:
    assert propose_key(TITLE, "postpartum_42d", set()) == "gynaecology_post_op_follow_up"
    assert propose_key(TITLE, "postpartum_42d", {"gynaecology_post_op_follow_up"}) == \
        "gynaecology_post_op_follow_up_2"
    assert propose_key({"zh-CN": "妇科术后随访"}, "postpartum_42d", set()) == "postpartum_42d_copy"
    assert propose_key({"en": "42 days"}, "postpartum_42d", set()) == "postpartum_42d_copy"


def test_a_copy_is_a_draft_under_a_new_key_and_the_original_is_untouched(
        client: TestClient, apps: list[str], engine: Engine) -> None:
    make_user("head_nurse", "px_office")
    sign_in(client, "head_nurse")
    with transaction(engine) as session:
        original = store.current(session, "form", "postpartum_42d")
        assert original is not None
        before = (original.version, original.content_hash, dict(original.body))
    proposed = client.get("/api/v1/builder/copy/key", params={
        "kind": "form", "key": "postpartum_42d", "en": TITLE["en"]})
    assert proposed.json() == {"key": "gynaecology_post_op_follow_up"}
    done = client.post("/api/v1/builder/copy", json={
        "kind": "form", "key": "postpartum_42d", "app": "obstetrics", "title": TITLE})
    assert done.status_code == 201, done.text
    assert done.json()["key"] == "gynaecology_post_op_follow_up"
    assert done.json()["url"] == "/builder/edit/form/gynaecology_post_op_follow_up?app=obstetrics"
    draft = client.get("/api/v1/builder/drafts/form/gynaecology_post_op_follow_up").json()
    assert draft["has_draft"] is True and draft["app"] == "obstetrics"
    assert draft["body"]["title"] == TITLE
    assert draft["body"]["fields"] == before[2]["fields"]          # everything else copied
    assert [p for p in draft["problems"] if p["severity"] == "error"] == []
    with transaction(engine) as session:
        now = store.current(session, "form", "postpartum_42d")
        assert now is not None and (now.version, now.content_hash) == before[:2]
        assert store.current(session, "form", "gynaecology_post_op_follow_up") is None
        drafts = session.scalars(select(BuilderDraft.key)).all()
        assert list(drafts) == ["gynaecology_post_op_follow_up"]   # none of the original
        audit = session.scalars(select(AuditRow).where(AuditRow.action == "builder.copy")).one()
        assert audit.object_id == "gynaecology_post_op_follow_up"
    # the same title again: the next free key; a taken key named outright: refused, in words
    again = client.post("/api/v1/builder/copy", json={
        "kind": "form", "key": "postpartum_42d", "app": "obstetrics", "title": TITLE})
    assert again.json()["key"] == "gynaecology_post_op_follow_up_2"
    taken = client.post("/api/v1/builder/copy", json={
        "kind": "form", "key": "postpartum_42d", "app": "obstetrics", "title": TITLE,
        "new_key": "postpartum_42d"}, headers={"Accept-Language": "zh-CN"})
    assert taken.status_code == 409 and taken.json()["code"] == "builder.copy.taken"
    assert "postpartum_42d" in taken.json()["detail"] and "已被使用" in taken.json()["detail"]
    untitled = client.post("/api/v1/builder/copy", json={
        "kind": "form", "key": "postpartum_42d", "app": "obstetrics", "title": {"zh-CN": " "}})
    assert untitled.status_code == 422 and untitled.json()["code"] == "builder.copy.no_title"
    missing = client.post("/api/v1/builder/copy", json={
        "kind": "form", "key": "no_such_form", "app": "obstetrics", "title": TITLE})
    assert missing.status_code == 404


def test_a_new_definition_is_asked_for_by_title_and_its_key_proposed(
        client: TestClient, apps: list[str], engine: Engine) -> None:
    """Issue 21: the home page's "new definition" asks for a title; the key is proposed from
    the English title like a copy's (else from the kind), the blank definition becomes a draft."""
    assert propose_key({"zh-CN": "出院随访"}, "form", {"form", "form_2"}, fallback="form") \
        == "form_3"
    make_user("head_nurse", "px_office")
    sign_in(client, "head_nurse")
    proposed = client.get("/api/v1/builder/new/key", params={"kind": "form", "en": TITLE["en"]})
    assert proposed.json() == {"key": "gynaecology_post_op_follow_up"}
    done = client.post("/api/v1/builder/new", json={
        "kind": "form", "app": "obstetrics", "title": TITLE})
    assert done.status_code == 201, done.text
    assert done.json()["url"] == "/builder/edit/form/gynaecology_post_op_follow_up?app=obstetrics"
    draft = client.get("/api/v1/builder/drafts/form/gynaecology_post_op_follow_up").json()
    assert draft["has_draft"] is True and draft["body"]["title"] == TITLE
    assert draft["body"]["fields"] == []
    # the same title again: the next free key; a Chinese-only title: a key from the kind
    assert client.get("/api/v1/builder/new/key", params={"kind": "form", "en": TITLE["en"]}) \
        .json() == {"key": "gynaecology_post_op_follow_up_2"}
    chinese = client.post("/api/v1/builder/new", json={
        "kind": "form", "app": "obstetrics", "title": {"zh-CN": "出院随访"}})
    assert chinese.status_code == 201 and chinese.json()["key"] == "form"
    assert chinese.json()["title"] == {"zh-CN": "出院随访", "en": "出院随访"}
    assert client.post("/api/v1/builder/new", json={
        "kind": "form", "app": "obstetrics", "title": {"zh-CN": "出院随访"}}).json()["key"] \
        == "form_2"
    taken = client.post("/api/v1/builder/new", json={
        "kind": "form", "app": "obstetrics", "title": TITLE, "key": "postpartum_42d"})
    assert taken.status_code == 409 and "postpartum_42d" in taken.json()["detail"]
    untitled = client.post("/api/v1/builder/new", json={
        "kind": "form", "app": "obstetrics", "title": {"zh-CN": " "}})
    assert untitled.status_code == 422
    with transaction(engine) as session:
        audit = session.scalars(select(AuditRow).where(AuditRow.action == "builder.new")).all()
        assert [a.object_id for a in audit] == ["gynaecology_post_op_follow_up", "form", "form_2"]


def test_a_copy_goes_only_into_an_app_the_user_may_edit(client: TestClient, apps: list[str],
                                                         engine: Engine) -> None:
    with transaction(engine) as session:
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"},
                               kind="department"))
    with transaction(engine) as session:
        user = admin.create_user(session, username="cardio_director", display_name="主任",
                                 password="Correct-Horse-Battery-9")
        admin.grant(session, user, "dept_director", "cardiology")
    sign_in(client, "cardio_director")
    refused = client.post("/api/v1/builder/copy", json={
        "kind": "form", "key": "postpartum_42d", "app": "obstetrics", "title": TITLE})
    assert refused.status_code == 403, refused.text
    with transaction(engine) as session:
        assert session.scalars(select(BuilderDraft)).all() == []


def test_search_finds_definitions_by_a_label_inside_them_in_the_page_language(
        client: TestClient, apps: list[str]) -> None:
    make_user("searcher", "px_office")
    sign_in(client, "searcher")
    hits = client.get("/api/v1/builder/search", params={"q": "乳房红肿"},
                      headers={"Accept-Language": "zh-CN"}).json()
    assert [(h["kind"], h["key"]) for h in hits] == [("form", "postpartum_42d")]
    assert hits[0]["title"] == "产后42天随访" and hits[0]["kind_title"] == "表单"
    assert hits[0]["found"] == ["选项「乳房红肿发热」"]
    english = client.get("/api/v1/builder/search", params={"q": "swollen breast"},
                         headers={"Accept-Language": "en"}).json()
    assert [h["key"] for h in english] == ["postpartum_42d"]
    assert english[0]["found"] == ["Choice “Red, hot, swollen breast”"]
    titled = client.get("/api/v1/builder/search", params={"q": "产后 随访"}).json()
    assert ("form", "postpartum_42d") in [(h["kind"], h["key"]) for h in titled]
    assert client.get("/api/v1/builder/search", params={"q": "没有这个词"}).json() == []


@pytest.fixture
def browser(server: str) -> Iterator[Browser]:
    make_user("nurse_head", "px_office")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def test_on_the_home_page_a_copy_is_started_and_a_label_found(server: str, engine: Engine,
                                                               browser: Browser) -> None:
    page, errors = signed_in(browser, server, "nurse_head")
    page.fill("#builder-search", "乳房红肿")
    hit = page.locator('#builder-search-hits li[data-key="postpartum_42d"]')
    expect(hit).to_contain_text("产后42天随访")
    expect(hit).to_contain_text("选项「乳房红肿发热」")
    page.fill("#builder-search", "")
    page.locator("#builder-copy > summary").click()
    page.locator("#copy-source").select_option(label="表单 · 产后42天随访")
    page.locator("#copy-app").select_option(label="产科随访")
    page.fill("#copy-title-zh", TITLE["zh-CN"])
    page.locator("#copy-title-en").press_sequentially(TITLE["en"])
    page.locator("#copy-key-advanced summary").click()   # the key: proposed, advanced only
    expect(page.locator("#copy-key")).to_have_value("gynaecology_post_op_follow_up")
    page.click("#copy-open")
    page.wait_for_url("**/builder/edit/form/gynaecology_post_op_follow_up?app=obstetrics")
    expect(page.locator("#builder[data-ready='1']")).to_be_attached()
    expect(page.locator("#b-title")).to_have_text("妇科术后随访")   # titled by the copy's title
    expect(page.locator("#b-fields li.b-card").first).to_be_visible()
    with transaction(engine) as session:
        original = store.current(session, "form", "postpartum_42d")
        assert original is not None
        fields = len(original.body["fields"])
    expect(page.locator("#b-fields li.b-card")).to_have_count(fields)
    expect(page.locator("#b-status")).not_to_contain_text("403")
    assert errors == []
