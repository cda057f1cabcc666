"""The staff console speaks the hospital's language, in its time (issue 13): the demo-like
journey through the public paths — the HIS discharges a cardiology patient, the day-3 form is
answered dissatisfied, rules make the head nurse's urgent task and the pharmacy's copy — and the
pages people read show labels from the definitions, never codes, and hospital time (+08:00)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import message_text
from careloop.web.app import create_app

from .test_closed_loop import START, _his, _signed_in, _travel, hospital  # noqa: F401

ANSWERED = datetime.fromisoformat("2026-12-04T11:31:00+08:00")


def journey(engine: Engine, key: str) -> TestClient:
    """王建国 is discharged from cardiology, answers the day-3 form with 2 of 5 and unclear
    medication guidance; he had a PCI (tag after_pci)."""
    client = TestClient(create_app())
    _his(client, key, START - timedelta(days=6), "p1", "patient.upserted", {
        "patient_id": "P1", "mrn": "M1", "name": "王建国", "gender": "male",
        "birth_date": "1958-04-02", "phone": "138 0000 0001", "id_number": "11010119580402123x"})
    _his(client, key, START - timedelta(days=5), "a1", "encounter.admitted", {
        "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
        "department_id": "cardiology", "ward_id": "cardio_w1",
        "admitted_at": (START - timedelta(days=5)).isoformat(), "diagnoses": ["I10"],
        "procedures": ["PCI"]})
    _his(client, key, START, "d1", "encounter.discharged", {
        "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
        "department_id": "cardiology", "ward_id": "cardio_w1",
        "discharged_at": START.isoformat(), "diagnoses": ["I10"], "procedures": ["PCI"]})
    day3 = datetime.fromisoformat("2026-12-04T09:31:00+08:00")
    _travel(engine, day3)
    with transaction(engine) as session:
        sent = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "discharge_care_day3")).one()
        link = re.search(r"/f/[A-Za-z0-9_\-]+", message_text(session, sent)[1])
    assert link is not None
    with frozen_now(ANSWERED):
        answered = client.post(link.group(0), data={
            "_page": "0", "_action": "submit", "recovery": "poor", "symptoms": "头晕",
            "medication_clear": "no", "overall": "2", "comment": "用药指导不清楚"})
        drain(engine)  # the serving process's dispatcher, right after the page returned
    assert answered.status_code == 200, answered.text
    return client


CODES = ("pending_dissatisfied", "after_pci", "feedback_medication_guidance", "web.",
         "label.", "None", "null", "followup_routing", "discharge_day3", "head_nurse",
         "form.submitted", "{&#39;", "{'rule'", "csat_top_box", "rule:")


def _no_codes(html: str, *extra: str) -> None:
    body = html[html.index("<main"):]
    body = re.sub(r'(href|action|value|name|id|class|data-[a-z]+|datetime)="[^"]*"', "", body)
    for code in (*CODES, *extra):
        at = body.find(code)
        assert at < 0, f"{code!r} shown: ...{body[max(at - 200, 0):at + 100]}"


def _task_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-task="(\d+)"', html)]


def test_inbox_and_task_page_read_as_words_in_hospital_time(
        engine: Engine, hospital: dict[str, str]) -> None:  # noqa: F811
    client = journey(engine, hospital["key"])
    with frozen_now(ANSWERED + timedelta(minutes=5)):
        hn, _ = _signed_in(client, "hn")
        inbox = hn.get("/inbox")
        assert inbox.status_code == 200
        (task_id,) = _task_ids(inbox.text)
        row = inbox.text[inbox.text.index(f'data-task="{task_id}"'):]
        row = row[:row.index("</tr>")]
        # the patient, the assignee, the source, and the due time in Beijing time (24 h after
        # the answer at 11:31), not UTC (03:31)
        assert "王建国" in row and "M1" in row and ">hn<" in row and "规则" in row
        assert '<time datetime="2026-12-05T11:31:00+08:00">2026-12-05 11:31</time>' in row
        _no_codes(inbox.text)
        home = hn.get("/")
        assert "2026-12-05 11:31" in home.text and "03:31" not in home.text
        _no_codes(home.text)

        page = hn.get(f"/tasks/{task_id}")
        assert page.status_code == 200
        history = page.text[page.text.index('id="task-history"'):]
        history = history[:history.index("</ul>")]
        assert "规则「满意度回访分流 · 不满意」" in history and "创建" in history
        assert "2026-12-04 11:31" in history
        _no_codes(page.text, "created", "urgent")

        # the API keeps UTC ISO instants and adds hospital-time display fields
        api = hn.get(f"/api/v1/tasks/{task_id}").json()
        assert api["due_at"] == "2026-12-05T03:31:00+00:00"
        assert api["due_at_display"] == "2026-12-05 11:31"
        listed = hn.get("/api/v1/tasks?view=mine").json()
        assert listed[0]["due_at_display"] == "2026-12-05 11:31"
        assert listed[0]["patient_name"] == "王建国"

        # English: the same page in English words, the same hospital time
        hn.cookies.set("careloop_locale", "en")
        english = hn.get(f"/tasks/{task_id}", headers={"Accept-Language": "en"})
        if "处理记录" in english.text:  # the locale is a session choice: switch it
            from .conftest import csrf_from

            hn.post("/locale", data={"locale": "en", "next": f"/tasks/{task_id}",
                                      "csrf_token": csrf_from(english.text)})
            english = hn.get(f"/tasks/{task_id}")
        assert "Rule “Follow-up routing · Dissatisfied”" in english.text
        assert "Choose…" in english.text and "2026-12-05 11:31" in english.text
        assert "Created" in english.text
        _no_codes(english.text)


def test_patient_360_reads_as_a_clinician_reads_it(
        engine: Engine, hospital: dict[str, str]) -> None:  # noqa: F811
    client = journey(engine, hospital["key"])
    key = hospital["key"]
    # the HIS sends a clinic reading; the patient reports one on the home-BP form's path
    _his(client, key, ANSWERED + timedelta(hours=1), "r-his-1", "reading.recorded", {
        "reading_id": "HIS-BP-1", "patient_id": "P1", "type": "blood_pressure",
        "value": {"systolic": 150, "diastolic": 92},
        "measured_at": (ANSWERED + timedelta(hours=1)).isoformat()})
    _his(client, key, ANSWERED + timedelta(hours=2), "r-his-2", "reading.recorded", {
        "reading_id": "HIS-GLU-1", "patient_id": "P1", "type": "glucose",
        "value": {"value": 8.2, "unit": "mmol/L"},
        "measured_at": (ANSWERED + timedelta(hours=2)).isoformat()})
    with frozen_now(ANSWERED + timedelta(hours=3)):
        hn, _ = _signed_in(client, "hn")
        page = hn.get("/patients/P1")
    assert page.status_code == 200
    html = page.text
    # tags, form titles, statuses, runs and traces in words
    assert "PCI术后" in html and "反馈：用药指导" in html and "不满意" in html
    assert "出院第3天随访" in html and "待处理-不满意" in html
    assert "出院随访：已完成" in html and "冠脉支架术后随访：进行中" in html
    assert "规则「不满意」命中：" in html and " 2 &lt; 3 → 为心内科护士长创建紧急待办" in html
    # messages with their text, template titles, channel words; the patient's link shown in
    # part (it must not open the patient's page for staff), never as its stored placeholder
    assert "出院第3天关怀" in html and "请花1分钟填写康复情况问卷" in html and "微信" in html
    assert re.search(r"/f/[A-Za-z0-9_\-]{4}…", html) and "{{link:" not in html
    assert 'class="message-link"' not in html
    # BP and glucose charts with axes, dates, targets, a legend naming the HIS as a source
    assert '<svg class="bp-chart"' in html and '<svg class="glucose-chart"' in html
    assert "mmHg" in html and "mmol/L" in html and "2026-12-04" in html
    assert 'class="target"' in html and "医院信息系统" in html and "收缩压" in html
    assert "150/92 mmHg" in html
    # a printable stage summary
    assert "data-print" in html and "打印阶段小结" in html
    _no_codes(html, "reading.recorded", "blood_pressure", "discharge_care_day3", "{{")


def test_score_trend_per_instrument_with_bands(
        engine: Engine, hospital: dict[str, str]) -> None:  # noqa: F811
    """Two PHQ-9 answers entered by staff: the trend chart names the instrument, the score and
    its bands, and the score shows at its precision."""
    from careloop.engine.domain import Patient

    client = TestClient(create_app())
    _his(client, hospital["key"], START, "p9", "patient.upserted", {
        "patient_id": "P9", "mrn": "M9", "name": "赵敏", "gender": "female",
        "birth_date": "1990-01-01", "phone": "13800000009"})
    from careloop.forms.runtime import submit

    answers_low = {f"q{i}": "0" for i in range(1, 10)}
    answers_high = {f"q{i}": "2" for i in range(1, 10)}
    with transaction(engine) as session:
        assert session.get(Patient, "P9") is not None
    for at, answers in ((START, answers_low), (START + timedelta(days=14), answers_high)):
        with frozen_now(at), transaction(engine) as session:
            submit(session, form_key="phq9", answers=answers, patient_id="P9", channel="phone")
    with frozen_now(START + timedelta(days=15)):
        hn, _ = _signed_in(client, "px")
        html = hn.get("/patients/P9").text
    trend = html[html.index("评分趋势"):]
    assert "患者健康问卷（PHQ-9） · 总分" in trend
    assert "无或极轻微" in trend and 'class="band"' in trend
    assert "最近一次: 18" in trend
    _no_codes(html, "phq9", "minimal")


def test_admin_pages_name_permissions_and_audit_actions(
        engine: Engine, hospital: dict[str, str], user_factory: object) -> None:  # noqa: F811
    assert callable(user_factory)
    user_factory("admin", "security_admin", None)
    user_factory("aud", "auditor", None)
    client = journey(engine, hospital["key"])
    with frozen_now(ANSWERED + timedelta(minutes=5)):
        hn, _ = _signed_in(client, "hn")
        assert hn.get("/patients/P1").status_code == 200
        admin, _ = _signed_in(client, "admin")
        roles = admin.get("/admin/roles")
        assert roles.status_code == 200
        assert "编辑应用（可视化设计器）" in roles.text and "web.perm" not in roles.text
        auditor, _ = _signed_in(client, "aud")
        audit = auditor.get("/admin/audit")
        assert audit.status_code == 200, audit.text[audit.text.find("<main"):][:600]
    body = audit.text[audit.text.index("<tbody>"):]
    assert "查看患者" in body and "护士长" in body
    assert ">patient.view<" not in body
    # outcomes and the rules that acted in words; the code kept for filtering (title, data-)
    assert ">成功<" in body and ">success<" not in body
    assert "规则「满意度回访分流 · 不满意」" in body and ">rule:followup_routing" not in body
    assert re.search(r'<time datetime="2026-12-04T11:36:00\+08:00">2026-12-04 11:36:00</time>',
                     body)


def test_display_rounds_and_writes_hospital_time() -> None:
    from datetime import UTC

    from careloop.web.display import local_time, number

    assert number(1.6666666666666667) == "1.7" and number(1.0) == "1"
    assert number(33.333, "percent") == "33.3%" and number(4.0, "count") == "4"
    assert number(2.345, precision=2) == "2.35"
    assert local_time(datetime(2026, 12, 31, 17, 0, tzinfo=UTC)) == "2027-01-01 01:00"
    assert local_time("2026-12-04T01:31:00+00:00", "iso") == "2026-12-04T09:31:00+08:00"
    assert local_time(None) == "" and local_time("not a time") == ""


def test_every_tag_the_shipped_apps_and_demo_use_has_words() -> None:
    """A tag the definitions test or set, or the demo's HIS sends, reads as words in both
    languages — not its code with the underscores taken out ("chronic path")."""
    import random
    from pathlib import Path

    from careloop.web.demo import DEPARTMENTS, _diagnoses
    from careloop.web.display import Display

    root = Path(__file__).resolve().parents[2]
    used: set[str] = {"aged_70_plus", "chronic_path"}  # the demo's own, beside its diagnoses
    for path in (root / "app_definitions").rglob("*.yaml"):
        text = path.read_text("utf-8")
        used |= set(re.findall(r"tags, *'([a-z0-9_]+)'", text))
        used |= set(re.findall(r"\btag: *['\"]?([a-z0-9_]+)", text))
    rng = random.Random(1)
    for dept in DEPARTMENTS:
        for _ in range(40):
            used |= set(_diagnoses(rng, dept.code)[2])
    assert {"chronic_path", "after_pci", "dissatisfied", "postpartum"} <= used
    for locale in ("zh-CN", "en"):
        unworded = sorted(tag for tag in used if Display(locale).label("tag", tag)
                          in (tag, tag.replace("_", " ")))
        assert not unworded, (locale, unworded)


def test_every_task_kind_reads_as_words() -> None:
    """The inbox's source column names a task's kind: every kind the product makes or the shipped
    definitions name reads as words ("流程 · 电话随访", not "流程 · phone followup")."""
    from pathlib import Path

    from careloop.flows.health.packages import TASK_KIND
    from careloop.web.display import Display

    root = Path(__file__).resolve().parents[2]
    kinds = {"todo", "cc", "approval", "followup_call", "consult", TASK_KIND}
    for path in (root / "app_definitions").rglob("*.yaml"):
        text = path.read_text("utf-8")
        kinds |= set(re.findall(r"\btask_kind: *([a-z_]+)", text))
        if "/rules/" in path.as_posix():
            kinds |= set(re.findall(r"\bkind: *([a-z_]+)", text)) - {
                "ruleset", "decision_table", "dictionary", "flow"}
    assert {"phone_followup", "complaint_response"} <= kinds
    for locale in ("zh-CN", "en"):
        unworded = sorted(k for k in kinds if Display(locale).label("task_kind", k)
                          in (k, k.replace("_", " ")))
        assert not unworded, (locale, unworded)


def test_a_rule_action_without_catalogue_words_reads_as_its_action_type_title() -> None:
    """A trace names each action in words: an action type the message catalogue does not word
    (send_education, or a plugin's) reads as the title its ``ActionSpec`` gives itself."""
    from careloop.web.display import Display, action_sentence

    assert action_sentence(Display("zh-CN"), {"do": "send_education"}) == "推送健康宣教"
    assert action_sentence(Display("en"), {"do": "send_education"}) == "Send health education"
    assert action_sentence(Display("zh-CN"), {"do": "tag", "result": {"tag": "after_pci"}}
                           ) == "标签：PCI术后"


def test_every_audit_action_the_code_records_has_words() -> None:
    """The auditor's page names each action in words: every action string the code passes to
    ``record(request, …)`` or as ``action=`` has zh-CN and en words (``web.label.audit.*``)."""
    from pathlib import Path

    from careloop.engine.i18n import catalogue

    root = Path(__file__).resolve().parents[2]
    recorded: set[str] = set()
    for folder in ("engine", "forms", "flows", "rules", "reports", "web"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text("utf-8")
            recorded |= set(re.findall(r'\brecord\((?:request|req)[^)]{0,80}?"([a-z_]+\.[a-z_]+)"',
                                       text))
            recorded |= set(re.findall(r'\baction="([a-z_]+\.[a-z_]+)"', text))
    assert {"patient.view", "consult.list", "people_report.view"} <= recorded
    for locale in ("zh-CN", "en"):
        words = catalogue(locale)
        unworded = sorted(a for a in recorded if f"web.label.audit.{a}" not in words)
        assert not unworded, (locale, unworded)
