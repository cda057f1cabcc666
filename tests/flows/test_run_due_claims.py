"""``careloop scheduler run-due`` after a crash: timers a stopped sweep still holds are counted
and named with when their claims expire, instead of a silent ``fired: 0``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import Engine

from careloop.engine.clock import to_local
from careloop.engine.db import transaction
from careloop.flows.cli import scheduler
from careloop.flows.models import FlowTimer
from careloop.flows.scheduler import CLAIM_SECONDS, claim, held_claims

T0 = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)


def test_run_due_names_timers_a_crashed_sweep_still_holds(engine: Engine) -> None:
    with transaction(engine) as session:
        session.add_all([FlowTimer(purpose="resume", due_at=T0 - timedelta(minutes=m))
                         for m in (1, 2)])
    assert len(claim(engine, "crashed-host:4242:abcd", T0)) == 2  # then the process died
    result = CliRunner().invoke(scheduler, ["run-due", "--now",
                                            (T0 + timedelta(minutes=1)).isoformat()])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expiry = to_local(T0 + timedelta(seconds=CLAIM_SECONDS))
    assert report["fired"] == 0
    assert report["claimed"] == {"count": 2, "workers": 1,
                                 "claims_expire_from": expiry.isoformat(timespec="seconds"),
                                 "claims_expire_until": expiry.isoformat(timespec="seconds")}
    line = result.stderr.strip()
    assert line.startswith("2 due timer(s) not fired") and "\n" not in line
    assert f"{expiry:%Y-%m-%d %H:%M:%S}" in line and "hospital time" in line
    after = held_claims(engine, T0 + timedelta(seconds=CLAIM_SECONDS + 1))
    assert after.count == 0 and after.first_expiry is None


def test_run_due_with_nothing_held_says_nothing_more(engine: Engine) -> None:
    result = CliRunner().invoke(scheduler, ["run-due", "--now", T0.isoformat()])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["claimed"]["count"] == 0
    assert result.stderr == ""


def test_run_due_bad_now_is_a_usage_error(engine: Engine) -> None:
    result = CliRunner().invoke(scheduler, ["run-due", "--now", "tomorrow"])
    assert result.exit_code == 2
    assert "not an ISO date-time: 'tomorrow'" in result.stderr
