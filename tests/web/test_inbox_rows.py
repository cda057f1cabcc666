"""What a ward nurse reads in each row of the inbox (issue 18, the inbox's CPU): the page reads its
rows, their departments' names and its words more cheaply (web/console.inbox_page, the ``label``
filter), and every cell stays what it was — names, the colleague holding a task, roles and
departments in words, the source and kind, priority, due time in hospital time, SLA, status, in
both languages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from careloop.engine import tasks as task_engine
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.web.render import environment

from ..statements import counted
from .conftest import login, make_user

NOW = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


def _ward() -> None:
    with transaction() as session:
        session.add(Department(id="cardio", name={"zh-CN": "心内科", "en": "Cardiology"}))
        session.flush()
        session.add(Department(id="ward_a", name={"zh-CN": "心内一病区", "en": "Ward A"},
                               kind="ward", parent_id="cardio"))
    colleague = make_user("nurse_b", "nurse", "cardio")
    make_user("nurse_a", "nurse", "cardio")
    Assignee = task_engine.Assignee
    made = [  # title, patient, assignee, priority, due, kind, source, status
        ("回访 <一>", "p0", Assignee(colleague, None, "cardio"), "urgent", timedelta(hours=1),
         "phone_followup", "rule", "open"),
        ("回访二", "p1", Assignee(None, "nurse", "ward_a"), "high", timedelta(hours=-2),
         "todo", "flow", "in_progress"),
        ("回访三", "p2", Assignee(None, "nurse", "cardio"), "normal", None, "followup", None,
         "open"),
        ("科室事务", None, Assignee(None, "nurse", "cardio"), "low", timedelta(days=2),
         "todo", "manual", "open"),
    ]
    with transaction() as session:
        for n in range(3):
            session.add(Patient(id=f"p{n}", mrn=f"MRN{n:05d}", name=f"患者{n}",
                                phone="13800138000"))
            session.flush()
            session.add(Encounter(id=f"e{n}", patient_id=f"p{n}", type="inpatient",
                                  department_id="cardio", ward_id="ward_a",
                                  status="discharged", discharged_at=NOW))
            session.flush()
        for title, patient, held, priority, due, kind, source, status in made:
            task, _ = task_engine.create_task(
                session, title=title, patient_id=patient,
                encounter_id=f"e{patient[1:]}" if patient else None, actor="test",
                assignee=held, priority=priority, due_at=NOW + due if due else None,
                kind=kind, source_type=source)
            task.status = status


def _rows(html: str) -> list[list[str]]:
    """Each row's cells as text (tags dropped, ``<time>`` kept as its datetime and text)."""
    rows = []
    for row in re.findall(r'<tr data-task="\d+">(.*?)</tr>', html, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        rows.append([re.sub(r"<(?!time|/time)[^>]+>", "", c).strip() for c in cells])
    return rows


ZH = [
    ["回访二", "患者1 MRN00001", "护士 · 心内一病区", "流程",
     "高", '<time datetime="2026-12-04T07:00:00+08:00">2026-12-04 07:00</time>', "已逾期",
     "处理中"],
    ["回访 &lt;一&gt;", "患者0 MRN00000", "nurse_b", "规则 · 电话随访", "紧急",
     '<time datetime="2026-12-04T10:00:00+08:00">2026-12-04 10:00</time>', "即将到期",
     "待处理"],
    ["科室事务", "", "护士 · 心内科", "人工", "低",
     '<time datetime="2026-12-06T09:00:00+08:00">2026-12-06 09:00</time>', "正常", "待处理"],
    ["回访三", "患者2 MRN00002", "护士 · 心内科", "· 随访", "普通", "", "无时限", "待处理"],
]


def test_inbox_rows_read_as_before(client: TestClient, engine: Engine) -> None:
    _ward()
    with frozen_now(NOW):
        login(client, "nurse_a")
        zh = client.get("/inbox?view=department")
        client.cookies.set("careloop_locale", "en")
        en = client.get("/inbox?view=department")
    assert zh.status_code == en.status_code == 200
    found = _rows(zh.text)
    assert found == ZH
    english = _rows(en.text)
    assert [r[1:3] for r in english] == [
        ["患者1 MRN00001", "Nurse · Ward A"], ["患者0 MRN00000", "nurse_b"],
        ["", "Nurse · Cardiology"], ["患者2 MRN00002", "Nurse · Cardiology"]]
    assert [r[3:5] for r in english] == [
        ["Flow", "High"], ["Rule · Phone follow-up", "Urgent"], ["Manual", "Low"],
        ["· Follow-up", "Normal"]]
    assert [r[5] for r in english] == [r[5] for r in ZH]  # hospital time in both languages
    assert '<a href="/tasks/' in zh.text  # each title opens its task


def test_the_label_filter_reads_as_the_label_global() -> None:
    page = environment().from_string(
        '{{ label("priority", p) }}|{{ p | label("priority") }}|{{ none | label("sla") }}|'
        '{{ d | label("department") }}')
    from careloop.web.display import Display

    display = Display("en", departments={"cardio": {"zh-CN": "心内科", "en": "Cardiology"}})
    assert page.render(label=display.label, display=display, p="urgent", none=None,
                       d="cardio") == "Urgent|Urgent||Cardiology"
    # without a page's Display (a template rendered outside a page): the locale's words
    assert environment().from_string('{{ "urgent" | label("priority") }}').render(
        locale="zh-CN") == "紧急"


def test_inbox_page_reads_its_departments_with_its_rows(client: TestClient,
                                                        engine: Engine) -> None:
    """The page's list statement also reads its rows' departments' names: no statement reads
    every department for the labels."""
    _ward()
    with frozen_now(NOW):
        login(client, "nurse_a")
        assert client.get("/inbox?view=department").status_code == 200
        with counted(engine) as counter:
            page = client.get("/inbox?view=department")
    assert "心内一病区" in page.text
    alone = [s for s in counter.statements if s.lstrip().startswith("SELECT departments.")]
    assert alone == [], alone
