"""Fixtures of the rule-engine tests: a small hospital, bundle installation, service doubles."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, RoleGrant, User
from careloop.engine.registry import loaded_registry
from careloop.engine.sources import load_file

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "app_definitions"


def _copy_known_kinds(app: str, target: Path) -> Path:
    """A copy of a bundle without definitions of kinds no installed engine registers yet."""
    kinds = loaded_registry().catalogue("kind")
    dest = target / app
    shutil.copytree(APPS / app, dest)
    for path in list(dest.rglob("*.yaml")):
        if path.name == "app.yaml" or "tests" in path.relative_to(dest).parts:
            continue
        data = load_file(path).data
        if isinstance(data, dict) and data.get("kind") not in kinds:
            path.unlink()
    return dest


@pytest.fixture
def install(engine: Engine, tmp_path: Path) -> Callable[..., None]:
    """Import app bundles (with their ``requires``) into the test database."""

    def run(*apps: str) -> None:
        for app in apps:
            import_bundle(_copy_known_kinds(app, tmp_path), engine=engine)

    return run


USERS = {
    "hn_cardio": ("head_nurse", "cardiology"),
    "hn_ortho": ("head_nurse", "orthopedics"),
    "dir_cardio": ("dept_director", "cardiology"),
    "px_lead": ("px_office", None),
    "pharm_head": ("pharmacy_head", "pharmacy"),
    "dr_li": ("doctor", "cardiology"),
    "dr_psych": ("doctor", "psychiatry"),
}


def build_hospital(session: Session) -> dict[str, int]:
    """Departments, staff with roles, patient ``p1`` (born 1950, inpatient ``e1`` in cardiology
    after PCI), ``p2`` (born 1990, outpatient ``e2`` in psychiatry and ``e3`` in cardiology for
    hypertension); returns user ids by username."""
    for dept in ("cardiology", "orthopedics", "pharmacy", "psychiatry"):
        session.add(Department(id=dept, name={"zh-CN": dept, "en": dept}))
    session.flush()
    ids: dict[str, int] = {}
    for username, (role, dept) in USERS.items():
        user = User(username=username, display_name=username)
        session.add(user)
        session.flush()
        session.add(RoleGrant(user_id=user.id, role=role, department_id=dept))
        ids[username] = user.id
    session.add_all([
        Patient(id="p1", mrn="M001", name="测试患者", gender="female", birth_date=date(1950, 3, 1)),
        Patient(id="p2", mrn="M002", name="测试患者二", gender="male", birth_date=date(1990, 6, 1)),
    ])
    session.flush()
    session.add_all([
        Encounter(id="e1", patient_id="p1", type="inpatient", department_id="cardiology",
                  attending_doctor_id=ids["dr_li"], status="discharged",
                  diagnoses={"codes": ["I21"]}, procedures={"codes": ["PCI"]}),
        Encounter(id="e2", patient_id="p2", type="outpatient", department_id="psychiatry",
                  attending_doctor_id=ids["dr_psych"], status="discharged"),
        Encounter(id="e3", patient_id="p2", type="outpatient", department_id="cardiology",
                  attending_doctor_id=ids["dr_li"], status="discharged",
                  diagnoses={"codes": ["I10"]}),
    ])
    session.flush()
    return ids


@pytest.fixture
def hospital(engine: Engine) -> dict[str, int]:
    with transaction(engine) as session:
        return build_hospital(session)


class Recorder:
    """A collaborator double for a service: records its calls, returns increasing ids."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, session: Session, *args: Any, **kwargs: Any) -> int:
        self.calls.append({"args": args, **kwargs})
        return len(self.calls)


@pytest.fixture
def recording_services() -> Iterator[dict[str, Recorder]]:
    """Replace ``outbox.enqueue``, ``flows.start`` and ``submission.set_status`` with recorders
    for the duration of one test (restoring whatever was registered before)."""
    services = loaded_registry().catalogue("service")
    names = ("outbox.enqueue", "flows.start", "submission.set_status")
    saved = {name: services.get(name) for name in names}
    doubles = {name: Recorder() for name in names}
    for name, double in doubles.items():
        services.register(name, double, replace=True)
    try:
        yield doubles
    finally:
        for name, previous in saved.items():
            if previous is not None:
                services.register(name, previous, replace=True)
            else:
                services._items.pop(name, None)


@pytest.fixture
def install_yaml(engine: Engine, tmp_path: Path) -> Callable[..., None]:
    """Import loose definitions (YAML texts) as a throw-away bundle ``t`` and its requires."""

    def run(*texts: str, requires: tuple[str, ...] = ("common",)) -> None:
        root = tmp_path / "t"
        (root / "rules").mkdir(parents=True)
        (root / "app.yaml").write_text(
            "id: t\nname: {zh-CN: 测试, en: Test}\nversion: 0.1.0\nformat: 1\n"
            f"default_locale: zh-CN\nrequires: [{', '.join(requires)}]\n", "utf-8")
        for i, text in enumerate(texts):
            (root / "rules" / f"d{i}.yaml").write_text(text, "utf-8")
        for app in requires:
            import_bundle(_copy_known_kinds(app, tmp_path), engine=engine)
        import_bundle(root, engine=engine)

    return run
