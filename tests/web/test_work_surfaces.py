"""Work surfaces (issue 13, part 3): the task page shows where the task came from and the
patient's recent history, the outcome has no preset, the inbox filters and sorts, patients are
found by name, MRN, phone, ID number and tag (numbers by POST, never in a URL), and the nurse
holding a phone follow-up may reveal that patient's phone from the task (audited)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Task
from careloop.engine.models import AuditRow
from careloop.web.app import create_app

from .conftest import csrf_from
from .test_closed_loop import START, _his, _signed_in, _travel, hospital  # noqa: F401
from .test_pages_language import ANSWERED, journey


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-task="(\d+)"', html)]


def test_task_page_shows_the_answers_it_came_from_and_no_preset_outcome(
        engine: Engine, hospital: dict[str, str]) -> None:  # noqa: F811
    client = journey(engine, hospital["key"])
    with frozen_now(ANSWERED + timedelta(minutes=5)):
        hn, _ = _signed_in(client, "hn")
        (task_id,) = _ids(hn.get("/inbox").text)
        page = hn.get(f"/tasks/{task_id}").text
    source = page[page.index('id="task-source"'):]
    source = source[:source.index("</section>")]
    # the patient's answers with the form version's labels, and a link to the submission
    assert re.search(r'<a href="/submissions/\d+" id="source-link">出院第3天随访', source)
    assert "出院带药的用法您清楚吗？</th><td>否" in source
    assert "用药指导不清楚" in source and "不好，有新的不适" in source
    # the patient's recent history: the copy to the pharmacy is another of their tasks
    recent = page[page.index('id="recent"'):]
    assert "抄送：患者反映用药指导不清楚" in recent
    # no outcome chosen for the nurse: a required "choose…" comes first
    select_html = page[page.index('<select name="outcome"'):]
    select_html = select_html[:select_html.index("</select>")]
    assert '<option value="" selected disabled>请选择…</option>' in select_html
    assert select_html.count("selected") == 1
    # completing without choosing is refused, nothing recorded
    with frozen_now(ANSWERED + timedelta(minutes=6)):
        refused = hn.post(f"/tasks/{task_id}/complete",
                          data={"outcome": "", "csrf_token": csrf_from(page)})
    assert refused.status_code in (400, 409, 422)
    with transaction(engine) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.status == "open"


def test_inbox_filters_and_sorts(engine: Engine, hospital: dict[str, str],  # noqa: F811
                                 user_factory: Callable[..., object]) -> None:
    client = journey(engine, hospital["key"])
    with frozen_now(ANSWERED + timedelta(minutes=5)):
        hn, _ = _signed_in(client, "hn")
        (task_id,) = _ids(hn.get("/inbox?view=department").text)
        assert _ids(hn.get("/inbox?view=department&priority=urgent").text) == [task_id]
        assert _ids(hn.get("/inbox?view=department&priority=low").text) == []
        assert _ids(hn.get("/inbox?view=department&assignee=me").text) == [task_id]
        assert _ids(hn.get("/inbox?view=department&assignee=queue").text) == []
        assert _ids(hn.get("/inbox?view=department&due=today").text) == []
        assert _ids(hn.get("/inbox?view=department&due=week").text) == [task_id]
        assert _ids(hn.get("/inbox?view=department&status=done").text) == []
        assert _ids(hn.get("/inbox?view=department&sort=priority").text) == [task_id]
        # junk in a filter is ignored, not an error
        assert hn.get("/inbox?view=x&sort=drop&due=1;--&assignee=zz").status_code == 200
    # the next day the task is due today
    with frozen_now(ANSWERED + timedelta(hours=20)):
        hn, _ = _signed_in(client, "hn")
        assert _ids(hn.get("/inbox?view=department&due=today").text) == [task_id]


def test_patients_found_by_name_mrn_phone_id_and_tag(
        engine: Engine, hospital: dict[str, str]) -> None:  # noqa: F811
    client = journey(engine, hospital["key"])
    with frozen_now(ANSWERED + timedelta(minutes=5)):
        hn, _ = _signed_in(client, "hn")
        assert 'data-patient="P1"' in hn.get("/patients?q=建国").text
        assert 'data-patient="P1"' in hn.get("/patients?q=M1").text
        assert 'data-patient="P1"' not in hn.get("/patients?q=李").text
        by_tag = hn.get("/patients?tag=after_pci").text
        assert 'data-patient="P1"' in by_tag and "PCI术后" in by_tag
        assert 'data-patient="P1"' not in hn.get("/patients?tag=satisfied").text
        token = csrf_from(hn.get("/patients").text)
        # the stored number is "138 0000 0001": typed without spaces, with +86, it is found
        for typed in ("13800000001", "+86 138-0000-0001"):
            found = hn.post("/patients", data={"phone": typed, "csrf_token": token})
            assert 'data-patient="P1"' in found.text, typed
        # a prefix is not a phone number
        partial = hn.post("/patients", data={"phone": "1380000", "csrf_token": token})
        assert 'data-patient="P1"' not in partial.text
        found = hn.post("/patients", data={"id_number": "11010119580402123X",
                                           "csrf_token": token})
        assert 'data-patient="P1"' in found.text
        # the numbers are never echoed into the page or a URL, and the audit has no number
        assert "13800000001" not in found.text and "11010119580402123" not in found.text
    with transaction(engine) as session:
        rows = session.scalars(select(AuditRow).where(AuditRow.action == "patient.search")
                               .order_by(AuditRow.id)).all()
        assert [r.details["fields"] for r in rows] == [["phone"], ["phone"], ["phone"],
                                                      ["id_number"]]
        assert all("138" not in str(r.details) for r in rows)


def test_nurse_with_a_phone_followup_reveals_that_patients_phone(
        engine: Engine, hospital: dict[str, str],  # noqa: F811
        user_factory: Callable[..., object]) -> None:
    """A 76-year-old's day-7 phone follow-up goes to his responsible nurse, who holds no reveal
    permission: from the task she sees the number (audited, the task as the reason); another
    nurse cannot."""
    user_factory("nurse_li", "nurse", "cardiology")
    user_factory("nurse_zhou", "nurse", "cardiology")
    client = TestClient(create_app())
    key = hospital["key"]
    _his(client, key, START - timedelta(days=6), "p7", "patient.upserted", {
        "patient_id": "P7", "mrn": "M7", "name": "孙大爷", "gender": "male",
        "birth_date": "1950-03-01", "phone": "13900000007"})
    _his(client, key, START, "d7", "encounter.discharged", {
        "encounter_id": "E7", "patient_id": "P7", "type": "inpatient",
        "department_id": "cardiology", "responsible_nurse": "nurse_li",
        "admitted_at": (START - timedelta(days=4)).isoformat(),
        "discharged_at": START.isoformat(), "diagnoses": ["I10"]})
    day7 = START + timedelta(days=7)
    _travel(engine, day7)
    with transaction(engine) as session:
        task = session.scalars(select(Task).where(Task.kind == "phone_followup",
                                                  Task.patient_id == "P7")).one()
        task_id = task.id
    with frozen_now(day7 + timedelta(minutes=5)):
        li, _ = _signed_in(client, "nurse_li")
        page = li.get(f"/tasks/{task_id}")
        assert page.status_code == 200
        assert "139****0007" in page.text and 'id="reveal-phone-form"' in page.text
        revealed = li.post(f"/tasks/{task_id}/reveal-phone",
                           data={"csrf_token": csrf_from(page.text)})
        assert revealed.status_code == 200
        assert '<dd id="patient-phone">13900000007</dd>' in revealed.text
        # the patient page's reveal is still not hers
        assert li.post("/patients/P7/reveal", data={"reason": "x",
                                                    "csrf_token": csrf_from(page.text)}
                       ).status_code == 403
        zhou, _ = _signed_in(client, "nurse_zhou")
        other = zhou.get(f"/tasks/{task_id}")
        if other.status_code == 200:
            assert 'id="reveal-phone-form"' not in other.text
            denied = zhou.post(f"/tasks/{task_id}/reveal-phone",
                               data={"csrf_token": csrf_from(other.text)})
            assert denied.status_code == 403
    with transaction(engine) as session:
        rows = session.scalars(select(AuditRow).where(AuditRow.action == "patient.reveal")
                               .order_by(AuditRow.id)).all()
        done = [r for r in rows if r.outcome == "success"]
        assert [(r.actor, r.patient_id, r.details["fields"]) for r in done] == [
            ("nurse_li", "P7", ["phone"])]
        assert done[0].details["reason"] == "电话随访：出院第7天电话随访"
