"""The builder in words, through its JSON API: the semantic publish diff (structures compared,
not re-formatted text), a stored form's fields by label and kind of answer, a dictionary's
categories and the rule actions by title (what the rule editor's sentences are made of)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from .conftest import ROOT, login, make_user

FORM = ROOT / "app_definitions" / "satisfaction" / "forms" / "inpatient_satisfaction.yaml"
RULES = ROOT / "app_definitions" / "satisfaction" / "rules" / "followup_routing.yaml"


@pytest.fixture
def px(client: TestClient, apps: list[str]) -> TestClient:
    make_user("px_c", "px_office")
    login(client, "px_c")
    return client


def _changes(px: TestClient, kind: str, body: dict[str, Any],
             locale: str = "zh-CN") -> list[dict[str, Any]]:
    response = px.post(f"/api/v1/builder/diff/{kind}/{body['key']}",
                       json={"app": "satisfaction", "body": body},
                       headers={"Accept-Language": locale})
    assert response.status_code == 200, response.text
    assert response.json()["problems"] == []
    changes: list[dict[str, Any]] = response.json()["changes"]
    return changes


def test_changes_are_compared_as_structures_and_named_by_labels(px: TestClient) -> None:
    body = yaml.safe_load(FORM.read_text("utf-8"))
    assert _changes(px, "form", body) == []   # re-formatted by the builder, yet the same
    body["fields"][2]["label"]["zh-CN"] = "您愿意向亲友推荐我院吗？"
    changes = _changes(px, "form", body)
    assert [c["text"] for c in changes] == [
        "字段「您愿意向亲友推荐我院吗？」：标签 由「您有多大可能向亲友推荐我院？」"
        "改为「您愿意向亲友推荐我院吗？」"]
    assert changes[0]["path"] == "$.fields[2].label" and changes[0]["op"] == "changed"
    en = _changes(px, "form", body, "en")
    assert len(en) == 1 and en[0]["text"].startswith("field “How likely")

    # added, removed, reordered and nested changes
    old = yaml.safe_load(FORM.read_text("utf-8"))
    body = copy.deepcopy(old)
    body["fields"].append({"key": "pain", "type": "rating",
                           "label": {"zh-CN": "疼痛评分", "en": "Pain score"}})
    body["fields"][1]["choices"][0]["label"] = {"zh-CN": "等很久", "en": "Long wait"}
    del body["fields"][1]["choices"][3]                             # 费用
    body["scores"][1]["threshold"] = 5
    body["scores"].reverse()
    assert [c["text"] for c in _changes(px, "form", body)] == [
        "字段「让您不满意的主要是哪些方面？」 › 选项「等很久」："
        "标签 由「等候时间长」改为「等很久」",
        "字段「让您不满意的主要是哪些方面？」：删除选项「费用」",
        "新增字段「疼痛评分」",
        "评分「满意度高分占比」：阈值 由「4」改为「5」",
        "评分的顺序已调整",
    ]

    # a rule's condition: the change carries both expressions
    body = yaml.safe_load(RULES.read_text("utf-8"))
    body["on"] = body.pop(True)   # YAML 1.1 reads the key `on` as true
    body["rules"][0]["when"] = "answers.overall <= 2"
    body["rules"][0]["then"][2]["tag"] = "unhappy"
    changes = _changes(px, "ruleset", body)
    assert [c["text"] for c in changes] == [
        "规则「不满意」：条件 由「answers.overall < 3」改为「answers.overall <= 2」",
        "规则「不满意」 › 动作「给患者打标签」：标记 由「dissatisfied」改为「unhappy」"]
    when = changes[0]   # the page words these two expressions as sentences (core/sentence.js)
    assert (when["where"], when["prop"], when["old"], when["new"]) == (
        "规则「不满意」：", "条件", "answers.overall < 3", "answers.overall <= 2")
    assert changes[1]["prop"] is None


def test_fields_categories_actions_titles_and_uses_in_words(px: TestClient) -> None:
    fields = px.get("/api/v1/builder/forms/inpatient_satisfaction/field-words").json()
    by_key = {f["key"]: f for f in fields}
    assert "page2" not in by_key and "touchpoints" not in by_key   # nothing to compare
    assert by_key["overall"]["answer"] == "number"
    assert by_key["overall"]["label"]["zh-CN"] == "您对本次住院的总体满意度如何？"
    assert by_key["low_reasons"]["answer"] == "choices"
    assert {"code": "cost", "label": {"zh-CN": "费用", "en": "Cost"}} in \
        by_key["low_reasons"]["choices"]
    assert by_key["comment"]["answer"] == "text"
    assert px.get("/api/v1/builder/forms/nope/field-words").status_code == 404
    categories = px.get("/api/v1/builder/dictionaries/feedback_categories/categories").json()
    assert {"key": "medication_guidance",
            "title": {"zh-CN": "用药指导", "en": "Medication guidance"}} in categories
    actions = {a["name"]: a["title"] for a in px.get("/api/v1/builder/action-types").json()}
    assert actions["create_task"]["zh-CN"] and actions["tag"]["zh-CN"] == "给患者打标签"
    palette = {t["name"]: t for t in px.get("/api/v1/builder/field-types").json()}
    assert palette["yes_no"]["answer"] == "boolean" and palette["display"]["answer"] is None
    # the built-in options are named in words, enum values too
    assert palette["single_choice"]["options"]["display"]["x-label"]["zh-CN"] == "显示方式"
    assert palette["single_choice"]["options"]["display"]["x-enum-labels"]["dropdown"][
        "zh-CN"] == "下拉框"
    # the editor page is titled by the definition
    page = px.get("/builder/edit/form/inpatient_satisfaction").text
    assert '<span id="b-title">住院患者满意度调查</span>' in page
    assert "form/inpatient_satisfaction" not in page.split("<main", 1)[-1].split("data-kind")[0]
    assert "<title>住院患者满意度调查" in page

    # where a definition is used
    used = px.get("/api/v1/builder/used-by/dictionary/feedback_categories").json()
    assert {"kind": "ruleset", "key": "followup_routing", "app": "satisfaction",
            "title": {"zh-CN": "满意度回访分流", "en": "Follow-up routing"},
            "kind_title": used[0]["kind_title"]} in used
    assert used[0]["kind_title"]["zh-CN"]
    form = {(u["kind"], u["key"]) for u in
            px.get("/api/v1/builder/used-by/form/inpatient_satisfaction").json()}
    assert ("ruleset", "followup_routing") in form   # (the references are remembered)
    assert px.get("/api/v1/builder/used-by/form/nobody_uses_this").json() == []
    assert px.get("/api/v1/builder/used-by/nokind/x").status_code == 404
