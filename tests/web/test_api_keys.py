"""Scoped API keys and definition catalogues behind sign-in, as the attacks were reproduced on
main: one HIS key read every flow run and the whole outbox and could retry or skip incidents,
with no list, revoke, expiry or audit; ``/api/v1/definitions`` answered without a session."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.clock import frozen_now, now_utc
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow
from careloop.flows.cli import apikey
from careloop.flows.ingest import create_api_key
from careloop.flows.models import ApiKey
from careloop.web.app import create_app

from .conftest import UserFactory, csrf_from, login

PATIENT = {"event_id": "p-1", "type": "patient.upserted",
           "payload": {"patient_id": "P1", "mrn": "MRN1", "name": "张三", "gender": "male",
                       "birth_date": "1950-01-02", "phone": "13800000000"}}
READS = ("/api/v1/flows/runs", "/api/v1/flows/runs/1", "/api/v1/flows/incidents",
         "/api/v1/outbox")


def _cli_key(*args: str) -> str:
    created = CliRunner().invoke(apikey, ["create", *args])
    assert created.exit_code == 0, created.output
    return created.output.strip()


def _audit(action_prefix: str) -> list[tuple[str, str, str]]:
    with transaction() as session:
        return [(r.actor, r.action, r.outcome) for r in session.scalars(
            select(AuditRow).where(AuditRow.action.like(f"{action_prefix}%"))
            .order_by(AuditRow.id)).all()]


def test_the_his_key_sends_events_and_reads_nothing(engine: Engine) -> None:
    key = _cli_key("his")  # default scope: events:write
    his = TestClient(create_app())
    headers = {"X-API-Key": key}
    assert his.post("/api/v1/events", json=PATIENT, headers=headers).status_code == 200
    for path in READS:
        assert his.get(path, headers=headers).status_code == 403, path
    for action in ("retry", "skip"):
        assert his.post(f"/api/v1/flows/incidents/1/{action}",
                        headers=headers).status_code == 403
    assert _audit("api.") == [
        ("apikey:his", "api.event", "success"),
        ("apikey:his", "api.flow_runs", "denied"), ("apikey:his", "api.flow_run", "denied"),
        ("apikey:his", "api.incidents", "denied"), ("apikey:his", "api.outbox", "denied"),
        ("apikey:his", "api.incident_retry", "denied"),
        ("apikey:his", "api.incident_skip", "denied")]
    with transaction() as session:
        row = session.scalars(select(ApiKey)).one()
        assert row.scopes == ["events:write"] and row.last_used_at is not None
        assert row.expires_at is not None


def test_a_readback_key_reads_but_does_not_act(engine: Engine) -> None:
    key = _cli_key("monitor", "--scope", "readback:read")
    client = TestClient(create_app())
    headers = {"X-API-Key": key}
    assert client.get("/api/v1/flows/runs", headers=headers).json() == []
    assert client.get("/api/v1/outbox", headers=headers).json() == []
    assert client.post("/api/v1/events", json=PATIENT, headers=headers).status_code == 403
    assert client.post("/api/v1/flows/incidents/1/retry", headers=headers).status_code == 403
    bad = CliRunner().invoke(apikey, ["create", "x", "--scope", "everything"])
    assert bad.exit_code == 2 and "unknown scope everything" in bad.output


def test_expired_and_revoked_keys_stop_working(engine: Engine) -> None:
    with transaction() as session:
        old = create_api_key(session, "old", expires_at=now_utc() - timedelta(minutes=1))
    client = TestClient(create_app())
    assert client.post("/api/v1/events", json=PATIENT,
                       headers={"X-API-Key": old}).status_code == 401
    key = _cli_key("his")
    assert client.post("/api/v1/events", json=PATIENT,
                       headers={"X-API-Key": key}).status_code == 200
    revoked = CliRunner().invoke(apikey, ["revoke", "his"])
    assert revoked.exit_code == 0
    assert client.post("/api/v1/events", json=PATIENT,
                       headers={"X-API-Key": key}).status_code == 401
    listed = CliRunner().invoke(apikey, ["list"])
    assert listed.exit_code == 0
    lines = dict(line.split("\t", 1) for line in listed.output.strip().splitlines())
    assert "revoked" in lines["his"] and "events:write" in lines["his"]
    assert "expired" in lines["old"]
    assert [a for _, a, _ in _audit("apikey.")] == ["apikey.create", "apikey.revoke"]


def test_keys_are_listed_and_revoked_on_an_admin_page(engine: Engine,
                                                      user_factory: UserFactory) -> None:
    with frozen_now(now_utc().replace(year=2026, month=12, day=2, hour=1, minute=0,
                                      second=0, microsecond=0)):
        key = _cli_key("his", "--expires-days", "30")
        user_factory("security", "security_admin", None)
        user_factory("nurse", "nurse", None)
        client = TestClient(create_app())
        login(client, "security")
        page = client.get("/admin/api-keys")
        assert page.status_code == 200
        text = page.text
        assert "his" in text and "发送事件" in text and "有效" in text
        assert "2026-12-02 09:00" in text and "2027-01-01 09:00" in text  # hospital time
        assert key not in text
        with transaction() as session:
            key_id = session.scalars(select(ApiKey.id)).one()
        done = client.post(f"/admin/api-keys/{key_id}/revoke", follow_redirects=False,
                           data={"csrf_token": csrf_from(text)})
        assert done.status_code == 303
        assert "已撤销" in client.get("/admin/api-keys").text
        assert TestClient(create_app()).post("/api/v1/events", json=PATIENT, headers={
            "X-API-Key": key}).status_code == 401
        assert _audit("apikey.revoke") == [("security", "apikey.revoke", "success")]
        nurse = TestClient(create_app())
        login(nurse, "nurse")
        assert nurse.get("/admin/api-keys").status_code == 403


def test_definition_catalogues_need_sign_in_and_permission(engine: Engine,
                                                           user_factory: UserFactory) -> None:
    anonymous = TestClient(create_app())
    for path in ("/api/v1/definitions", "/api/v1/definitions/rule_set/x", "/api/v1/bundles"):
        assert anonymous.get(path).status_code == 401, path
    user_factory("security", "security_admin", None)
    user_factory("nurse", "nurse", None)
    security = TestClient(create_app())
    login(security, "security")
    assert security.get("/api/v1/definitions").status_code == 403
    nurse = TestClient(create_app())
    login(nurse, "nurse")
    assert nurse.get("/api/v1/definitions").status_code == 200
    assert nurse.get("/api/v1/bundles").status_code == 200
