"""Data-driven cases of the bundled rule sets (app_definitions/<app>/tests/rules/*.cases.json):
each event's dry run must match exactly the listed rules, in order."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from careloop.engine.db import transaction
from careloop.rules.runtime import dry_run

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
FILES = sorted(APPS.glob("*/tests/rules/*.cases.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_bundle_cases(path: Path, engine: Engine, hospital: dict[str, int],
                      install: Callable[..., None]) -> None:
    suite: dict[str, Any] = json.loads(path.read_text("utf-8"))
    install(*suite["apps"])
    with transaction(engine) as session:
        for case in suite["cases"]:
            outcome = dry_run(session, suite["ruleset"], case["event"])
            assert outcome.applies is case.get("applies", True), case["name"]
            assert [m["rule"] for m in outcome.matched] == case["matched"], case["name"]


def test_there_are_cases_for_the_scenarios() -> None:
    assert {p.name for p in FILES} >= {"followup_routing.cases.json", "phq9_safety.cases.json",
                                       "bp_alerts.cases.json"}
