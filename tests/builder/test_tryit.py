"""The rule editor's "try it" in words: a real recent submission the user may see, run through
the draft rule set, each rule explained — hit with its actions, the form filtered out, or the
clause that failed with the value seen; a submission outside the user's scope is neither
offered nor explained."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careloop.engine import store
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, Task
from careloop.engine.models import AuditRow
from careloop.forms.models import Submission
from careloop.web import admin

from .conftest import PASSWORD, login

URL = "/api/v1/builder/rules/followup_routing/explain"


def seed_submissions() -> dict[str, int]:
    """Two inpatient-satisfaction answers: 张三丰 in cardiology (overall 4), 李四 in obstetrics
    (overall 1)."""
    ids: dict[str, int] = {}
    with transaction() as session:
        for dept, zh in (("cardiology", "心内科"), ("obstetrics", "产科")):
            if session.get(Department, dept) is None:
                admin.create_department(session, id=dept, name_zh=zh, name_en=dept,
                                        parent_id=None)
        row = store.current(session, "form", "inpatient_satisfaction")
        assert row is not None
        for pid, name, dept, overall, ago in (("pc", "张三丰", "cardiology", 4, 2),
                                              ("po", "李四", "obstetrics", 1, 1)):
            session.add(Patient(id=pid, mrn=f"MRN-{pid}", name=name))
            session.flush()
            session.add(Encounter(id=f"e-{pid}", patient_id=pid, type="inpatient",
                                  department_id=dept, status="discharged",
                                  discharged_at=now_utc() - timedelta(days=3)))
            session.flush()
            sub = Submission(form_key="inpatient_satisfaction", form_version=row.version,
                             content_hash="x", patient_id=pid, encounter_id=f"e-{pid}",
                             department_id=dept, channel="web", locale="zh-CN",
                             status="received",
                             answers={"overall": overall, "nps": 9, "comment": "护士很耐心"},
                             scores={}, bands={}, submitted_at=now_utc() - timedelta(hours=ago))
            session.add(sub)
            session.flush()
            ids[pid] = sub.id
    return ids


def make_director(username: str, department: str) -> None:
    with transaction() as session:
        user = admin.create_user(session, username=username, display_name=username,
                                 password=PASSWORD)
        admin.grant(session, user, "dept_director", department)


def body() -> dict[str, Any]:
    with transaction() as session:
        row = store.current(session, "ruleset", "followup_routing")
        assert row is not None
        return copy.deepcopy(dict(row.body))


@pytest.fixture
def seeded(client: TestClient, apps: list[str]) -> dict[str, int]:
    ids = seed_submissions()
    make_director("dir_card", "cardiology")
    login(client, "dir_card")
    return ids


def overall_label() -> str:
    """The overall question's label as the form names it ("您对本次住院的总体满意度如何？")."""
    with transaction() as session:
        row = store.current(session, "form", "inpatient_satisfaction")
        assert row is not None
        field = next(f for f in row.body["fields"] if f["key"] == "overall")
        return str(field["label"]["zh-CN"])


def rules_of(answer: Any) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {r["key"]: r for r in answer.json()["rules"]}


def test_offered_submissions_are_scoped_and_in_words(client: TestClient,
                                                     seeded: dict[str, int]) -> None:
    offered = client.get("/api/v1/builder/try/submissions",
                         params={"form": ["inpatient_satisfaction", "discharge_day3"]}).json()
    assert [o["id"] for o in offered] == [seeded["pc"]]  # not the obstetrics patient
    [one] = offered
    assert one["text"].startswith("住院满意度调查 · 张** · ") or "张**" in one["text"], one
    assert "张三丰" not in one["text"] and "pc" not in one["text"].split(" · ")
    assert "T" not in one["text"].split(" · ")[-1] and "UTC" not in one["text"]


def test_a_submission_outside_the_scope_is_refused(client: TestClient,
                                                  seeded: dict[str, int]) -> None:
    answer = client.post(URL, json={"body": body(), "submission_id": seeded["po"]})
    assert answer.status_code == 404
    assert "李四" not in answer.text and "1" not in answer.json().get("detail", "")


def test_hit_names_the_actions_in_words(client: TestClient, seeded: dict[str, int]) -> None:
    draft = body()
    draft["rules"][0]["when"] = "answers.overall <= 4"
    draft["rules"][0]["then"][0]["due"] = {"hours": 4}
    rules = rules_of(client.post(URL, json={"body": draft, "submission_id": seeded["pc"]}))
    hit = rules["dissatisfied"]
    assert hit["hit"] is True and hit["title"] == "不满意"
    assert hit["text"].startswith("命中：")
    assert hit["actions"][0].startswith("护士长 紧急待办「不满意回访：总体满意度 4 分」")
    assert hit["actions"][0].endswith("4 小时内")
    assert "create_task" not in hit["text"] and "head_nurse" not in hit["text"]
    with transaction() as session:  # a dry run: nothing done
        assert session.scalars(select(Task)).first() is None
        audit = session.scalars(select(AuditRow).where(AuditRow.action == "builder.try")
                                .order_by(AuditRow.id.desc())).first()
        assert audit is not None and audit.details["data"] == "scoped"


def test_a_failed_clause_names_the_field_and_the_value(client: TestClient,
                                                       seeded: dict[str, int]) -> None:
    draft = body()
    draft["rules"][0]["when"] = "answers.overall <= 2"
    rules = rules_of(client.post(URL, json={"body": draft, "submission_id": seeded["pc"]}))
    miss = rules["dissatisfied"]
    assert miss["hit"] is False
    assert miss["text"] == f"未命中：{overall_label()} 是 4，条件要 ≤ 2", miss
    assert rules["satisfied"]["hit"] is True  # overall >= 4
    # an "and": the clause that failed, with what the patient wrote
    draft["rules"][0]["when"] = "answers.overall >= 1 and contains(answers.comment, '用药')"
    rules = rules_of(client.post(URL, json={"body": draft, "submission_id": seeded["pc"]}))
    assert rules["dissatisfied"]["text"].startswith("未命中："), rules["dissatisfied"]
    assert "「护士很耐心」" in rules["dissatisfied"]["text"]
    assert "「用药」" in rules["dissatisfied"]["text"]
    assert "answers" not in rules["dissatisfied"]["text"]


def test_a_form_the_rule_set_does_not_listen_to_is_named(client: TestClient,
                                                        seeded: dict[str, int]) -> None:
    draft = body()
    draft["forms"] = ["outpatient_satisfaction"]
    draft["filter"] = "event.form == 'outpatient_satisfaction'"
    draft["rules"] = [r for r in draft["rules"] if r["key"] != "medication_guidance"]
    rules = rules_of(client.post(URL, json={"body": draft, "submission_id": seeded["pc"]}))
    with transaction() as session:
        row = store.current(session, "form", "outpatient_satisfaction")
        assert row is not None
        title = row.title["zh-CN"]
    assert all(r["hit"] is False for r in rules.values())
    assert rules["dissatisfied"]["text"] == f"未命中：本规则只看 {title}"


def test_the_form_preview_answers_are_tried(client: TestClient, seeded: dict[str, int]) -> None:
    rules = rules_of(client.post(URL, json={
        "body": body(), "form": "inpatient_satisfaction",
        "inputs": {"overall": ["1"], "comment": ["出院后用药时间记不清"]}}))
    assert rules["dissatisfied"]["hit"] is True
    assert rules["satisfied"]["text"] == f"未命中：{overall_label()} 是 1，条件要 ≥ 4"
    en = client.post(URL, json={"body": body(), "form": "inpatient_satisfaction",
                                "inputs": {"overall": ["5"]}},
                     headers={"Accept-Language": "en"})
    assert rules_of(en)["dissatisfied"]["text"].startswith("No match: ")
