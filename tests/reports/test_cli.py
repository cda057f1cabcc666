"""``careloop report run`` and ``careloop report alerts run``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.cli import _add_engine_commands, cli

APPS = Path(__file__).resolve().parents[2] / "app_definitions"


def _run(*args: str) -> Any:
    _add_engine_commands()
    return CliRunner().invoke(cli, list(args))


def test_report_run_json_csv_and_params(engine: Engine, seed: Any) -> None:
    for app in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(APPS / app, engine=engine)
    seed.submit("card", {"nps": 10, "overall": 5}, at=datetime(2026, 3, 1, 4, tzinfo=UTC))
    seed.submit("ortho", {"nps": 0, "overall": 1}, at=datetime(2026, 4, 1, 4, tzinfo=UTC))
    out = _run("report", "run", "satisfaction_by_department")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [r["department"] for r in data["rows"]] == ["card", "ortho"]
    assert data["rows"][0]["nps"] is None  # one response < min_sample 5: n/a, not 0
    out = _run("report", "run", "satisfaction_by_department", "--param", "from=2026-04-01",
               "--format", "csv")
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == [
        "department,responses,avg_overall,nps,positive_rate,negative_rate",
        "ortho,1,1.0,n/a,0.0,100.0"]
    bad = _run("report", "run", "satisfaction_by_department", "--param", "since=2026")
    assert bad.exit_code != 0 and "unknown parameter" in bad.output
    missing = _run("report", "run", "nope")
    assert missing.exit_code != 0 and "no dataset 'nope'" in missing.output


def test_alerts_run_with_now(engine: Engine, seed: Any) -> None:
    for app in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(APPS / app, engine=engine)
    for i in range(30):
        seed.submit("card", {"nps": 0 if i % 2 else 10, "overall": 3},
                    at=datetime(2026, 3, 1, 4, tzinfo=UTC))
    first = _run("report", "alerts", "run", "--now", "2026-03-02T10:00:00+08:00")
    assert first.exit_code == 0, first.output
    assert "department_nps_low card: pending (0.0)" in first.output
    fired = _run("report", "alerts", "run", "--now", "2026-03-03T10:00:00+08:00")
    assert "department_nps_low card: firing (0.0) FIRED" in fired.output
