"""``careloop rules test``: the dry run from the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from careloop.engine.domain import Task
from careloop.rules.cli import rules
from careloop.rules.models import RuleEvaluation

EVENT = {"type": "form.submitted", "payload": {
    "submission_id": 1, "form": "inpatient_satisfaction", "patient_id": "p1",
    "encounter_id": "e1", "answers": {"overall": 2, "comment": "出院时用药指导不清楚"}}}


def _write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    return str(path)


def _nothing_stored(engine: Engine) -> bool:
    with engine.connect() as conn:
        return all(conn.execute(select(func.count()).select_from(m)).scalar_one() == 0
                   for m in (Task, RuleEvaluation))


def test_rules_test_prints_matches_and_would_be_actions(
        engine: Engine, hospital: dict[str, int], install: Callable[..., None],
        tmp_path: Path) -> None:
    install("common", "discharge", "cardiology", "satisfaction")
    result = CliRunner().invoke(rules, ["test", "followup_routing", "--event",
                                        _write(tmp_path, EVENT), "--locale", "en"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Rule set followup_routing (version 1), dry run: nothing is stored"
    assert lines[1] == "✔ rule dissatisfied matches (answers.overall=2)"
    assert lines[2].startswith("    would create_task: {")
    assert "medication_guidance" in result.output
    assert _nothing_stored(engine)


def test_rules_test_json(engine: Engine, hospital: dict[str, int],
                         install: Callable[..., None], tmp_path: Path) -> None:
    install("common", "discharge", "cardiology", "satisfaction")
    happy = {**EVENT, "payload": {**EVENT["payload"], "answers": {"overall": 5}}}  # type: ignore[dict-item]
    result = CliRunner().invoke(rules, ["test", "followup_routing", "--event",
                                        _write(tmp_path, happy), "--format", "json"])
    out = json.loads(result.stdout)
    assert [m["rule"] for m in out["matched"]] == ["satisfied"]
    assert [a["do"] for a in out["actions"]] == ["set_status", "tag", "untag", "set_attribute"]
    assert _nothing_stored(engine)


def test_rules_test_reports_bad_input(engine: Engine, install: Callable[..., None],
                                      tmp_path: Path) -> None:
    install("common")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", "utf-8")
    result = CliRunner().invoke(rules, ["test", "segments", "--event", str(bad)])
    assert result.exit_code == 1 and "not a JSON event" in result.output
    result = CliRunner().invoke(rules, ["test", "nope", "--event", _write(tmp_path, EVENT)])
    assert result.exit_code == 1 and "no ruleset 'nope'" in result.output
