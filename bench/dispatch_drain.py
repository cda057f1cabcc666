"""CPU the event dispatcher spends per event: ``drain()`` of events the events API queued.

One run (``--run``): a fresh database (a SQLite file, or a PostgreSQL schema when
``CARELOOP_DATABASE_URL`` names PostgreSQL) with the shipped bundles the flow tests import and
two departments; after one event drained (what a process compiles and reads once),
``--events`` ``patient.upserted`` events (one per patient, plus a second event
for every 4th patient: an order per patient to keep) stored through ``flows.ingest`` with
``defer=True`` as ``POST /api/v1/events`` does, the dispatcher stopped; then ``drain()`` timed
with ``time.process_time()`` (this process's CPU: SQLite's work included, PostgreSQL's server
not) and ``time.perf_counter()``, and its SQL statements counted. Prints one JSON line.

Comparison (default): ``--peer PYTHON`` is another checkout's interpreter (e.g.
``/work/main/.venv/bin/python``); both run ``--rounds`` times alternately, each in a fresh
process, and the medians and their ratio are printed::

    .venv/bin/python bench/dispatch_drain.py --peer /work/main/.venv/bin/python --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("common", "discharge", "cardiology", "satisfaction", "complaints", "chronic_care",
           "orthopedics")


def run(events: int, apps: Path) -> dict[str, Any]:
    from sqlalchemy import event as sa_event
    from sqlalchemy.engine import make_url

    from careloop.engine import db as dbmod
    from careloop.engine.bundles import import_bundle
    from careloop.engine.db import transaction
    from careloop.engine.dispatcher import drain
    from careloop.engine.domain import Department
    from careloop.engine.migrate import upgrade
    from careloop.engine.models import load_all_models
    from careloop.flows.ingest import ingest

    load_all_models()
    url = os.environ.get("CARELOOP_DATABASE_URL")
    schema = None
    if url and make_url(url).get_backend_name() == "postgresql":
        engine, schema = dbmod.schema_engine(url, "bench_dispatch")
    else:
        folder = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
        engine = dbmod.make_engine(f"sqlite:///{folder / 'b.db'}")
    try:
        upgrade(engine)
        with dbmod.use_engine(engine):
            for name in BUNDLES:
                import_bundle(apps / name, engine=engine)
            with transaction(engine) as session:
                session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "C"}))
            with transaction(engine) as session:  # a first event: what a process reads once
                ingest(session, {"event_id": "warm", "type": "patient.upserted",
                                 "payload": {"patient_id": "W", "mrn": "MW", "name": "测试",
                                             "birth_date": "1950-01-01"}}, defer=True)
            drain(engine)
            stored = 0
            n = 0
            while stored < events:
                with transaction(engine) as session:
                    for _ in range(min(50, events - stored)):
                        patient = f"P{n // 2}" if n % 8 < 2 else f"P{n}"
                        status, body = ingest(session, {
                            "event_id": f"e{n}", "type": "patient.upserted",
                            "payload": {"patient_id": patient, "mrn": f"M{patient}",
                                        "name": "测试", "birth_date": "1950-01-01"}},
                            defer=True)
                        assert status == 200, body
                        n += 1
                        stored += 1
            statements = [0]

            def count(*_args: Any) -> None:
                statements[0] += 1

            sa_event.listen(engine, "before_cursor_execute", count)
            cpu, wall = time.process_time(), time.perf_counter()
            report = drain(engine)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            sa_event.remove(engine, "before_cursor_execute", count)
            assert report.handled == events and report.failed == 0, report
    finally:
        engine.dispose()
        if schema is not None and url:
            dbmod.drop_schema(url, schema)
    return {"events": events, "cpu_ms_per_event": 1000 * cpu / events,
            "wall_ms_per_event": 1000 * wall / events,
            "statements_per_event": statements[0] / events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="one measurement in this process")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--peer", help="the other checkout's python")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run(args.events, ROOT / "app_definitions")))
        return
    pythons = {"this": sys.executable}
    if args.peer:
        pythons["peer"] = args.peer
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in pythons}
    for _ in range(args.rounds):
        for name, python in pythons.items():
            out = subprocess.run([python, __file__, "--run", "--events", str(args.events)],
                                 check=True, capture_output=True, text=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            print(name, results[name][-1], flush=True)
    medians = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
               for name, rows in results.items()}
    print(json.dumps(medians))
    if "peer" in medians:
        print(f"cpu per event, this / peer: "
              f"{medians['this']['cpu_ms_per_event'] / medians['peer']['cpu_ms_per_event']:.2f}")


if __name__ == "__main__":
    main()
