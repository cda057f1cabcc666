"""Masking of phone and ID numbers, audited reveals, patient views and exports, log redaction."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careloop.engine import audit
from careloop.engine.db import transaction
from careloop.engine.logs import install_record_factory as install
from careloop.engine.logs import redact
from careloop.engine.models import AuditRow

from ..conftest import Tamper
from .conftest import UserFactory, csrf_from, login


def _audit(action: str) -> list[AuditRow]:
    with transaction() as session:
        return list(session.scalars(select(AuditRow).where(AuditRow.action == action)
                                    .order_by(AuditRow.id)).all())


def test_numbers_are_masked_on_the_page_and_in_the_api(
        client: TestClient, wards: dict[str, int], user_factory: UserFactory) -> None:
    user_factory("doc", "doctor", "cardio")
    login(client, "doc")
    page = client.get("/patients/PA")
    assert "138****5678" in page.text and "110***********1234" in page.text
    assert "13812345678" not in page.text and "110101199003071234" not in page.text
    assert page.headers["cache-control"] == "no-store"
    data = client.get("/api/v1/patients/PA").json()["patient"]
    assert (data["phone"], data["id_number"]) == ("138****5678", "110***********1234")
    views = _audit("patient.view")
    assert len(views) == 2 and {v.patient_id for v in views} == {"PA"}
    assert all(v.actor == "doc" and v.actor_role == "doctor" and v.request_id for v in views)


def test_reveal_needs_the_permission_and_a_reason_and_is_audited(
        client: TestClient, wards: dict[str, int], user_factory: UserFactory) -> None:
    user_factory("nurse", "nurse", "cardio")
    user_factory("doc", "doctor", "cardio")
    token = login(client, "nurse")
    refused = client.post("/api/v1/patients/PA/reveal", json={"reason": "call back"},
                          headers={"X-CSRF-Token": token})
    assert refused.status_code == 403
    assert "reveal-form" not in client.get("/patients/PA").text
    token = login(client, "doc")
    blank = client.post("/api/v1/patients/PA/reveal", json={"reason": "  "},
                        headers={"X-CSRF-Token": token})
    assert blank.status_code == 422
    shown = client.post("/api/v1/patients/PA/reveal", json={"reason": "call back"},
                        headers={"X-CSRF-Token": token})
    assert shown.json() == {"id": "PA", "phone": "13812345678",
                            "id_number": "110101199003071234"}
    page = client.get("/patients/PA")
    html = client.post("/patients/PA/reveal",
                       data={"reason": "电话随访", "csrf_token": csrf_from(page.text)})
    assert "13812345678" in html.text
    reveals = _audit("patient.reveal")
    assert [r.details["reason"] for r in reveals] == ["call back", "电话随访"]
    assert all(r.patient_id == "PA" and r.actor == "doc" for r in reveals)
    # the audit row itself keeps no personal data
    assert all("13812345678" not in str(r.details) for r in reveals)


def test_export_is_permissioned_masked_and_audited(
        client: TestClient, wards: dict[str, int], user_factory: UserFactory) -> None:
    user_factory("nurse", "nurse", "cardio")
    user_factory("px", "px_office", None)
    login(client, "nurse")
    assert client.get("/api/v1/patients/PA/export").status_code == 403
    login(client, "px")
    response = client.get("/api/v1/patients/PA/export")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    assert "13812345678" not in response.text and "138****5678" in response.text
    assert [r.patient_id for r in _audit("patient.export")] == ["PA"]


def test_audit_verify_detects_a_modified_row(
        client: TestClient, wards: dict[str, int], user_factory: UserFactory,
        tamper: Tamper) -> None:
    user_factory("doc", "doctor", "cardio")
    user_factory("auditor", "auditor", None)
    login(client, "doc")
    client.get("/patients/PA")
    client.get("/patients/PB")
    with transaction() as session:
        assert list(audit.verify(session)) == []
        first = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.view")).first()
        assert first is not None
    tamper("UPDATE audit_log SET patient_id = 'PZ' WHERE id = :id", {"id": first.id})
    login(client, "auditor")
    page = client.get("/admin/audit?verify=true")
    assert page.status_code == 200
    assert f"row {first.id}: hash mismatch" in page.text
    from click.testing import CliRunner

    from careloop.engine.cli import audit_verify

    result = CliRunner().invoke(audit_verify)
    assert result.exit_code == 1 and f"row {first.id}: hash mismatch" in result.output


def test_audit_viewer_filters(client: TestClient, wards: dict[str, int],
                              user_factory: UserFactory) -> None:
    user_factory("doc", "doctor", "cardio")
    user_factory("auditor", "auditor", None)
    login(client, "doc")
    client.get("/patients/PA")
    login(client, "auditor")
    rows = client.get("/api/v1/audit?action=patient.view").json()
    assert [r["patient_id"] for r in rows] == ["PA"]
    assert rows[0]["actor"] == "doc" and rows[0]["ip"] and rows[0]["request_id"]
    failures = client.get("/api/v1/audit?action=auth.login&outcome=success").json()
    assert {r["actor"] for r in failures} == {"doc", "auditor"}


def test_log_filter_removes_personal_data(caplog: pytest.LogCaptureFixture) -> None:
    assert redact("phone 13812345678, id 11010119900307123X, mail a.b@example.cn") == \
        "phone [phone], id [id-number], mail [email]"
    assert redact("patient P000123 task 42") == "patient P000123 task 42"
    install()
    logger = logging.getLogger("careloop.test.child")
    with caplog.at_level(logging.INFO, logger="careloop.test.child"):
        logger.info("calling %s for %s", "13812345678", "P1")
    assert caplog.messages == ["calling [phone] for P1"]


def test_requests_log_no_personal_data(client: TestClient, wards: dict[str, int],
                                       user_factory: UserFactory,
                                       caplog: pytest.LogCaptureFixture) -> None:
    user_factory("doc", "doctor", "cardio")
    token = login(client, "doc")
    with caplog.at_level(logging.DEBUG):
        client.post("/api/v1/patients/PA/reveal", json={"reason": "call"},
                    headers={"X-CSRF-Token": token})
        client.get("/patients/PA?q=13812345678")
    for record in caplog.records:
        message = record.getMessage()
        assert "13812345678" not in message and "110101199003071234" not in message
