"""Durable timers under concurrency: two processes sweeping one database send nothing twice;
a process killed with SIGKILL mid-sweep and restarted fires every timer exactly once in effect.
Runs on the test database of the session (SQLite file or the PostgreSQL test schema)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select, text

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.flows.models import FlowTimer, OutboxMessage
from careloop.flows.runtime import start

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
SWEEPER = """
import sys
from datetime import datetime
from careloop.engine.db import make_engine
from careloop.flows.scheduler import run_due
url, schema, now, batch = sys.argv[1:5]
kwargs = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema else {}
report = run_due(make_engine(url, **kwargs), now=datetime.fromisoformat(now), batch=int(batch))
print(report.fired)
"""
FLOW = """kind: flow
key: tick
title: {zh-CN: 计时测试, en: Timer test}
trigger: {manual: true}
steps:
  - {key: later, type: wait, duration: 1d}
  - {key: say, type: send_message, template: diet_advice, channels: [log], valid_for: 3d}
  - {key: done, type: end}
"""


def _bundle(tmp_path: Path, engine: Engine) -> None:
    app = tmp_path / "flowtest"
    (app / "flows").mkdir(parents=True)
    (app / "app.yaml").write_text(
        "id: flowtest\nname: {zh-CN: 测试, en: Test}\nversion: 0.1.0\nformat: 1\n"
        "default_locale: zh-CN\nrequires: [common]\n", "utf-8")
    (app / "flows" / "tick.yaml").write_text(FLOW, "utf-8")
    import_bundle(ROOT / "app_definitions" / "common", engine=engine)
    import_bundle(app, engine=engine)


def _runs(engine: Engine, tmp_path: Path, count: int) -> None:
    _bundle(tmp_path, engine)
    with frozen_now(START), transaction(engine) as session:
        for n in range(count):
            session.add(Patient(id=f"P{n}", mrn=f"M{n}", name="测试", attributes={},
                                consents={}))
        session.flush()
        for n in range(count):
            start(session, flow_key="tick", patient_id=f"P{n}", idempotency_key=f"tick-{n}")


def _where(engine: Engine) -> tuple[str, str]:
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name != "postgresql":
        return url, ""
    with engine.connect() as conn:
        schema = str(conn.execute(text("SHOW search_path")).scalar())
    return url, schema


def _sweeper(engine: Engine, now: datetime, log: Path, batch: int) -> subprocess.Popen[str]:
    url, schema = _where(engine)
    env = {**os.environ, "CARELOOP_OUTBOX_LOG_FILE": str(log)}
    return subprocess.Popen([sys.executable, "-c", SWEEPER, url, schema, now.isoformat(),
                             str(batch)], env=env, stdout=subprocess.PIPE, text=True)


def _sent(log: Path) -> Counter[str]:
    if not log.exists():
        return Counter()
    return Counter(json.loads(line)["key"] for line in log.read_text("utf-8").splitlines())


def _fired(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(FlowTimer)
                                  .where(FlowTimer.status == "fired")) or 0)


def test_two_processes_sweeping_at_once_send_nothing_twice(engine: Engine,
                                                           tmp_path: Path) -> None:
    _runs(engine, tmp_path, 60)
    log = tmp_path / "sent.jsonl"
    now = START + timedelta(days=2)
    procs = [_sweeper(engine, now, log, batch=3) for _ in range(2)]
    fired = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(fired) == 60  # every timer fired once across both processes
    sent = _sent(log)
    assert len(sent) == 60 and set(sent.values()) == {1}
    with transaction(engine) as session:
        statuses = session.scalars(select(OutboxMessage.status)).all()
    assert len(statuses) == 60 and set(statuses) == {"logged"}


def test_sigkill_mid_sweep_then_restart_fires_every_timer_once(engine: Engine,
                                                               tmp_path: Path) -> None:
    count = 300
    _runs(engine, tmp_path, count)
    log = tmp_path / "sent.jsonl"
    now = START + timedelta(days=2)
    victim = _sweeper(engine, now, log, batch=1)
    deadline = time.monotonic() + 60
    while _fired(engine) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert _fired(engine) < count  # killed in the middle of the sweep
    # Restart after the dead process's claims expired (claims last 5 minutes).
    survivor = _sweeper(engine, now + timedelta(minutes=10), log, batch=50)
    survivor.communicate(timeout=120)
    assert survivor.returncode == 0
    assert _fired(engine) == count
    with transaction(engine) as session:
        keys = session.scalars(select(OutboxMessage.idempotency_key)).all()
    assert len(keys) == count  # one message per timer: nothing lost, nothing duplicated
    sent = _sent(log)
    assert set(sent) <= set(keys) and all(n == 1 for n in sent.values())
