"""Issue 16: a REDCap field flagged ``Identifier? = y`` is carried as ``identifier: true`` and
the staff submission page shows its answer masked until an audited reveal."""

from __future__ import annotations

from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.models import AuditRow
from careloop.forms.publish import publish_form
from careloop.forms.redcap import import_instruments
from careloop.forms.runtime import submit

from .conftest import UserFactory, csrf_from, login

DICTIONARY = (Path(__file__).resolve().parents[1] / "forms" / "data" / "redcap"
              / "screening_multi.csv")
NAME = "Ada Lovelace"


def test_a_redcap_identifier_is_masked_on_the_staff_page_until_revealed(
        client: TestClient, engine: Engine, user_factory: UserFactory) -> None:
    body = next(i for i in import_instruments(DICTIONARY.read_text("utf-8"))
                if i.key == "demographics").body
    with transaction(engine) as session:
        publish_form(session, yaml.safe_dump(body, allow_unicode=True), actor="test",
                     source_path="redcap/screening_multi.csv")
        session.add(Patient(id="P1", mrn="M1", name="王芳", attributes={}, consents={}))
    with transaction(engine) as session:
        stored, _ = submit(session, form_key="demographics", patient_id="P1", locale="en",
                           answers={"name": NAME, "phone": "+44 20 7946 0958",
                                    "email": "a@example.org"})
        sid = stored.id
    user_factory("px", "px_office", None)
    login(client, "px")
    page = client.get(f"/submissions/{sid}")
    assert page.status_code == 200
    assert NAME not in page.text and "7946 0958" not in page.text
    assert "A" + "*" * 11 in page.text and "a@example.org" in page.text
    assert 'id="reveal-form"' in page.text
    revealed = client.post(f"/submissions/{sid}/reveal",
                           data={"csrf_token": csrf_from(page.text), "reason": "回访"})
    assert revealed.status_code == 200 and NAME in revealed.text
    with transaction(engine) as session:
        reveal = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.reveal")).one()
        assert reveal.details == {"fields": ["name", "phone"], "reason": "回访"}
