"""The builder's codes come with their words through the API (SQLite and PostgreSQL): a step
type's enum values (roles, relations, priorities, channels, call outcomes), the report designers'
datasets, charts, dimensions, operators and columns, the flow trigger's events, and a decision
table's value labels (checked by its schema, located)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from .conftest import login, make_user


def _type(types: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(t for t in types if t["name"] == name)


def test_step_type_enums_carry_their_words(client: TestClient, apps: list[str]) -> None:
    make_user("px_w", "px_office")
    login(client, "px_w")
    types = client.get("/api/v1/builder/step-types").json()
    task = _type(types, "create_task")["options"]
    assert task["priority"]["x-enum-labels"]["urgent"] == {"zh-CN": "紧急", "en": "Urgent"}
    assignee = task["assignee"]["properties"]
    assert assignee["role"]["x-enum-labels"]["head_nurse"]["zh-CN"] == "护士长"
    assert assignee["relation"]["x-enum-labels"]["responsible_nurse"]["zh-CN"] == "责任护士"
    send = _type(types, "send_message")["options"]
    assert send["channels"]["items"]["x-enum-labels"]["wechat"]["zh-CN"] == "微信"
    retry = task["on_complete"]["properties"]["retry"]["properties"]["outcomes"]["items"]
    assert retry["x-enum-labels"]["not_reached"]["zh-CN"] == "未接通"
    approval = _type(types, "approval")["options"]
    assert approval["mode"]["x-enum-labels"]["all"]["zh-CN"] == "全部通过"


def test_report_designers_and_the_trigger_are_offered_in_words(client: TestClient,
                                                               apps: list[str]) -> None:
    make_user("px_r", "px_office")
    login(client, "px_r")
    zh = {"Accept-Language": "zh-CN"}
    options = client.get("/api/v1/builder/charts", headers=zh).json()
    labels = options["labels"]
    assert labels["datasets"]["satisfaction_by_department"] == "各科室满意度"
    assert labels["dimensions"]["department"] == "科室"
    assert labels["ops"]["<="] == "≤"
    assert labels["drill_levels"]["department"] == "按科室"
    assert labels["severities"]["critical"] == "严重"
    assert labels["channels"]["x"] == "横轴"
    assert set(labels["charts"]) == set(options["charts"])
    columns = client.get("/api/v1/builder/datasets/satisfaction_by_department", headers=zh).json()
    assert columns["labels"]["department"] == "科室"
    assert all(columns["labels"][m] != m for m in columns["measures"])
    trigger = client.get("/api/v1/builder/flow-trigger").json()
    events = {e["name"]: e["title"]["zh-CN"] for e in trigger["events"]}
    assert events["encounter.discharged"] == "出院"
    once = {o["name"]: o["title"]["zh-CN"] for o in trigger["once"]}
    assert once["per_patient"] == "每位患者只一次"


def test_a_decision_tables_value_labels_are_checked_by_its_schema(client: TestClient,
                                                                  apps: list[str]) -> None:
    make_user("px_d", "px_office")
    login(client, "px_d")
    body = client.get("/api/v1/builder/drafts/decision_table/followup_plan").json()["body"]
    assert body["inputs"][0]["labels"]["cardiology"]["zh-CN"] == "心内科"
    body["inputs"][0]["labels"]["cardiology"] = "心内科"   # not a {zh-CN, en} text
    checked = client.post("/api/v1/builder/validate/decision_table/followup_plan",
                          json={"body": body}).json()
    assert [p["path"] for p in checked["problems"]] == ["$.inputs[0].labels.cardiology"]
