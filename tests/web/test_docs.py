"""docs/web.md names every registered navigation item, resolver, seeder, role, permission and
CLI command of the web runtime; docs/security.md names every audit action it writes."""

from __future__ import annotations

import re
from pathlib import Path

from careloop.engine.registry import loaded_registry
from careloop.web.permissions import PERMISSIONS
from careloop.web.plugin import ROUTE_MODULES

ROOT = Path(__file__).resolve().parents[2]


def test_web_doc_covers_the_catalogues() -> None:
    text = (ROOT / "docs" / "web.md").read_text("utf-8")
    registry = loaded_registry()
    names = [*registry.catalogue("web_nav").names(), *registry.catalogue("patient_resolver"),
             *registry.catalogue("demo_seeder"), *registry.catalogue("role"), *PERMISSIONS,
             "create-admin", "demo seed", "up --demo"]
    missing = [n for n in names if f"`{n}" not in text and f"{n}`" not in text]
    assert missing == []


def test_security_doc_lists_every_audit_action() -> None:
    text = (ROOT / "docs" / "security.md").read_text("utf-8")
    engine_routes = {f"{m.rsplit('.', 1)[1]}.py" for m in ROUTE_MODULES}  # their own docs
    source = "".join(p.read_text("utf-8") for p in (ROOT / "web").glob("*.py")
                     if p.name not in engine_routes)
    actions = set(re.findall(r'record\(request, \w+, "([a-z_.]+)"', source))
    actions |= set(re.findall(r'action="([a-z_.]+)"', source))
    actions |= set(re.findall(r'_task_action\(request, me, task_id, "([a-z_.]+)"', source))
    actions |= {f"user.{a}" for a in ("activate", "deactivate", "unlock")}  # f"user.{action}"
    assert len(actions) > 15
    missing = sorted(a for a in actions if f"`{a}`" not in text)
    assert missing == []
