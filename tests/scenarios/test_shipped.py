"""Every scenario shipped in ``app_definitions/*/scenarios`` passes, on the suite's database
(SQLite by default, PostgreSQL when CARELOOP_DATABASE_URL names one): one test per scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from careloop.web.scenarios.load import select
from careloop.web.scenarios.runner import run_scenario
from careloop.web.scenarios.spec import ScenarioSpec

APPS = Path(__file__).resolve().parents[2] / "app_definitions"


def shipped() -> list[object]:
    selection = select([], APPS)
    assert selection.problems == []
    return [pytest.param(spec, app, id=f"{app.name}/{spec.key}")
            for spec, app in selection.scenarios]


def test_the_shipped_apps_have_scenarios() -> None:
    keys = {spec.key for spec, _ in select([], APPS).scenarios}
    assert {"discharge_day3_answered", "discharge_day7_phone_70plus", "discharge_cancelled",
            "complaint_desk_resolved", "pci_followup_days_7_30",
            "hypertension_first_visit_once", "monthly_chronic_loop", "home_bp_crisis",
            "phq9_item9_alert"} <= keys
    # the seed journeys of orthopedics, complaints (PX review approved and rejected) and the
    # day-7 call's retry
    assert {"before_surgery_and_revisit", "complaint_px_review", "complaint_px_review_rejected",
            "discharge_day7_phone_retry"} <= keys


@pytest.mark.parametrize(("spec", "app"), shipped())
def test_shipped_scenario_passes(spec: ScenarioSpec, app: Path, dialect: str) -> None:
    result = run_scenario(spec, app)
    assert result.backend == dialect  # the suite's backend, in a database of its own
    assert result.ok, "\n".join(f.render() for f in result.failures)
    assert len(result.steps) == len(spec.steps)
