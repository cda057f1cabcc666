"""No personal data and no link token in any log line (issue 14, part 4): the duplicate-MRN event,
exception text and tracebacks, statement parameters, access lines."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError

from careloop.engine import logs
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.flows.ingest import create_api_key
from careloop.web.app import create_app

NAME, PHONE, ID_NUMBER, BIRTH = "欧阳娜娜", "138-1234-5678", "110101198506151234", "1985-06-15"
PERSONAL = (NAME, PHONE, "13812345678", ID_NUMBER, BIRTH)


def _event(event_id: str, patient_id: str, mrn: str, **extra: str) -> dict[str, object]:
    return {"event_id": event_id, "type": "patient.upserted",
            "payload": {"patient_id": patient_id, "mrn": mrn, "name": extra.get("name", "王五"),
                        **{k: v for k, v in extra.items() if k != "name"}}}


def _captured(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything the app logged: the records pytest saw (message and exception text) and the
    lines the app's own handler wrote."""
    records = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    captured = capsys.readouterr()
    return records + "\n" + captured.err + captured.out


def test_duplicate_mrn_is_a_located_conflict_and_nothing_personal_is_logged(
        engine: Engine, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    with transaction(engine) as session:
        key = create_api_key(session, "his")
    client = TestClient(create_app(), raise_server_exceptions=False)
    headers = {"X-API-Key": key}
    assert client.post("/api/v1/events", json=_event("his-1", "P1", "M1"),
                       headers=headers).status_code == 200
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG):
        answer = client.post("/api/v1/events", headers=headers, json=_event(
            "his-2", "P2", "M1", name=NAME, phone=PHONE, id_number=ID_NUMBER, birth_date=BIRTH))
        logging.getLogger("careloop.test").warning("after the conflict")
    assert answer.status_code == 409, answer.text
    errors = answer.json()["errors"]
    assert [e["path"] for e in errors] == ["$.payload.mrn"]
    assert all(value not in answer.text for value in PERSONAL)
    output = _captured(caplog, capsys)
    assert "after the conflict" in output  # the capture works
    for value in PERSONAL:
        assert value not in output, value
    with transaction(engine) as session:  # nothing of the refused event was kept
        assert session.get(Patient, "P2") is None
        assert session.scalar(select(func.count()).select_from(Patient)) == 1


def test_an_unhandled_error_logs_its_detail_redacted(
        engine: Engine, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Exception text and traceback pass the redaction step: statement parameters, phone and ID
    numbers, link tokens and the name of the patient the request loaded are gone, the rest of
    the detail is kept."""
    with transaction(engine) as session:
        session.add(Patient(id="P9", mrn="M9", name=NAME, attributes={}, consents={}))
    app: FastAPI = create_app()

    @app.get("/boom")
    def boom() -> None:
        with transaction(engine) as session:
            patient = session.get(Patient, "P9")  # loading the patient hides their name
            assert patient is not None
            try:
                session.execute(text("SELECT nope FROM patients WHERE name = :n"), {"n": NAME})
            except Exception as exc:
                raise RuntimeError(f"calling {patient.name} on +86 138 1234 5678 about "
                                   f"{ID_NUMBER}, link /f/Zx9yW8vU7tS6rQ5p") from exc

    client = TestClient(app, raise_server_exceptions=False)
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        assert client.get("/boom").status_code == 500
    output = _captured(caplog, capsys)
    assert "unhandled RuntimeError" in output and "Traceback" in output
    assert "[personal]" in output and "[phone]" in output and "[id-number]" in output
    assert "/f/[token]" in output
    for value in (*PERSONAL, "+86 138 1234 5678", "Zx9yW8vU7tS6rQ5p"):
        assert value not in output, value


def test_statement_parameters_never_reach_the_log(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    logs.install_record_factory()
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="王五", attributes={}, consents={}))
    with caplog.at_level(logging.INFO):
        try:
            with transaction(engine) as session:
                session.add(Patient(id="P2", mrn="M1", name=NAME, phone="13812345678",
                                    attributes={}, consents={}))
        except IntegrityError:
            logging.getLogger("careloop.test").exception("insert failed")
    output = "\n".join(f"{r.getMessage()}\n{r.exc_text}" for r in caplog.records)
    assert "insert failed" in output and "IntegrityError" in output
    assert "[parameters: redacted]" in output
    assert NAME not in output and "13812345678" not in output


@pytest.mark.parametrize("written", ["13812345678", "138-1234-5678", "138 1234 5678",
                                     "+86 138 1234 5678", "+86-13812345678", "8613812345678"])
def test_phones_in_any_writing_are_redacted(written: str) -> None:
    assert logs.redact(f"call {written} now") == "call [phone] now"


def test_order_numbers_and_ids_are_kept() -> None:
    assert logs.redact("patient P000123 task 42 run 20261206") == \
        "patient P000123 task 42 run 20261206"
    assert logs.redact("GET /d/[token] and /f/short") == "GET /d/[token] and /f/short"


def test_access_lines_stay_well_formed_without_tokens_or_phones(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from uvicorn.logging import AccessFormatter

    logs.configure()
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", "GET",
                    "/f/Zx9yW8vU7tS6rQ5pAbCdEf?phone=138-1234-5678", "1.1", 200)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", "GET",
                    "/d/Qw3rTy7uIo9pAs2dFg", "1.1", 200)
    formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s',
                                use_colors=False)
    lines = [formatter.format(record) for record in caplog.records]
    assert lines == ['127.0.0.1:50000 - "GET /f/[token]?phone=[phone] HTTP/1.1" 200 OK',
                     '127.0.0.1:50000 - "GET /d/[token] HTTP/1.1" 200 OK']
    written = capsys.readouterr().err
    assert 'event=\'127.0.0.1:50000 - "GET /f/[token]?phone=[phone] HTTP/1.1" 200\'' in written
    assert "logger='uvicorn.access'" in written and "Zx9yW8vU7tS6rQ5p" not in written


def test_a_served_app_writes_access_lines_without_link_tokens_or_phones(
        engine: Engine, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn configured as ``careloop serve`` configures it (``log_config=None``): its access
    lines go through the app's one handler and redaction, and stay well-formed."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="info", log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    with caplog.at_level(logging.INFO):
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            base = f"http://127.0.0.1:{port}"
            httpx.get(f"{base}/f/Zx9yW8vU7tS6rQ5pAbCdEfGh?phone=138-1234-5678")
            httpx.get(f"{base}/d/Qw3rTy7uIo9pAs2dFgHjKl")
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) == 2, access
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /f/\[token\]\?phone=\[phone\] HTTP/1\.1" 404',
                        access[0]), access
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /d/\[token\] HTTP/1\.1" 404', access[1]), access
    written = capsys.readouterr().err
    assert "logger='uvicorn.access'" in written
    for secret in ("Zx9yW8vU7tS6rQ5p", "Qw3rTy7uIo9pAs2d", "138-1234-5678"):
        assert secret not in written and all(secret not in line for line in access)
