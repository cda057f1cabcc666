"""Regional volume (issue 18, point 5): staff pages on a database of a region's size.

Against a database filled by the benchmark generator (``careloop demo seed --scale``), through
the real app (FastAPI's TestClient, signed in as demo staff), times in the same run:

* inbox *mine* (a ward nurse: her own and her ward's queue), *department* (the cardiology head
  nurse: the department and its wards), *overdue* (the PX office, hospital-wide)
* patient search by part of a name and by part of an MRN (the PX office, every patient)
* the patient 360 page of one cardiology patient (the ward nurse)
* the overview dashboard's JSON (the PX office): its first, uncached request, then repeated

and, for each, a bare hand-written SQL query (psycopg/sqlite3 cursor, no app) reading the same
rows: p50/p95 over ``--requests`` requests, printed as ratios (``--json`` for one line).

    python bench/scale.py [--database URL] [--patients N] [--requests R] [--json] [--quick]

Without ``--database``: a temporary SQLite file seeded at ``--patients`` (20,000 by default;
ten submissions and one open task per patient). A database that already holds generated patients
is measured as it is (``careloop demo seed --scale --database URL`` first for 1M); an empty one
is seeded first. ``--quick``: 2,000 patients on SQLite, 5 requests (the suite's smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = "service_quality_overview"


def _p(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def _measure(fn: Callable[[], object], requests: int) -> dict[str, float]:
    fn()  # warm
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"p50": _p(times, 0.5), "p95": _p(times, 0.95),
            "mean": statistics.fmean(times) * 1000}


def _signed_in(app: Any, username: str) -> Any:
    from fastapi.testclient import TestClient

    from careloop.web.demo import DEMO_PASSWORD

    client = TestClient(app)
    page = client.get("/login").text
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post("/login", data={"username": username, "password": DEMO_PASSWORD,
                                           "csrf_token": token}, follow_redirects=False)
    if response.status_code not in (302, 303):
        raise RuntimeError(f"{username} could not sign in: {response.status_code}")
    return client


def _get(client: Any, path: str) -> Callable[[], object]:
    def run() -> object:
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code}")
        return response
    return run


def _bare(raw: Any, dialect: str, sql: str | list[str],
          params: tuple[Any, ...] = ()) -> Callable[[], object]:
    """A hand-written query (or several) on the driver's cursor, rows fetched."""
    queries = [sql] if isinstance(sql, str) else sql

    def run() -> object:
        cur = raw.cursor()
        out = []
        for query in queries:
            q = query if dialect == "postgresql" else query.replace("%s", "?")
            cur.execute(q, params[:q.count("%s") + q.count("?")])
            out.append(cur.fetchall())
        raw.commit()
        return out
    return run


def hand_queries(dialect: str, users: dict[str, int], now: Any) -> dict[str, tuple[Any, ...]]:
    """The same rows each page reads, written by hand: the page's list (and its three counts
    for the inbox, as the page shows them)."""
    ts = now if dialect == "postgresql" else f"{now:%Y-%m-%d %H:%M:%S.%f}"
    open_ = "t.status IN ('open', 'in_progress')"
    nurse = users["cardio_w1_nurse"]
    views = {
        "inbox_mine": (f"{open_} AND (t.assignee_user_id = {nurse} OR (t.assignee_user_id IS "
                       "NULL AND t.assignee_role = 'nurse' AND t.department_id = 'cardio_w1'))"),
        "inbox_department": (f"{open_} AND t.department_id IN "
                             "('cardiology', 'cardio_w1', 'cardio_w2')"),
        "inbox_overdue": f"{open_} AND t.due_at < %s"}

    def inbox(where: str) -> list[str]:
        return [("SELECT t.*, p.name, p.mrn FROM tasks t LEFT JOIN patients p ON p.id = "
                 f"t.patient_id WHERE {where} ORDER BY t.due_at, t.id LIMIT 200"),
                f"SELECT count(*) FROM tasks t WHERE {where}"]

    hand_sql = _bench_reports().hand_sql

    return {
        "inbox_mine": (inbox(views["inbox_mine"]), ()),
        "inbox_department": (inbox(views["inbox_department"]), ()),
        "inbox_overdue": (inbox(views["inbox_overdue"]), (ts,)),
        "search_name": ("SELECT * FROM patients WHERE name LIKE %s ORDER BY mrn LIMIT 50",
                        ("%王伟%",)),
        "search_mrn": ("SELECT * FROM patients WHERE mrn LIKE %s ORDER BY mrn LIMIT 50",
                       ("%SM0000123%",)),
        "patient_360": ([
            "SELECT * FROM patients WHERE id = %s",
            "SELECT * FROM encounters WHERE patient_id = %s ORDER BY admitted_at DESC",
            "SELECT * FROM submissions WHERE patient_id = %s ORDER BY submitted_at DESC",
            "SELECT * FROM tasks WHERE patient_id = %s ORDER BY created_at DESC"], ()),
        "dashboard": (hand_sql(dialect), ()),
    }


def _bench_reports() -> Any:
    """``bench/reports.py`` (its hand-written dashboard SQL), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_reports", ROOT / "bench" / "reports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(requests: int, only: tuple[str, ...] = ()) -> dict[str, Any]:
    from sqlalchemy import select

    from careloop.engine.clock import now_utc
    from careloop.engine.db import default_engine, transaction
    from careloop.engine.domain import Encounter, Task, User
    from careloop.web.app import create_app

    engine = default_engine()
    dialect = engine.dialect.name
    with transaction() as session:
        users = {u.username: u.id for u in session.scalars(select(User)).all()}
        patient = session.scalars(select(Encounter.patient_id).where(
            Encounter.ward_id == "cardio_w1").order_by(Encounter.id).limit(1)).one()
    pages = {"inbox_mine": ("cardio_w1_nurse", "/inbox?view=mine"),
             "inbox_department": ("cardiology_head_nurse", "/inbox?view=department"),
             "inbox_overdue": ("px", "/inbox?view=overdue"),
             "search_name": ("px", "/patients?q=王伟"),
             "search_mrn": ("px", "/patients?q=SM0000123"),
             "patient_360": ("cardio_w1_nurse", f"/patients/{patient}"),
             "dashboard": ("px", f"/api/v1/reports/dashboards/{DASHBOARD}")}
    app = create_app()
    clients: dict[str, Any] = {}
    results: dict[str, Any] = {"dialect": dialect, "requests": requests}
    with transaction() as session:
        from sqlalchemy import func

        from careloop.engine.domain import Patient
        from careloop.forms.models import Submission

        results["patients"] = session.scalar(select(func.count()).select_from(Patient))
        results["submissions"] = session.scalar(select(func.count()).select_from(Submission))
        results["open_tasks"] = session.scalar(select(func.count()).select_from(Task).where(
            Task.status.in_(("open", "in_progress"))))
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        hand = hand_queries(dialect, users, now_utc())
        for name, (user, path) in pages.items():
            if only and name not in only:
                continue
            if user not in clients:
                clients[user] = _signed_in(app, user)
            fetch = _get(clients[user], path)
            if name == "dashboard":  # the first request computes; later ones read the cache
                start = time.perf_counter()
                try:
                    fetch()
                except RuntimeError as exc:  # e.g. 503: past the app's database deadline
                    results["dashboard_error"] = str(exc)
                    continue
                results["dashboard_first_ms"] = (time.perf_counter() - start) * 1000
            sql, params = hand[name]
            if name == "patient_360":
                params = (patient,)
            app_times = _measure(fetch, requests)
            bare_times = _measure(_bare(driver, dialect, sql, params), requests)
            results[name] = {"app": app_times, "bare": bare_times,
                             "ratio_p50": app_times["p50"] / max(bare_times["p50"], 1e-6),
                             "ratio_p95": app_times["p95"] / max(bare_times["p95"], 1e-6)}
    finally:
        raw.close()
        for client in clients.values():
            client.close()
    return results


def _prepare(patients: int) -> None:
    """Seed the configured database unless it holds generated patients already."""
    from sqlalchemy import text

    from careloop.engine.db import default_engine
    from careloop.engine.migrate import upgrade
    from careloop.web.scale import PATIENT_PREFIX, seed_scale

    upgrade()
    with default_engine().connect() as conn:
        found = conn.scalar(text("SELECT count(*) FROM patients WHERE id LIKE :p"),
                            {"p": f"{PATIENT_PREFIX}%"})
    if not found:
        seed_scale(patients=patients, submissions=patients * 10, tasks=patients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="a database URL (default: a temporary SQLite file)")
    parser.add_argument("--patients", type=int, default=20_000,
                        help="patients to seed an empty database with")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="2,000 patients, 5 requests")
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    parser.add_argument("--pages", default="", help="comma-separated page names (default: all)")
    args = parser.parse_args()
    patients, requests = (2_000, 5) if args.quick else (args.patients, args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CARELOOP_DATABASE_URL"] = args.database or f"sqlite:///{Path(tmp) / 's.db'}"
        if not args.database:
            os.environ.setdefault("CARELOOP_HOME", tmp)
        started = time.perf_counter()
        _prepare(patients)
        seeded = time.perf_counter() - started
        results = run(requests, tuple(p for p in args.pages.split(",") if p))
        results["prepare_seconds"] = round(seeded, 1)
    results["load_average"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return
    print(f"regional volume on {results['dialect']}: {results['patients']:,} patients, "
          f"{results['submissions']:,} submissions, {results['open_tasks']:,} open tasks; "
          f"{requests} requests each, load average {results['load_average'][0]:.1f}")
    print(f"  {'page':<18} {'app p50':>9} {'app p95':>9} {'SQL p50':>9} {'SQL p95':>9}"
          f" {'×p50':>7} {'×p95':>7}")
    for name, value in results.items():
        if isinstance(value, dict) and "app" in value:
            a, b = value["app"], value["bare"]
            print(f"  {name:<18} {a['p50']:7.1f}ms {a['p95']:7.1f}ms {b['p50']:7.1f}ms "
                  f"{b['p95']:7.1f}ms {value['ratio_p50']:6.1f}× {value['ratio_p95']:6.1f}×")
    if "dashboard_first_ms" in results:
        print(f"  dashboard, first (uncached) request: {results['dashboard_first_ms']:.0f} ms")
    if "dashboard_error" in results:
        print(f"  dashboard: {results['dashboard_error']}")


if __name__ == "__main__":
    sys.exit(main())
