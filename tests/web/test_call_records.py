"""Issue 19, call records: a nurse logs a phone follow-up call on the task page (start in
hospital time, duration, outcome, notes, a recording); the hospital's call system reports calls
through ``POST /api/v1/calls`` and uploads audio with ``PUT /api/v1/calls/{id}/recording``.
Recordings are kept by the app, refused when too big or not audio, served only to users whose
scope holds the patient, and every play and download is audited."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, Task
from careloop.engine.models import AuditRow
from careloop.engine.tasks import Assignee, create_task
from careloop.flows.call_models import CallRecord, CallRecording
from careloop.flows.ingest import create_api_key

from .conftest import UserFactory, login

NOW = datetime.fromisoformat("2026-12-07T10:30:00+08:00")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def wav(frames: int = 80) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128]) * frames)
    return out.getvalue()


@pytest.fixture
def ward(engine: Engine, user_factory: UserFactory) -> Iterator[dict[str, object]]:
    """Cardiology's discharged patient with an open phone follow-up task for its nurses;
    a nurse of orthopaedics; the call system's API key."""
    with frozen_now(NOW), transaction(engine) as session:
        for dept, zh in (("cardiology", "心内科"), ("orthopedics", "骨科")):
            session.add(Department(id=dept, name={"zh-CN": zh, "en": dept}))
        session.add(Patient(id="P7", mrn="MRN-P7", name="李二", phone="13800000007"))
        session.flush()
        session.add(Encounter(id="E7", patient_id="P7", type="inpatient",
                              department_id="cardiology", status="discharged",
                              admitted_at=NOW, discharged_at=NOW))
        session.flush()
        task, _ = create_task(session, title="第3天问卷未作答，请电话随访", kind="phone_followup",
                              assignee=Assignee(None, "nurse", "cardiology"), actor="test",
                              patient_id="P7", encounter_id="E7")
        other, _ = create_task(session, title="整理病历", assignee=Assignee(
            None, "nurse", "cardiology"), actor="test", patient_id="P7", encounter_id="E7")
        key = create_api_key(session, "callcenter")
        ids = {"task": task.id, "todo": other.id, "key": key}
    user_factory("nurse_li", "nurse", "cardiology")
    user_factory("nurse_gu", "nurse", "orthopedics")
    with frozen_now(NOW):
        yield ids


def _log(client: TestClient, csrf: str, task: object, *, recording: tuple[str, bytes, str]
         | None = None, **fields: str) -> object:
    data = {"started_at": "2026-12-07T10:05", "duration_minutes": "3",
            "duration_extra_seconds": "5", "outcome": "reached_ok",
            "notes": "患者恢复良好", "complete": "1", "csrf_token": csrf, **fields}
    return client.post(f"/tasks/{task}/calls", data=data, follow_redirects=False,
                       files={"recording": recording} if recording else None)


def _audits(action: str) -> list[AuditRow]:
    with transaction() as session:
        rows = list(session.scalars(select(AuditRow).where(AuditRow.action == action)).all())
        for row in rows:
            session.expunge(row)
        return rows


def test_the_nurse_logs_the_call_and_plays_the_recording(
        ward: dict[str, object], client: TestClient) -> None:
    csrf = login(client, "nurse_li")
    page = client.get(f"/tasks/{ward['task']}")
    assert page.status_code == 200
    assert "记录本次通话" in page.text and 'enctype="multipart/form-data"' in page.text
    assert "记录本次通话" not in client.get(f"/tasks/{ward['todo']}").text  # not a phone task

    audio = wav()
    answer = _log(client, csrf, ward["task"], recording=("通话.wav", audio, "audio/wav"))
    assert answer.status_code == 303, answer.text  # type: ignore[attr-defined]
    with transaction() as session:
        task = session.get(Task, ward["task"])
        assert task is not None and (task.status, task.outcome) == ("done", "reached_ok")
        call = session.scalars(select(CallRecord)).one()
        assert (call.duration_seconds, call.caller, call.patient_id) == (185, "nurse_li", "P7")
        assert call.started_at.isoformat() == "2026-12-07T02:05:00+00:00"
        call_id = call.id

    # in words, in hospital time: who called, when, how long, the outcome
    sentence = "nurse_li于2026-12-07 10:05致电，通话3分5秒，结果：已联系，情况良好"
    task_page = client.get(f"/tasks/{ward['task']}").text
    assert sentence in task_page and "患者恢复良好" in task_page and "播放录音" in task_page
    assert "记录通话" in task_page  # the task's history
    assert "call_logged" not in task_page and "reached_ok" not in task_page
    patient_page = client.get("/patients/P7").text
    assert "电话随访记录" in patient_page and sentence in patient_page
    english = client.get(f"/tasks/{ward['task']}?lang=en", headers={"Accept-Language": "en"})
    assert "called on 2026-12-07 10:05 for 3 min 5 s" in english.text

    played = client.get(f"/calls/{call_id}/recording")
    assert played.status_code == 200 and played.content == audio
    assert played.headers["content-type"] == "audio/wav"
    assert played.headers["cache-control"] == "no-store"
    assert played.headers["content-disposition"].startswith("inline")
    downloaded = client.get(f"/calls/{call_id}/recording?download=1")
    assert downloaded.headers["content-disposition"].startswith("attachment")
    plays = _audits("patient.recording_play")
    assert [(a.actor, a.patient_id, a.object_id) for a in plays] == [
        ("nurse_li", "P7", str(call_id))]
    assert len(_audits("patient.recording_download")) == 1
    assert _audits("call.logged")[0].details["recording"] is True


def test_a_user_without_the_patient_in_scope_is_refused_the_recording(
        ward: dict[str, object], client: TestClient) -> None:
    csrf = login(client, "nurse_li")
    _log(client, csrf, ward["task"], recording=("a.wav", wav(), "audio/wav"))
    with transaction() as session:
        call_id = session.scalars(select(CallRecord.id)).one()
    client.cookies.clear()
    login(client, "nurse_gu")
    refused = client.get(f"/calls/{call_id}/recording")
    assert refused.status_code == 403
    assert b"RIFF" not in refused.content
    assert "电话随访记录" not in client.get("/patients/P7").text
    assert _audits("patient.recording_play") == []


def test_uploads_too_big_or_not_audio_are_refused_and_nothing_is_written(
        ward: dict[str, object], client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_RECORDING_MAX_MB", "0.01")  # 10 KB
    csrf = login(client, "nurse_li")
    big = _log(client, csrf, ward["task"], recording=("long.wav", wav(20_000), "audio/wav"))
    assert big.status_code == 422  # type: ignore[attr-defined]
    assert "录音文件：文件过大，录音最大 0.01 MB。" in big.text  # type: ignore[attr-defined]
    # a picture named like a recording: the first bytes decide, not the name or the type
    fake = _log(client, csrf, ward["task"], recording=("call.mp3", PNG, "audio/mpeg"))
    assert fake.status_code == 422  # type: ignore[attr-defined]
    assert "录音文件：不是可接受的录音文件" in fake.text  # type: ignore[attr-defined]
    fields = _log(client, csrf, ward["task"], started_at="昨天", outcome="ok",
                  duration_minutes="-3")
    assert fields.status_code == 422  # type: ignore[attr-defined]
    for said in ("通话开始时间：请填写日期和时间", "通话时长（分）：请填写 0 到 240 分钟",
                 "通话结果：请从列表中选择通话结果"):
        assert said in fields.text  # type: ignore[attr-defined]
    later = _log(client, csrf, ward["task"], started_at="2026-12-07T18:00")
    assert "通话开始时间不能晚于现在" in later.text  # type: ignore[attr-defined]
    with transaction() as session:
        assert session.scalars(select(CallRecord)).all() == []
        task = session.get(Task, ward["task"])
        assert task is not None and task.status == "open"
    refused = _log(client, csrf, ward["todo"])
    assert refused.status_code == 409  # type: ignore[attr-defined]


def test_the_call_system_reports_calls_and_uploads_recordings(
        ward: dict[str, object], client: TestClient) -> None:
    key = {"X-API-Key": str(ward["key"])}
    body = {"patient_id": "P7", "started_at": "2026-12-07T10:05:00+08:00",
            "duration_seconds": 125, "outcome": "not_reached", "agent": "8001",
            "call_id": "CC-1", "recording_url": "https://callcenter.hospital.local/rec/1.mp3"}
    assert client.post("/api/v1/calls", json=body).status_code == 401
    stored = client.post("/api/v1/calls", json=body, headers=key)
    assert stored.status_code == 201, stored.text
    call_id = stored.json()["call"]
    assert stored.json()["task_id"] == ward["task"]
    again = client.post("/api/v1/calls", json=body, headers=key)
    assert again.status_code == 200 and again.json()["call"] == call_id
    bad = client.post("/api/v1/calls", headers=key, json={
        "patient_id": "P404", "started_at": "soon", "duration_seconds": 99999, "outcome": "x",
        "recording_url": "ftp://x"})
    assert bad.status_code == 422
    assert [e["path"] for e in bad.json()["errors"]] == [
        "$.patient_id", "$.started_at", "$.duration_seconds", "$.outcome", "$.recording_url"]

    # the nurse's view before the audio arrives: the call system keeps it (a redirect, audited)
    login(client, "nurse_li")
    page = client.get(f"/tasks/{ward['task']}").text
    assert "呼叫中心系统（8001）于2026-12-07 10:05致电，通话2分5秒，结果：未接通" in page
    away = client.get(f"/calls/{call_id}/recording", follow_redirects=False)
    assert away.status_code == 303
    assert away.headers["location"] == "https://callcenter.hospital.local/rec/1.mp3"
    assert _audits("patient.recording_play")[0].details["where"] == "call_system"

    client.cookies.clear()  # the call system has no staff session
    wrong = client.put(f"/api/v1/calls/{call_id}/recording", content=PNG, headers=key)
    assert wrong.status_code == 415 and wrong.json()["errors"][0]["path"] == "$.recording"
    audio = wav()
    put = client.put(f"/api/v1/calls/{call_id}/recording", content=audio,
                     headers={**key, "X-Filename": "1.wav"})
    assert put.status_code == 200, put.text
    with transaction() as session:
        kept = session.scalars(select(CallRecording)).one()
        assert (kept.call_id, kept.size, kept.content_type) == (call_id, len(audio), "audio/wav")
    login(client, "nurse_li")
    assert client.get(f"/calls/{call_id}/recording").content == audio
