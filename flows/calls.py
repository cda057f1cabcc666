"""Call records of phone follow-up tasks: the structured call log and the recording kept by the
app (tables in :mod:`careloop.flows.call_models`).

What a nurse types on the task page, or the hospital's call system posts, is checked as a whole
and every problem is returned with the field it is about (nothing is written then)::

    >>> from datetime import datetime
    >>> call, problems = parse_call({"started_at": "2026-12-07T10:05", "duration_seconds": "185",
    ...                              "outcome": "reached_ok", "notes": "恢复良好"})
    >>> call.started_at.isoformat(), call.duration_seconds, problems
    ('2026-12-07T02:05:00+00:00', 185, [])
    >>> parse_call({"started_at": "yesterday", "duration_seconds": "-1", "outcome": "ok"})[1]
    ... # doctest: +NORMALIZE_WHITESPACE
    [Problem(path='started_at', key='calls.error.started_at', params={}),
     Problem(path='duration_seconds', key='calls.error.duration', params={'max': 240}),
     Problem(path='outcome', key='calls.error.outcome', params={})]

A time without an offset is the hospital's local time (the page's date-time input); the call
system may send an offset. A recording's type is sniffed from its first bytes (the name and the
claimed content type are not trusted); too big, empty or not audio is refused with the limit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.domain import Task
from careloop.engine.errors import CareloopError
from careloop.engine.tasks import OUTCOMES, complete_task
from careloop.flows.call_models import CallRecord, CallRecording

CALL_OUTCOMES = OUTCOMES  # the console's list, labelled ``web.outcome.<code>``
MAX_MINUTES = 240  # a follow-up call longer than four hours is a typing mistake
MAX_NOTES = 2000
DEFAULT_MAX_RECORDING_MB = 20
_GRACE = timedelta(minutes=5)  # a phone's clock a little ahead of the server's
# Audio the app accepts, recognised by its first bytes: (content type, test on the head).
AUDIO_TYPES: tuple[tuple[str, str, Any], ...] = (
    ("audio/mpeg", "mp3", lambda h: h.startswith(b"ID3") or (len(h) > 1 and h[0] == 0xFF
                                                           and h[1] & 0xE0 == 0xE0)),
    ("audio/wav", "wav", lambda h: h.startswith(b"RIFF") and h[8:12] == b"WAVE"),
    ("audio/mp4", "m4a", lambda h: h[4:8] == b"ftyp"),
    ("audio/amr", "amr", lambda h: h.startswith(b"#!AMR")),
    ("audio/ogg", "ogg", lambda h: h.startswith(b"OggS")),
)


class CallRefused(CareloopError):
    """Raised with every problem of a call or a recording (nothing was written)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.key}" for p in problems))
        self.problems = problems


class NotAPhoneTask(CareloopError):
    """Raised when a call is logged on a task that is not a phone follow-up (or is cancelled)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One refused value: the field's path, the i18n key of the message, its parameters."""

    path: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallInput:
    """A checked call log (times aware UTC)."""

    started_at: datetime
    duration_seconds: int
    outcome: str
    notes: str | None


@dataclass(frozen=True, slots=True)
class Audio:
    """A checked recording."""

    filename: str
    content_type: str
    data: bytes


def max_recording_bytes() -> int:
    """The largest recording kept: ``CARELOOP_RECORDING_MAX_MB`` (default 20 MB)."""
    raw = os.environ.get("CARELOOP_RECORDING_MAX_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MAX_RECORDING_MB
    except ValueError:
        mb = DEFAULT_MAX_RECORDING_MB
    return max(1, int(mb * 1024 * 1024))


def limit_mb() -> str:
    """The recording limit as people read it: ``"20"``, ``"0.5"``."""
    return f"{max_recording_bytes() / 1024 / 1024:.2f}".rstrip("0").rstrip(".")


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value or "").strip())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=hospital_tz())
    return parsed.astimezone(UTC)


def _duration(fields: Mapping[str, Any]) -> int | None:
    """``duration_seconds``, or the page's ``duration_minutes`` + ``duration_extra_seconds``."""
    try:
        if fields.get("duration_seconds") not in (None, ""):
            return int(str(fields["duration_seconds"]).strip())
        minutes = int(str(fields.get("duration_minutes") or "0").strip() or "0")
        seconds = int(str(fields.get("duration_extra_seconds") or "0").strip() or "0")
    except ValueError:
        return None
    if minutes < 0 or not 0 <= seconds < 60:
        return None
    return minutes * 60 + seconds


def parse_call(fields: Mapping[str, Any], *,
               now: datetime | None = None) -> tuple[CallInput | None, list[Problem]]:
    """Check a call log; returns the call, or None and every problem by field path."""
    problems: list[Problem] = []
    started = _instant(fields.get("started_at"))
    if started is None:
        problems.append(Problem("started_at", "calls.error.started_at"))
    elif started > (now or now_utc()).replace(microsecond=0) + _GRACE:
        problems.append(Problem("started_at", "calls.error.future"))
    seconds = _duration(fields)
    if seconds is None or not 0 <= seconds <= MAX_MINUTES * 60:
        path = ("duration_seconds" if fields.get("duration_seconds") not in (None, "")
                else "duration_minutes")
        problems.append(Problem(path, "calls.error.duration", {"max": MAX_MINUTES}))
    outcome = str(fields.get("outcome") or "")
    if outcome not in CALL_OUTCOMES:
        problems.append(Problem("outcome", "calls.error.outcome"))
    notes = str(fields.get("notes") or "").strip()
    if len(notes) > MAX_NOTES:
        problems.append(Problem("notes", "calls.error.notes", {"max": MAX_NOTES}))
    if problems or started is None or seconds is None:
        return None, problems
    return CallInput(started, seconds, outcome, notes or None), []


def check_recording(filename: str, data: bytes, *, path: str = "recording") -> Audio:
    """Check an uploaded recording; raises :class:`CallRefused` (too big, empty, not audio)."""
    limit = max_recording_bytes()
    if not data:
        raise CallRefused([Problem(path, "calls.error.recording_empty")])
    if len(data) > limit:
        raise CallRefused([Problem(path, "calls.error.recording_too_big",
                                   {"max_mb": limit_mb()})])
    head = data[:16]
    for content_type, ext, test in AUDIO_TYPES:
        if test(head):
            name = PurePath(filename.replace("\\", "/")).name[:150] or f"recording.{ext}"
            return Audio(name, content_type, data)
    raise CallRefused([Problem(path, "calls.error.recording_type",
                               {"types": ", ".join(t[1] for t in AUDIO_TYPES)})])


def phone_task(session: Session, task_id: int) -> Task:
    """The phone follow-up task a call is logged on; raises :class:`NotAPhoneTask`."""
    task = session.get(Task, task_id)
    if task is None or task.kind != "phone_followup" or task.status == "cancelled":
        raise NotAPhoneTask(f"task {task_id} is not a phone follow-up")
    return task


def log_call(session: Session, task: Task, call: CallInput, *, caller: str,
             source: str = "console", audio: Audio | None = None,
             recording_url: str | None = None, external_id: str | None = None,
             complete: bool = False) -> CallRecord:
    """Store one call of ``task`` (and its recording); with ``complete`` an open task is closed
    with the call's outcome and notes (its definition's retry then applies)."""
    record = CallRecord(task_id=task.id, patient_id=task.patient_id, started_at=call.started_at,
                        duration_seconds=call.duration_seconds, outcome=call.outcome,
                        notes=call.notes, caller=caller[:128], source=source,
                        recording_url=recording_url, external_id=external_id,
                        created_at=now_utc())
    session.add(record)
    session.flush()
    if audio is not None:
        attach_recording(session, record, audio)
    from careloop.engine.tasks import add_history

    add_history(session, task, caller, "call_logged",
                {"outcome": call.outcome, "call_id": record.id})
    if complete and task.status in ("open", "in_progress"):
        complete_task(session, task, actor=caller, outcome=call.outcome, notes=call.notes)
    session.flush()
    return record


def attach_recording(session: Session, record: CallRecord, audio: Audio) -> CallRecording:
    """Keep ``audio`` as the call's recording (a call has one; a second replaces it)."""
    old = session.scalars(select(CallRecording).where(
        CallRecording.call_id == record.id)).first()
    if old is not None:
        session.delete(old)
        session.flush()
    row = CallRecording(call_id=record.id, content_type=audio.content_type,
                        size=len(audio.data), sha256=hashlib.sha256(audio.data).hexdigest(),
                        filename=audio.filename, content=audio.data, created_at=now_utc())
    session.add(row)
    session.flush()
    return row


def recording_of(session: Session, call_id: int) -> CallRecording | None:
    return session.scalars(select(CallRecording).where(
        CallRecording.call_id == call_id)).first()


def calls_of_task(session: Session, task_id: int) -> list[CallRecord]:
    return list(session.scalars(select(CallRecord).where(CallRecord.task_id == task_id)
                                .order_by(CallRecord.started_at, CallRecord.id)).all())


def calls_of_patient(session: Session, patient_id: str, limit: int = 50) -> list[CallRecord]:
    return list(session.scalars(select(CallRecord).where(CallRecord.patient_id == patient_id)
                                .order_by(CallRecord.started_at.desc(), CallRecord.id.desc())
                                .limit(limit)).all())


def recorded_calls(session: Session, call_ids: list[int]) -> set[int]:
    """Which of ``call_ids`` have a recording kept by the app."""
    if not call_ids:
        return set()
    return set(session.scalars(select(CallRecording.call_id).where(
        CallRecording.call_id.in_(call_ids))).all())


def call_patient(session: Session, value: str) -> str | None:
    """The patient of a call (the ``call`` patient resolver of patient-level routes)."""
    if not value.isdigit() or len(value) > 12:
        return None
    record = session.get(CallRecord, int(value))
    return record.patient_id if record is not None else None


def call_stay(session: Session, value: str) -> tuple[str | None, str | None] | None:
    """The stay a call belongs to: its task's encounter and department."""
    if not value.isdigit() or len(value) > 12:
        return None
    record = session.get(CallRecord, int(value))
    task = session.get(Task, record.task_id) if record is not None else None
    return (task.encounter_id, task.department_id) if task is not None else None
